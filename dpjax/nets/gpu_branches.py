"""The program a CUDA GPU compiles, built and run on any backend: for tests and checks on a CPU.

dpjax.nets chooses per platform with `lax.platform_dependent` (on a GPU the U-Net's taps, one-matmul FiLM and
Pallas conv-block kernels; on a CPU the XLA layers). Inside `as_on_cuda()` every such choice takes its CUDA branch
(else its default) and the Pallas kernels run in Pallas' interpreter, so a CPU computes what a GPU would run.
"""
import contextlib
import functools

import jax

from dpjax.nets import conv_block_kernel


def _cuda_branch(*args, cuda=None, default=None, **platforms):
  """lax.platform_dependent's stand-in: the CUDA branch, else the default (the operands are closed over)."""
  del args, platforms
  return (cuda or default)()


@contextlib.contextmanager
def as_on_cuda():
  """Inside: every lax.platform_dependent takes its CUDA branch and the Pallas kernels run interpreted. Caches are
  cleared on entry and exit, so no program traced one way is reused the other way."""
  platform_dependent, epilogue = jax.lax.platform_dependent, conv_block_kernel.conv_block_epilogue
  jax.lax.platform_dependent = _cuda_branch
  conv_block_kernel.conv_block_epilogue = functools.partial(epilogue, interpret=True)
  jax.clear_caches()
  try:
    yield
  finally:
    jax.lax.platform_dependent, conv_block_kernel.conv_block_epilogue = platform_dependent, epilogue
    jax.clear_caches()
