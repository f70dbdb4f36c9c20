r"""How closely a reflow student reproduces its teacher's noise -> chunk map, on the states the student visits.

    python experiments/distill_on_policy/fit_error.py --teacher=runs/TEACHER --student=runs/STUDENT \
      --visited=runs/STUDENT_VISITS/visited_obs.npz [--num_states=2000]

For a sample of visited observation histories and one noise draw each, prints (in pixels, over the executed action
steps n_obs_steps - 1 .. n_obs_steps - 2 + n_action_steps):
  - the student's error against the teacher's deterministic chain from the same noise (its distillation target:
    DDIM-10 with the teacher's distillation spacing, as config.distill of the student's run says), with one and
    two Euler calls;
  - the teacher's spread: the same states, a second noise draw (how far apart two of the teacher's chunks are);
  - the teacher's sensitivity: the chunk's change when the noise moves by 0.1 of its scale in a random direction.
A map that moves far for small changes of the noise is one a one- or two-call student fits less well.
"""
import argparse
import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import dpjax
from dpjax import checkpoint, visited_obs


def _chunks(policy, obs, noise, method, steps):
  """Raw action chunks [N, T, Da] of `policy`'s chain from the given starting `noise`, raw observations `obs`."""
  return np.asarray(dpjax.sample(policy, obs, jax.random.key(0), method=method, num_inference_steps=steps,
                                 noise=noise))


def _executed_error(a, b, spec) -> float:
  """Mean Euclidean distance (pixels) between two chunk sets [N, T, 2] over the executed steps."""
  start = spec.n_obs_steps - 1
  window = slice(start, start + spec.n_action_steps)
  return float(np.linalg.norm(a[:, window] - b[:, window], axis=-1).mean())


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--teacher", required=True)
  parser.add_argument("--student", required=True)
  parser.add_argument("--visited", required=True)
  parser.add_argument("--num_states", type=int, default=2000)
  parser.add_argument("--out", default=None, help="Also write the numbers as JSON here.")
  args = parser.parse_args()
  student = checkpoint.load_policy(args.student)
  distill = json.loads((pathlib.Path(args.student) / "config.json").read_text())["distill"]
  teacher = checkpoint.load_policy(args.teacher)
  spec = dict(sampler="ddim", num_inference_steps=distill["teacher_steps"],
              timestep_spacing=distill["teacher_timestep_spacing"] or teacher.spec.timestep_spacing)
  teacher = teacher.replace(spec=dataclasses.replace(teacher.spec, **spec))
  visited = visited_obs.load(args.visited, student.spec.obs_shapes, student.spec.n_obs_steps)
  rows = np.random.default_rng(0).permutation(len(next(iter(visited.values()))))[:args.num_states]
  obs = {k: v[rows] for k, v in visited.items()}
  shape = (len(rows), student.spec.horizon, student.spec.action_dim)
  keys = jax.random.split(jax.random.key(0), 3)
  noise, other_noise, direction = (jax.random.normal(k, shape) for k in keys)
  direction = direction / jnp.linalg.norm(direction.reshape(len(rows), -1), axis=1)[:, None, None]
  nudged = noise + 0.1 * jnp.sqrt(float(np.prod(shape[1:]))) * direction   # 0.1 of the noise's norm
  target = _chunks(teacher, obs, noise, "ddim", spec["num_inference_steps"])
  result = {
      "states": len(rows),
      "student_euler1_px": _executed_error(_chunks(student, obs, noise, "euler", 1), target, student.spec),
      "student_euler2_px": _executed_error(_chunks(student, obs, noise, "euler", 2), target, student.spec),
      "teacher_spread_px": _executed_error(_chunks(teacher, obs, other_noise, "ddim", spec["num_inference_steps"]),
                                           target, student.spec),
      "teacher_sensitivity_px": _executed_error(_chunks(teacher, obs, nudged, "ddim", spec["num_inference_steps"]),
                                                target, student.spec),
  }
  print(json.dumps(result, indent=2))
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
  main()
