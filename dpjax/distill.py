"""Few-step students by reflow distillation: a flow policy trained on a frozen teacher's (noise, chunk) pairs.

    python -m dpjax.train --config=configs/pusht.py:flow --config.distill.teacher=runs/TEACHER \
      --config.diffusion.num_inference_steps=1 --workdir=runs/STUDENT

Each training batch runs the teacher's deterministic chain (DDIM with eta = 0 for a DDPM teacher, Euler or Heun
for a flow teacher) from fresh noise on the batch's observations; the student regresses the straight path between
that noise and the teacher's chunk (`policy.loss_fn` with a `policy.Distillation`). Because the teacher's map from
noise to chunk is deterministic, the student learns which mode each noise goes to instead of averaging modes, and
one Euler step from t = 1 lands on the teacher's chunk. Why reflow over consistency distillation: BUILD_NOTES.md.

The student run is an ordinary run: it checkpoints, resumes (the teacher is re-loaded from the checkpoint step its
config.json records, so a teacher that trained on meanwhile does not change the student's) and evaluates with
`python -m dpjax.rollout`; its normaliser is the teacher's.

On-policy distillation: `config.distill.visited_obs` names files of observation histories a policy (usually an
earlier student) planned from in its own rollouts (`python -m dpjax.rollout --record_obs`, `dpjax.visited_obs`);
`config.distill.visited_fraction` of each training batch then takes its observations from them, so the teacher also
labels the states the student reaches in closed loop.
"""
import dataclasses

import jax
import numpy as np

from dpjax import checkpoint, policy, visited_obs
from dpjax.data import normalizer as normalizer_lib
from dpjax.diffusion import sampler, schedules

DETERMINISTIC_SAMPLERS = ("ddim", "euler", "heun")
# Spec fields a student must share with its teacher: the same observations in, the same chunks out.
SHARED_FIELDS = ("horizon", "n_obs_steps", "n_action_steps", "action_dim", "obs_shapes")


def load_teacher(distill_config, student_spec: policy.PolicySpec) -> tuple[policy.Distillation, int]:
  """(the teacher named by config.distill (EMA weights), set to sample with its deterministic distillation chain;
  the checkpoint step it came from: config.distill.teacher_step, or 0 for the newest intact one)."""
  d = distill_config
  if student_spec.objective != "flow":
    raise ValueError("config.distill.teacher is set but config.diffusion.objective is "
                     f"{student_spec.objective!r}; a reflow student is a flow policy: use configs/pusht.py:flow.")
  if not 0.0 <= d.fraction_at_noise <= 1.0:
    raise ValueError(f"config.distill.fraction_at_noise={d.fraction_at_noise} must be in [0, 1].")
  obs_noise = float(d.obs_noise)
  if not obs_noise >= 0.0:
    raise ValueError(f"config.distill.obs_noise={obs_noise} must be >= 0 (a standard deviation in normalised "
                     "units; 0 turns the perturbation off).")
  if obs_noise and all(normalizer_lib.is_image(tuple(s)) for _, s in student_spec.obs_shapes):
    raise ValueError(f"config.distill.obs_noise={obs_noise} perturbs low-dim observations and this policy has "
                     "none; set it to 0.")
  visited, visited_fraction = None, 0.0
  if d.visited_obs:
    visited_fraction = float(d.visited_fraction)
    if not 0.0 < visited_fraction <= 1.0:
      raise ValueError(f"config.distill.visited_fraction={d.visited_fraction} must be in (0, 1]: the share of each "
                       "batch whose observations come from config.distill.visited_obs.")
    visited = visited_obs.load(d.visited_obs, student_spec.obs_shapes, student_spec.n_obs_steps)
  teacher, teacher_step = checkpoint.load_policy_and_step(d.teacher, step=d.teacher_step or None)
  method = d.teacher_sampler or ("ddim" if teacher.spec.objective == "ddpm" else "euler")
  if method not in DETERMINISTIC_SAMPLERS:
    raise ValueError(f"config.distill.teacher_sampler={method!r} is not deterministic; use one of "
                     f"{DETERMINISTIC_SAMPLERS} (ddim for a ddpm teacher, euler or heun for a flow teacher).")
  sampler.check_method(teacher.spec.objective, method)
  sampler.check_num_inference_steps(teacher.spec.objective, teacher.spec.num_diffusion_steps, d.teacher_steps,
                                    "config.distill.teacher_steps")
  mismatched = [f for f in SHARED_FIELDS if getattr(teacher.spec, f) != getattr(student_spec, f)]
  if mismatched:
    raise ValueError(f"The teacher in {d.teacher} differs from the student in "
                     + ", ".join(f"{f} ({getattr(teacher.spec, f)} vs {getattr(student_spec, f)})" for f in mismatched)
                     + "; give the student the teacher's horizon, observation and action settings.")
  spacing = d.teacher_timestep_spacing or teacher.spec.timestep_spacing
  if spacing not in schedules.TIMESTEP_SPACINGS:
    raise ValueError(f"config.distill.teacher_timestep_spacing={spacing!r} is not one of "
                     f"{schedules.TIMESTEP_SPACINGS} (or empty: the teacher's own).")
  spec = dataclasses.replace(teacher.spec, sampler=method, num_inference_steps=int(d.teacher_steps),
                             timestep_spacing=spacing)
  distillation = policy.Distillation(teacher=teacher.replace(spec=spec), fraction_at_noise=float(d.fraction_at_noise),
                                     obs_noise=obs_noise, visited_obs=visited, visited_fraction=visited_fraction)
  return distillation, teacher_step


def initial_params(distillation: policy.Distillation, params) -> tuple[object, bool]:
  """(the teacher's weights, True) when the student's network has the same parameter shapes, else (params, False).

  A flow student starting from a DDPM teacher re-learns what its output means, but keeps the teacher's
  observation features and trunk, which is most of the work.
  """
  teacher_params = distillation.teacher.params
  if jax.tree.structure(teacher_params) != jax.tree.structure(params):
    return params, False
  if any(a.shape != b.shape for a, b in zip(jax.tree.leaves(teacher_params), jax.tree.leaves(params))):
    return params, False
  return jax.tree.map(np.asarray, teacher_params), True
