"""Instructions (and the bytes they move, `hlo.bytes_moved`) per iteration of the compiled sampling chain: the
while-loop body of `dpjax.sample`'s optimised HLO, full-size low-dim CNN, random weights (what one denoiser call
costs inside the chain, with everything XLA hoisted or fused around it, the sampler's update and noise included).

    PYTHONPATH=. python experiments/bench/chain_body_kernels.py                # this checkout, DDIM-10, batch 1
    git worktree add /tmp/dpjax_old 2380ac8 && PYTHONPATH=/tmp/dpjax_old python experiments/bench/chain_body_kernels.py
    PYTHONPATH=. .venv-gpu-aot/bin/python experiments/bench/chain_body_kernels.py --target=h100 --sampler=ddpm:100
    PYTHONPATH=. .venv-gpu-aot/bin/python experiments/bench/chain_body_kernels.py --target=h100 --fused_sampling

Session 5, XLA:CPU: 345 at 2380ac8 -> 323 with the conditioning computed before the loop (BUILD_NOTES.md).
`--target=h100|h200` compiles for that GPU without one (`deviceless_gpu.py`, which says what to install), in
bfloat16 (what `auto` picks on a GPU) unless `--compute_dtype` says otherwise.
"""
import argparse

import this_checkout


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  this_checkout.add_target_flags(parser)
  parser.add_argument("--sampler", default="ddim:10", help="method:num_inference_steps")
  parser.add_argument("--batch_size", type=int, default=1)
  parser.add_argument("--variant", default="lowdim")
  parser.add_argument("--fused_sampling", action="store_true",
                      help="U-Net: the Pallas conv-block kernels (config.policy.fused_sampling; a GPU target)")
  args = parser.parse_args()
  sharding = this_checkout.target_sharding(args)
  import jax   # after target_sharding, which sets JAX_PLATFORMS for a GPU target
  import numpy as np

  from dpjax import bench, policy
  from dpjax.data import pusht
  hlo = this_checkout.load("dpjax/hlo.py")

  config = bench.load_config(args.variant)
  config.policy.compute_dtype = this_checkout.compute_dtype(args, sharding)
  if args.fused_sampling:
    config.policy.fused_sampling = True
  method, steps = args.sampler.split(":")
  if method in ("euler", "heun", "ancestral"):
    config.diffusion.objective = "flow"
    config.diffusion.sampler = method
  obs_shapes = pusht.OBS_SHAPES[config.data.obs_type]
  spec = policy.spec_from_config(config, obs_shapes, bench.ACTION_DIM)
  rng = np.random.default_rng(0)
  pol = policy.Policy(params=bench.random_params(spec, rng), normalizer=bench.synthetic_normalizer(obs_shapes, rng),
                      spec=spec)
  obs = bench.synthetic_obs(obs_shapes, (args.batch_size, spec.n_obs_steps), rng)
  key = jax.random.key(0)
  if hasattr(policy, "for_sampling"):   # the weights a controller holds: cast once (session 15), not per chunk
    pol = policy.for_sampling(pol)
  pol, obs, key = this_checkout.place((pol, obs, key), sharding)
  text = policy._sample_batched.lower(pol, obs, key, method, int(steps)).compile().as_text()
  print(f"entry {hlo.kernel_count(text)}")
  for body in hlo.while_bodies(text):
    print(body, hlo.kernel_count(text, body), f"{hlo.bytes_moved(text, body) / 1e6:.0f} MB")


if __name__ == "__main__":
  main()
