"""Instructions per iteration of the compiled sampling chain: the while-loop body of `dpjax.sample`'s optimised HLO,
full-size low-dim CNN, DDIM-10, batch 1, random weights (what one denoiser call costs inside the chain, with
everything XLA hoisted or fused around it).

    PYTHONPATH=. python experiments/bench/chain_body_kernels.py                # this checkout
    git worktree add /tmp/dpjax_old 2380ac8 && PYTHONPATH=/tmp/dpjax_old python experiments/bench/chain_body_kernels.py

Session 5, XLA:CPU: 345 at 2380ac8 -> 323 with the conditioning computed before the loop (BUILD_NOTES.md).
"""
import importlib.util
import pathlib

import jax
import numpy as np

from dpjax import bench, policy

# This checkout's counter, loaded by path: the measured checkout may predate `kernel_count(text, computation)`.
_hlo_spec = importlib.util.spec_from_file_location(
    "hlo", pathlib.Path(__file__).resolve().parents[2] / "dpjax" / "hlo.py")
hlo = importlib.util.module_from_spec(_hlo_spec)
_hlo_spec.loader.exec_module(hlo)


def main():
  obs_shapes = {"low_dim": (20,)}
  spec = policy.spec_from_config(bench.load_config("lowdim"), obs_shapes, bench.ACTION_DIM)
  rng = np.random.default_rng(0)
  pol = policy.Policy(params=jax.device_put(bench.random_params(spec, rng)),
                      normalizer=jax.device_put(bench.synthetic_normalizer(obs_shapes, rng)), spec=spec)
  obs = bench.synthetic_obs(obs_shapes, (1, spec.n_obs_steps), rng)
  text = policy._sample_batched.lower(pol, obs, jax.random.key(0), "ddim", 10).compile().as_text()
  for body in hlo.while_bodies(text):
    print(body, hlo.kernel_count(text, body))


if __name__ == "__main__":
  main()
