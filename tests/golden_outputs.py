"""Golden outputs: a fixed-seed batch through every policy variant and sampler, so a silent numerical change
(a reordered op, a changed default, a new key split) fails a test instead of shifting scores unnoticed.

    python -m tests.golden_outputs      # rewrites tests/golden/policy_outputs.npz after an intended change

The random-weight smoke policies of `tests/smoke.py` are fed one batch of raw observations; for each (variant,
sampler) the file holds the sampled actions and the training loss (evaluation mode, fixed key).
"""
import pathlib

import jax
import numpy as np

import dpjax
from dpjax import policy as policy_lib
from tests import smoke

GOLDEN = pathlib.Path(__file__).resolve().parent / "golden" / "policy_outputs.npz"
LOWDIM = (("low_dim", (20,)),)
IMAGE = (("agent_pos", (2,)), ("image", (96, 96, 3)))
# (variant, observation shapes, [(sampler, steps), ...]).
# Every network and sampler once; each extra (variant, sampler) costs a compile (~5-20 s on the 2-core CI).
CASES = [
    ("smoke", LOWDIM, [("ddpm", 10), ("ddim", 5)]),
    ("smoke,transformer", LOWDIM, [("ddim", 5)]),
    ("smoke,image", IMAGE, [("ddim", 5)]),
    ("smoke,flow", LOWDIM, [("euler", 3), ("heun", 2)]),
]


def outputs() -> dict[str, np.ndarray]:
  """{"<variant>/<sampler><steps>": actions [2, T, 2], "<variant>/loss": scalar} for every case."""
  out = {}
  for variant, obs_shapes, samplers in CASES:
    policy = smoke.random_policy(variant, obs_shapes)
    batch = smoke.random_batch(policy.spec, batch_size=2, seed=1234)
    loss = policy_lib.loss_fn(policy.params, policy.spec, policy.normalizer, batch, jax.random.key(7), False)
    out[f"{variant}/loss"] = np.asarray(loss)
    for method, steps in samplers:
      actions = dpjax.sample(policy, batch["obs"], jax.random.key(11), method=method, num_inference_steps=steps)
      out[f"{variant}/{method}{steps}"] = np.asarray(actions)
  return out


if __name__ == "__main__":
  GOLDEN.parent.mkdir(exist_ok=True)
  np.savez(GOLDEN, **outputs())
  print(f"wrote {GOLDEN}")
