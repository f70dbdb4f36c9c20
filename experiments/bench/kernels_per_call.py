"""Kernels per denoiser call (top-level instructions of XLA's optimised HLO) for the dpjax checkout on sys.path.

    PYTHONPATH=. .venv/bin/python experiments/bench/kernels_per_call.py              # this checkout, local backend
    git worktree add /tmp/dpjax_old e46190f && \\
      PYTHONPATH=/tmp/dpjax_old .venv/bin/python experiments/bench/kernels_per_call.py   # an older one
    PYTHONPATH=. .venv-gpu-aot/bin/python experiments/bench/kernels_per_call.py --target=h100   # XLA:GPU, no GPU

Full-size Push-T variants, random weights, batch 1 and 50. The count is `dpjax/hlo.py`'s, loaded from this checkout
by path. `<variant>_b<B>` is the whole call (`PolicyNet.denoise`: step embedding, conditioning and network) on
float32 weights; where the checkout splits the call (`PolicyNet.denoise_conditioned`, what its sampling chain runs
per step once every step's conditioning is computed before the loop), `<variant>_b<B>_in_chain` counts that call
too, on the weights the chain runs (`policy.inference_params` where the checkout has it: cast to the compute dtype),
and `<variant>_b<B>_in_chain_fused` with `fused_sampling` (U-Nets, where the checkout has it: session 15).
`--target=h100|h200` compiles for that GPU without one (`deviceless_gpu.py`, which says what to install) in
`--compute_dtype` (default bfloat16, what `auto` picks on a GPU); the local backend uses the config's `auto`.
"""
import argparse
import dataclasses
import json
import pathlib
import sys

import this_checkout

OBS = {"lowdim": {"low_dim": (20,)}, "image": {"image": (96, 96, 3), "agent_pos": (2,)}}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  this_checkout.add_target_flags(parser)
  parser.add_argument("--variants", default="lowdim,image,transformer")
  args = parser.parse_args()
  sharding = this_checkout.target_sharding(args)
  import jax   # after target_sharding, which sets JAX_PLATFORMS for a GPU target
  import numpy as np

  import dpjax
  from dpjax import policy
  hlo = this_checkout.load("dpjax/hlo.py")
  compute_dtype = this_checkout.compute_dtype(args, sharding)

  def count(fn, *fn_args) -> int:
    return hlo.kernel_count(jax.jit(fn).lower(*this_checkout.place(fn_args, sharding)).compile().as_text())

  root = pathlib.Path(dpjax.__file__).resolve().parents[1]
  configs = this_checkout.load(root / "configs" / "pusht.py")
  out = {"dpjax": str(root), "target": args.target, "compute_dtype": compute_dtype}
  for variant in args.variants.split(","):
    config = configs.get_config(variant)
    config.policy.compute_dtype = compute_dtype
    obs_shapes = OBS[config.data.obs_type]
    spec = policy.spec_from_config(config, obs_shapes, 2)
    params = jax.eval_shape(lambda key: policy.init_params(spec, key), jax.random.key(0))
    chain_params = jax.eval_shape(lambda p: policy.inference_params(p, spec), params) if hasattr(
        policy, "inference_params") else params
    net = policy.PolicyNet(spec)
    for batch in (1, 50):
      obs = {k: jax.ShapeDtypeStruct(v.shape, np.float32) for k, v in policy.example_obs(spec, batch).items()}
      features = jax.eval_shape(lambda p, o: net.apply({"params": p}, o, False, method=policy.PolicyNet.encode),
                                params, obs)
      x = jax.ShapeDtypeStruct((batch, spec.horizon, spec.action_dim), np.float32)
      k = jax.ShapeDtypeStruct((batch,), np.int32)
      name = f"{variant}_b{batch}"
      out[name] = count(lambda p, x, k, f: net.apply({"params": p}, x, k, f, False, method=policy.PolicyNet.denoise),
                        params, x, k, features)
      print(name, out[name], flush=True)

      def in_chain(chain_net) -> int:   # the chain's per-step call of `chain_net`, on its step's conditioning
        conditioning = jax.eval_shape(
            lambda p, k, f: chain_net.apply({"params": p}, k, f, method=policy.PolicyNet.condition),
            chain_params, k, features)
        return count(lambda p, x, c: chain_net.apply({"params": p}, x, c, method=policy.PolicyNet.denoise_conditioned),
                     chain_params, x, conditioning)

      if hasattr(policy.PolicyNet, "denoise_conditioned"):
        out[name + "_in_chain"] = in_chain(net)
        print(name, "in chain", out[name + "_in_chain"], flush=True)
      if getattr(spec, "fused_sampling", None) is False and spec.denoiser == "unet1d":
        out[name + "_in_chain_fused"] = in_chain(policy.PolicyNet(dataclasses.replace(spec, fused_sampling=True)))
        print(name, "in chain, fused_sampling", out[name + "_in_chain_fused"], flush=True)
  json.dump(out, sys.stdout, indent=2)
  print()


if __name__ == "__main__":
  main()
