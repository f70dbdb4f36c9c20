"""Kernels per denoiser call (top-level instructions of XLA's optimised HLO) for the dpjax checkout on sys.path.

    PYTHONPATH=. .venv/bin/python experiments/bench/kernels_per_call.py              # this checkout
    git worktree add /tmp/dpjax_old e46190f && \\
      PYTHONPATH=/tmp/dpjax_old .venv/bin/python experiments/bench/kernels_per_call.py   # an older one

Full-size Push-T variants, random weights, batch 1 and 50, compiled for the local backend. The count is
`dpjax/hlo.py`'s, loaded from this checkout by path. `<variant>_b<B>` is the whole call (`PolicyNet.denoise`:
step embedding, conditioning and network); where the checkout splits the call (`PolicyNet.denoise_conditioned`,
what its sampling chain runs per step once every step's conditioning is computed before the loop),
`<variant>_b<B>_in_chain` counts that call too. float32 weights (the CPU's compute dtype).
"""
import importlib.util
import json
import pathlib
import sys

import jax
import numpy as np

import dpjax
from dpjax import policy

OBS = {"lowdim": {"low_dim": (20,)}, "image": {"image": (96, 96, 3), "agent_pos": (2,)}}
# This checkout's counter, loaded by path: the measured checkout may predate it.
_hlo_spec = importlib.util.spec_from_file_location(
    "hlo", pathlib.Path(__file__).resolve().parents[2] / "dpjax" / "hlo.py")
hlo = importlib.util.module_from_spec(_hlo_spec)
_hlo_spec.loader.exec_module(hlo)


def main():
  root = pathlib.Path(dpjax.__file__).resolve().parents[1]
  module_spec = importlib.util.spec_from_file_location("pusht_config", root / "configs" / "pusht.py")
  configs = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(configs)
  out = {"dpjax": str(root), "backend": jax.default_backend()}
  for variant in ("lowdim", "image", "transformer"):
    config = configs.get_config(variant)
    spec = policy.spec_from_config(config, OBS[config.data.obs_type], 2)
    params = jax.eval_shape(lambda key: policy.init_params(spec, key), jax.random.key(0))
    net = policy.PolicyNet(spec)
    for batch in (1, 50):
      obs = {k: jax.ShapeDtypeStruct(v.shape, np.float32) for k, v in policy.example_obs(spec, batch).items()}
      features = jax.eval_shape(lambda p, o: net.apply({"params": p}, o, False, method=policy.PolicyNet.encode),
                                params, obs)
      x = jax.ShapeDtypeStruct((batch, spec.horizon, spec.action_dim), np.float32)
      k = jax.ShapeDtypeStruct((batch,), np.int32)
      call = jax.jit(lambda p, x, k, f: net.apply({"params": p}, x, k, f, False, method=policy.PolicyNet.denoise))
      out[f"{variant}_b{batch}"] = hlo.kernel_count(call.lower(params, x, k, features).compile().as_text())
      print(variant, batch, out[f"{variant}_b{batch}"], flush=True)
      if hasattr(policy.PolicyNet, "denoise_conditioned"):
        conditioning = jax.eval_shape(lambda p, k, f: net.apply({"params": p}, k, f, method=policy.PolicyNet.condition),
                                      params, k, features)
        in_chain = jax.jit(lambda p, x, c: net.apply({"params": p}, x, c, method=policy.PolicyNet.denoise_conditioned))
        name = f"{variant}_b{batch}_in_chain"
        out[name] = hlo.kernel_count(in_chain.lower(params, x, conditioning).compile().as_text())
        print(variant, batch, "in chain", out[name], flush=True)
  json.dump(out, sys.stdout, indent=2)
  print()


if __name__ == "__main__":
  main()
