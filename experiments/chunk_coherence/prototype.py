r"""Prototype (not in dpjax): pick each re-plan's chunk among N samples by backward coherence with the chunk before.

Bidirectional decoding's backward half (Liu et al. 2024, "Bidirectional Decoding: Improving Action Chunking via
Closed-Loop Resampling"): at every re-plan the policy samples N chunks per environment and keeps the one whose first
actions stay closest (squared distance, raw action units) to the actions the previous chunk had planned for the same
control steps and did not execute; the episode's first plan keeps the first sample. N = 1 is the plain controller,
bit for bit. Runs `python -m dpjax.rollout` with the controller's planning replaced:

    COHERENCE_SAMPLES=8 python experiments/chunk_coherence/prototype.py --checkpoint=runs/quickstart --step=4000 \
      --policy_seed=0 --num_videos=0 --out=experiments/chunk_coherence/n8_step4000_seed0
"""
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from dpjax import control, policy as policy_lib, rollout  # noqa: E402

SAMPLES = int(os.environ.get("COHERENCE_SAMPLES", "1"))


def coherent_choice(chunks: np.ndarray, previous: np.ndarray | None, start: int, executed: int) -> np.ndarray:
  """chunks [E, N, H, A], previous [E, H, A] or None -> index [E] of the chunk whose actions at [start, H -
  executed) match previous' at [start + executed, H), the steps the previous chunk planned and did not run."""
  if previous is None or chunks.shape[1] == 1:
    return np.zeros(chunks.shape[0], int)
  overlap = chunks.shape[2] - start - executed
  head = chunks[:, :, start:start + overlap]
  tail = previous[:, None, start + executed:]
  return ((head - tail) ** 2).sum(axis=(2, 3)).argmin(axis=1)


def _plan(self, skip):
  if skip:
    raise ValueError("the prototype handles latency_steps=0 only")
  self._key, sample_key = jax.random.split(self._key)
  self.last_plan_obs = self._history.stacked()
  many = {k: np.repeat(v, SAMPLES, axis=0) for k, v in self.last_plan_obs.items()}
  chunk = np.asarray(policy_lib.sample(self.policy, many, sample_key, method=self._method,
                                       num_inference_steps=self._num_inference_steps))
  envs = chunk.shape[0] // SAMPLES
  chunks = chunk.reshape(envs, SAMPLES, *chunk.shape[1:])
  spec = self.policy.spec
  previous = getattr(self, "_previous_chunk", None)
  pick = coherent_choice(chunks, previous, spec.n_obs_steps - 1, spec.n_action_steps)
  chosen = chunks[np.arange(envs), pick]
  self._previous_chunk = chosen
  self.num_plans += 1
  chosen = np.asarray(policy_lib.action_steps_to_execute(spec, chosen, 0))
  return [chosen[:, t] for t in range(chosen.shape[1])]


_reset = control.RecedingHorizonController.reset


def _reset_too(self):
  _reset(self)
  self._previous_chunk = None


control.RecedingHorizonController._plan = _plan
control.RecedingHorizonController.reset = _reset_too

if __name__ == "__main__":
  from absl import app
  app.run(rollout.main)
