"""Matmuls whose operands are rounded to bfloat16 and whose products and results stay float32, in the backward pass
too: what `config.policy.compute_dtype="bfloat16_matmuls"` runs every denoiser matmul as (the U-Net's convolutions
are matmuls, `unet1d.conv1d_im2col`).

XLA:CPU multiplies bfloat16 operands into a float32 result on the CPU's bfloat16 units (AMX, AVX512-BF16: ~3.5x its
float32 rate on a Sapphire Rapids core), but emulates bfloat16 elementwise ops and bfloat16-result matmuls, which
makes the plain "bfloat16" compute dtype (every layer in bfloat16) slower than float32 on a CPU. So this form keeps
every activation float32 and rounds only each matmul's two operands; JAX's own transpose of such a matmul would
multiply the float32 cotangent by the bfloat16 operand, a float32 matmul, so the gradient's two matmuls round the
cotangent too (`_rounded_matmul`'s backward). BUILD_NOTES.md, "Session 26".
"""
import functools
import math

import jax
import jax.numpy as jnp


def matmul(x: jax.Array, w: jax.Array, operand_dtype=None) -> jax.Array:
  """x [..., K] @ w [K, N] -> [..., N]. operand_dtype None: `x @ w` as it is; else both operands rounded to
  operand_dtype, the products accumulated and returned in float32, forward and backward."""
  if operand_dtype is None:
    return x @ w
  return _rounded_matmul(x, w, jnp.dtype(operand_dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _rounded_matmul(x: jax.Array, w: jax.Array, dtype) -> jax.Array:
  return jnp.matmul(x.astype(dtype), w.astype(dtype), preferred_element_type=jnp.float32)


def _rounded_matmul_forward(x, w, dtype):
  return _rounded_matmul(x, w, dtype), (x, w)


def _rounded_matmul_backward(dtype, residuals, cotangent):
  """dx = g w^T, dw = x^T g, with g, x and w rounded to `dtype` and float32 products; each returned in its
  primal's dtype."""
  x, w = residuals
  g = cotangent.astype(dtype)
  dx = jnp.matmul(g, w.astype(dtype).T, preferred_element_type=jnp.float32)
  dw = jnp.matmul(x.astype(dtype).reshape(-1, x.shape[-1]).T, g.reshape(-1, g.shape[-1]),
                  preferred_element_type=jnp.float32)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_rounded_matmul.defvjp(_rounded_matmul_forward, _rounded_matmul_backward)


def dot_general(operand_dtype=None):
  """For flax's `nn.Dense(dot_general=...)` and `DenseGeneral` (attention's `qkv_dot_general`, `out_dot_general`):
  None (flax's own `lax.dot_general`) if operand_dtype is None, else a dot_general that contracts the input's
  trailing axes with the kernel's leading ones (what those layers ask for) through `matmul`."""
  if operand_dtype is None:
    return None

  def rounded_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **unused):
    del precision, preferred_element_type, unused
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    n = len(lhs_contract)
    if (lhs_batch or rhs_batch or tuple(lhs_contract) != tuple(range(lhs.ndim - n, lhs.ndim))
        or tuple(rhs_contract) != tuple(range(n))):
      raise NotImplementedError(f"bfloat16_matmuls handles a Dense layer's contraction, not {dimension_numbers}.")
    depth = math.prod(lhs.shape[lhs.ndim - n:])
    out = matmul(lhs.reshape(*lhs.shape[:lhs.ndim - n], depth), rhs.reshape(depth, -1), operand_dtype)
    return out.reshape(*lhs.shape[:lhs.ndim - n], *rhs.shape[n:])

  return rounded_dot_general
