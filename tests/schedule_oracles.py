"""Textbook DDPM tables (Ho et al. 2020) computed from a schedule's betas: the oracles the step tests compare
dpjax's diffusers-style steps against. dpjax itself needs only the cumulative products."""
import numpy as np


def tables(schedule) -> dict[str, np.ndarray]:
  """Per-step [K] tables of `schedule` (a `NoiseSchedule`), float64."""
  betas = np.asarray(schedule.betas, np.float64)
  alphas = 1.0 - betas
  abar = np.cumprod(alphas)
  abar_prev = np.append(1.0, abar[:-1])
  return {
      "alphas": alphas,
      "alphas_cumprod_prev": abar_prev,
      "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / abar),
      "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / abar - 1.0),
      # "fixed_small" variance of q(x_{k-1} | x_k, x_0); its mean is coef1 * x_0 + coef2 * x_k.
      "posterior_variance": betas * (1.0 - abar_prev) / (1.0 - abar),
      "posterior_mean_coef1": betas * np.sqrt(abar_prev) / (1.0 - abar),
      "posterior_mean_coef2": (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
  }
