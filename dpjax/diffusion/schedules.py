"""Noise schedules: every per-step constant of the forward process, built once.

The constants are computed in float64 NumPy and stored as float32 jnp arrays, so the
sampler and the loss only ever gather from precomputed tables (no recomputation inside
`lax.scan`). Formulas follow HF diffusers' `DDPMScheduler`, which the original Diffusion
Policy uses.
"""
import flax
import jax.numpy as jnp
import numpy as np

SCHEDULE_KINDS = ("squaredcos_cap_v2", "linear")

# diffusers caps cosine betas below 1 so that alpha_t never reaches 0 (x_t would carry no signal).
_COSINE_MAX_BETA = 0.999
_COSINE_OFFSET = 0.008


@flax.struct.dataclass
class NoiseSchedule:
  """Per-step constants of a K-step forward process that training and the samplers read; each array is [K].

  Index k in 0..K-1 is the diffusion step (k = 0 is the least noisy), as in diffusers: x_k = sqrt(abar_k) x_0 +
  sqrt(1 - abar_k) eps. The textbook posterior tables are test oracles (tests/schedule_oracles.py).
  """
  betas: jnp.ndarray
  alphas_cumprod: jnp.ndarray
  sqrt_alphas_cumprod: jnp.ndarray
  sqrt_one_minus_alphas_cumprod: jnp.ndarray
  # Static: the step count fixes array lengths and scan lengths, so it must be a Python int.
  num_steps: int = flax.struct.field(pytree_node=False, default=0)
  kind: str = flax.struct.field(pytree_node=False, default="")


def cosine_alpha_bar(t):
  """abar(t) = cos((t + 0.008) / 1.008 * pi / 2)^2 for t in [0, 1] (Nichol & Dhariwal 2021)."""
  return np.cos((t + _COSINE_OFFSET) / (1 + _COSINE_OFFSET) * np.pi / 2) ** 2


def _cosine_betas(num_steps):
  """diffusers' `betas_for_alpha_bar`: beta_k = min(1 - abar((k+1)/K) / abar(k/K), 0.999)."""
  t = np.arange(num_steps, dtype=np.float64)
  ratios = cosine_alpha_bar((t + 1) / num_steps) / cosine_alpha_bar(t / num_steps)
  return np.minimum(1.0 - ratios, _COSINE_MAX_BETA)


def _linear_betas(num_steps, beta_start, beta_end):
  return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)


def make_schedule(kind: str, num_steps: int, beta_start: float = 1e-4,
                  beta_end: float = 2e-2) -> NoiseSchedule:
  """Builds the constants of a `num_steps`-step schedule.

  Args:
    kind: "squaredcos_cap_v2" (cosine, the paper's choice) or "linear".
    num_steps: K, the number of training diffusion steps; a Python int >= 1.
    beta_start: first beta of the linear schedule (ignored by the cosine one).
    beta_end: last beta of the linear schedule (ignored by the cosine one).

  Returns:
    A `NoiseSchedule` with [K] float32 arrays and static `num_steps`.

  Raises:
    ValueError: on an unknown kind, a bad step count, or betas outside (0, 1).
  """
  if kind not in SCHEDULE_KINDS:
    raise ValueError(f"Unknown beta schedule {kind!r}; choose from {SCHEDULE_KINDS}.")
  if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
    raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}.")
  num_steps = int(num_steps)
  if kind == "linear":
    betas = _linear_betas(num_steps, beta_start, beta_end)
  else:
    betas = _cosine_betas(num_steps)
  if not np.all(np.isfinite(betas)) or np.any(betas <= 0) or np.any(betas >= 1):
    raise ValueError(f"All betas must lie in (0, 1); the {kind!r} schedule with num_steps={num_steps}, "
                     f"beta_start={beta_start}, beta_end={beta_end} gives [{betas.min()}, {betas.max()}].")

  alphas_cumprod = np.cumprod(1.0 - betas)
  arrays = dict(
      betas=betas,
      alphas_cumprod=alphas_cumprod,
      sqrt_alphas_cumprod=np.sqrt(alphas_cumprod),
      sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - alphas_cumprod),
  )
  return NoiseSchedule(**{name: jnp.asarray(value, jnp.float32) for name, value in arrays.items()},
                       num_steps=num_steps, kind=kind)


# Which of the K training steps an n-step chain visits (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample
# Steps are Flawed", table 2): "leading", k = (K // n) * i, diffusers' default and the original Diffusion Policy's,
# starts at k = K - K // n, so a short chain treats pure noise as a partly clean sample (one step: k = 0 only);
# "trailing", k = round(K - K i / n) - 1, starts at k = K - 1 (pure noise) whatever n.
TIMESTEP_SPACINGS = ("leading", "trailing")


def inference_timesteps(num_diffusion_steps: int, num_inference_steps: int, spacing: str = "leading") -> np.ndarray:
  """The steps an n-step chain visits, int32 [n], descending; `spacing` one of TIMESTEP_SPACINGS.

  A static NumPy array: the sampler's scan length and step indices are fixed at trace time.
  """
  validate_num_inference_steps(num_diffusion_steps, num_inference_steps)
  if spacing not in TIMESTEP_SPACINGS:
    raise ValueError(f"Unknown timestep spacing {spacing!r}; choose from {TIMESTEP_SPACINGS}.")
  if spacing == "leading":
    step_ratio = num_diffusion_steps // num_inference_steps
    return (np.arange(num_inference_steps) * step_ratio).round()[::-1].astype(np.int32)
  # A float step can give arange one value too many (K=100, n=29: a 30th at 0.4, i.e. k = -1): keep n.
  trailing = np.round(np.arange(num_diffusion_steps, 0, -num_diffusion_steps / num_inference_steps)) - 1
  return trailing[:num_inference_steps].astype(np.int32)


def previous_timesteps(timesteps: np.ndarray) -> np.ndarray:
  """Where each step of a chain goes: the next visited step, and -1 ("to the clean sample", abar = 1) after the
  last; int32 [n]."""
  return np.append(timesteps[1:], -1).astype(np.int32)


def validate_num_inference_steps(num_diffusion_steps: int, num_inference_steps: int,
                                 name: str = "num_inference_steps") -> None:
  """Raises ValueError unless 1 <= num_inference_steps <= num_diffusion_steps; `name` is how the message calls it."""
  if (isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer))
      or not 1 <= num_inference_steps <= num_diffusion_steps):
    raise ValueError(f"{name} must be an int in [1, {num_diffusion_steps}] (the number of training diffusion steps), "
                     f"got {num_inference_steps!r}.")

