"""Visited observations: the raw observation histories a policy planned from in its own rollouts.

    python -m dpjax.rollout --checkpoint=runs/STUDENT --seed_start=0 --num_episodes=100 --record_obs \
      --out=runs/STUDENT/visited                          # writes runs/STUDENT/visited/visited_obs.npz
    python -m dpjax.train --config=configs/pusht.py:flow --config.distill.teacher=runs/TEACHER \
      --config.distill.visited_obs=runs/STUDENT/visited/visited_obs.npz ...   # on-policy distillation

A reflow student learns its teacher's map on the demonstrated states; in closed loop it drifts to states the
demonstrations never show, where nothing taught it the teacher's answer. Recording where a student goes and
letting the teacher label those states too (DAgger, Ross et al. 2011, with the teacher as the expert) trains the
student where it acts. One file: `obs/KEY` [N, n_obs_steps, ...] raw values (images uint8), `seed` [N] the
episode's seed, `control_step` [N] the control step at which the policy planned.
"""
import io
import pathlib
from typing import Mapping, Sequence

import numpy as np

from dpjax import files

_OBS_PREFIX = "obs/"


def save(path, obs: Mapping[str, np.ndarray], seeds: np.ndarray, control_steps: np.ndarray) -> pathlib.Path:
  """Writes one file of N histories (obs {key: [N, To, ...]}, seeds [N], control_steps [N]) atomically."""
  n = len(seeds)
  if len(control_steps) != n or any(len(v) != n for v in obs.values()):
    raise ValueError(f"visited_obs.save: {n} seeds but {len(control_steps)} control steps and observation rows "
                     f"{ {k: len(v) for k, v in obs.items()} }; give one of each per history.")
  arrays = {_OBS_PREFIX + k: np.asarray(v) for k, v in obs.items()}
  arrays.update(seed=np.asarray(seeds, np.int64), control_step=np.asarray(control_steps, np.int64))
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  return files.write_bytes_atomic(path, buffer.getvalue())


def load(paths: str | Sequence[str], obs_shapes, n_obs_steps: int) -> dict[str, np.ndarray]:
  """The histories of one or more files (a comma-separated string or a list), concatenated: {key: [N, To, ...]},
  checked against a policy's observations (obs_shapes: ((key, shape), ...)) and history length."""
  if isinstance(paths, str):
    paths = [p for p in paths.split(",") if p.strip()]
  if not paths:
    raise ValueError("No visited-observation files given; name one or more visited_obs.npz files "
                     "(python -m dpjax.rollout --record_obs writes them).")
  expected = {k: (n_obs_steps,) + tuple(s) for k, s in obs_shapes}
  parts = []
  for path in paths:
    path = pathlib.Path(path.strip())
    if not path.is_file():
      raise ValueError(f"Visited observations {path} do not exist; record them with python -m dpjax.rollout "
                       "--record_obs (it writes OUT/visited_obs.npz).")
    with np.load(path) as f:
      obs = {k[len(_OBS_PREFIX):]: f[k] for k in f.files if k.startswith(_OBS_PREFIX)}
    shapes = {k: v.shape[1:] for k, v in obs.items()}
    if shapes != expected:
      raise ValueError(f"Visited observations {path} have histories {shapes}; this policy takes {expected} "
                       "(record them with a policy of the same observations and n_obs_steps).")
    parts.append(obs)
  visited = {k: np.concatenate([p[k] for p in parts]) for k in expected}
  if not len(next(iter(visited.values()))):
    raise ValueError(f"Visited observations {', '.join(map(str, paths))} hold no histories; record a rollout "
                     "with at least one episode.")
  return visited
