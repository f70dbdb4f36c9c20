"""The diffusion policy: an observation encoder and a denoiser picked by name, plus the normaliser.

A `Policy` is a pytree: its weights and normaliser are leaves, its `PolicySpec` (every architectural choice) is
static. So `sample(policy, obs, key)` is a pure function that jit compiles once per (spec, observation shapes) and
is reused for every later call with new observations.

Shapes: B batch, To = n_obs_steps, T = horizon, Da = action dim, F = per-step feature width.
"""
import dataclasses
import json
from typing import Any, Mapping

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dpjax.data import normalizer as normalizer_lib
from dpjax.diffusion import flow, objective, sampler, schedules
from dpjax.nets import obs_encoder, transformer, unet1d

ENCODERS = ("lowdim", "resnet18")
DENOISERS = ("unet1d", "transformer")
SAMPLERS = sampler.SAMPLING_METHODS
# "bfloat16": layers compute and pass activations in bfloat16 (GPUs, TPUs); "bfloat16_matmuls": only the
# denoiser's matmul operands are bfloat16, everything else float32 (CPUs with bfloat16 units; `nets/precision.py`).
COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "bfloat16_matmuls")
# Spec fields that change no weight: a run may resume with other values, and evaluation may use others
# (`sample(method=, num_inference_steps=, timestep_spacing=)`, `python -m dpjax.rollout --sampler --compute_dtype
# --timestep_spacing --fused_sampling`).
INFERENCE_FIELDS = ("sampler", "num_inference_steps", "compute_dtype", "timestep_spacing", "fused_sampling")
# The fields only training reads: a run may resume with other values.
TRAINING_FIELDS = ("flow_time_distribution",)


@dataclasses.dataclass(frozen=True)
class PolicySpec:
  """Every static choice that defines a policy network (hashable, JSON-serialisable)."""
  horizon: int
  n_obs_steps: int
  n_action_steps: int
  action_dim: int
  obs_shapes: tuple[tuple[str, tuple[int, ...]], ...]
  encoder: str
  encoder_kwargs: tuple[tuple[str, Any], ...]
  denoiser: str
  denoiser_kwargs: tuple[tuple[str, Any], ...]
  num_diffusion_steps: int
  beta_schedule: str
  beta_start: float
  beta_end: float
  prediction_type: str
  clip_sample: bool
  sampler: str
  num_inference_steps: int
  compute_dtype: str = "auto"   # older runs' specs have no such field: they get the default
  objective: str = "ddpm"       # "ddpm" (noise prediction, the paper) or "flow" (velocity; flow matching)
  flow_time_distribution: str = "uniform"   # how flow matching draws its training times (flow.TIME_DISTRIBUTIONS)
  timestep_spacing: str = "leading"         # the steps a short DDPM/DDIM chain visits (schedules.TIMESTEP_SPACINGS)
  fused_sampling: bool = False              # U-Net: Pallas conv-block kernels in the chain on CUDA (unet1d.py)

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2)

  @classmethod
  def from_json(cls, text: str) -> "PolicySpec":
    raw = json.loads(text)
    if "num_train_steps" in raw:   # runs written before the rename (K, the diffusion steps)
      raw["num_diffusion_steps"] = raw.pop("num_train_steps")
    # Runs written when the transformer still had its (only supported) time_as_cond=True attribute.
    raw["denoiser_kwargs"] = [kv for kv in raw["denoiser_kwargs"] if kv != ["time_as_cond", True]]
    raw["obs_shapes"] = tuple((k, tuple(s)) for k, s in raw["obs_shapes"])
    for field in ("encoder_kwargs", "denoiser_kwargs"):
      raw[field] = tuple((k, _freeze(v)) for k, v in raw[field])
    return cls(**raw)

  def network_fields(self) -> dict[str, Any]:
    """The fields that fix the network's weights (all but INFERENCE_FIELDS and TRAINING_FIELDS): what must match to
    resume."""
    return {f: getattr(self, f) for f in self.__dataclass_fields__
            if f not in INFERENCE_FIELDS + TRAINING_FIELDS}


def resolve_compute_dtype(name: str, backend: str | None = None) -> jnp.dtype:
  """The dtype matmuls and convolutions run in. "auto": float32 on CPU (bfloat16 layers are emulated there and
  slower, BUILD_NOTES.md "Mixed precision"), bfloat16 on GPU and TPU; "bfloat16_matmuls": bfloat16."""
  name = compute_dtype_name(name, backend)
  return jnp.dtype("bfloat16" if name == "bfloat16_matmuls" else name)


def compute_dtype_name(name: str, backend: str | None = None) -> str:
  """`name` with "auto" decided for `backend` (default: JAX's): "float32", "bfloat16" or "bfloat16_matmuls"."""
  _check_choice("compute_dtype", name, COMPUTE_DTYPES)
  if name == "auto":
    return "float32" if (backend or jax.default_backend()) == "cpu" else "bfloat16"
  return name


def network_dtypes(name: str, backend: str | None = None) -> tuple[jnp.dtype, jnp.dtype | None]:
  """(dtype the layers compute and pass activations in, dtype of the denoiser's matmul operands if not that one)
  for a compute dtype name: "bfloat16_matmuls" is (float32, bfloat16); the others (d, None) with d the resolved
  dtype. The observation encoder takes the first: its ResNet convolutions gained nothing from bfloat16 operands on
  XLA:CPU (BUILD_NOTES.md, "Session 26")."""
  if compute_dtype_name(name, backend) == "bfloat16_matmuls":
    return jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)
  return resolve_compute_dtype(name, backend), None


def _freeze(value):
  return tuple(_freeze(v) for v in value) if isinstance(value, (list, tuple)) else value


def _check_crop_fits(obs_shapes: Mapping[str, tuple[int, ...]], crop_shape: tuple[int, ...]) -> None:
  """The image crop (empty: none) must fit every camera; found here rather than inside the first traced step."""
  for key, shape in obs_shapes.items():
    image_hw = tuple(shape)[:2]
    if crop_shape and normalizer_lib.is_image(tuple(shape)) and (
        len(crop_shape) != 2 or any(not 1 <= c <= s for c, s in zip(crop_shape, image_hw))):
      raise ValueError(f"config.policy.resnet18.crop_shape={crop_shape} does not fit the {image_hw} images of "
                       f"{key!r}; give --config.policy.resnet18.crop_shape='(h, w)' within them (Push-T: 84 of 96), "
                       "or '()' for none.")


def spec_from_config(config, obs_shapes: Mapping[str, tuple[int, ...]], action_dim: int) -> PolicySpec:
  """Builds the static spec from a config and the data's per-step observation shapes."""
  p, d = config.policy, config.diffusion
  _check_choice("config.policy.encoder", p.encoder, ENCODERS)
  _check_choice("config.policy.denoiser", p.denoiser, DENOISERS)
  _check_choice("config.diffusion.objective", d.objective, sampler.OBJECTIVES)
  _check_choice("config.diffusion.sampler", d.sampler, SAMPLERS)
  if d.sampler not in sampler.METHODS_BY_OBJECTIVE[d.objective]:
    raise ValueError(f"config.diffusion.sampler={d.sampler!r} does not apply to config.diffusion.objective="
                     f"{d.objective!r}; use one of {sampler.METHODS_BY_OBJECTIVE[d.objective]} (or the variant "
                     f"configs/pusht.py:flow).")
  _check_choice("config.policy.compute_dtype", p.compute_dtype, COMPUTE_DTYPES)
  check_fused_sampling(p.denoiser, p.fused_sampling)
  _check_choice("config.diffusion.flow_time_distribution", d.flow_time_distribution, flow.TIME_DISTRIBUTIONS)
  _check_choice("config.diffusion.timestep_spacing", d.timestep_spacing, schedules.TIMESTEP_SPACINGS)
  has_images = any(normalizer_lib.is_image(tuple(s)) for s in obs_shapes.values())
  if has_images and p.encoder != "resnet18":
    raise ValueError(f"Observations {dict(obs_shapes)} contain images but config.policy.encoder is {p.encoder!r}; "
                     "use the config's :image variant (configs/pusht.py:image, configs/replay.py:image) or "
                     "--config.policy.encoder=resnet18.")
  if has_images:
    _check_crop_fits(obs_shapes, tuple(p.resnet18.crop_shape or ()))
  if not 1 <= config.n_obs_steps <= config.horizon:
    raise ValueError(f"n_obs_steps={config.n_obs_steps} must be in [1, horizon={config.horizon}].")
  check_n_action_steps(config.n_action_steps, config.horizon, config.n_obs_steps)
  sampler.check_num_inference_steps(d.objective, d.num_diffusion_steps, d.num_inference_steps,
                                    "config.diffusion.num_inference_steps")
  # Each network is built from its config block (config.policy.<name>: its fields are the module's attributes), so
  # a new setting is added to the block and the module only. The low-dim encoder has no settings.
  encoder_kwargs = _block_kwargs(p[p.encoder]) if p.encoder in p else {}
  denoiser_kwargs = _block_kwargs(p[p.denoiser])
  if p.denoiser == "transformer":   # its token counts are the sequence shape's
    denoiser_kwargs.update(horizon=config.horizon, n_obs_steps=config.n_obs_steps)
  return PolicySpec(
      horizon=config.horizon, n_obs_steps=config.n_obs_steps, n_action_steps=config.n_action_steps,
      action_dim=int(action_dim),
      obs_shapes=tuple(sorted((k, tuple(int(i) for i in s)) for k, s in obs_shapes.items())),
      encoder=p.encoder, encoder_kwargs=tuple(sorted(encoder_kwargs.items())),
      denoiser=p.denoiser, denoiser_kwargs=tuple(sorted(denoiser_kwargs.items())),
      num_diffusion_steps=d.num_diffusion_steps, beta_schedule=d.beta_schedule, beta_start=d.beta_start,
      beta_end=d.beta_end, prediction_type=d.prediction_type, clip_sample=d.clip_sample, sampler=d.sampler,
      num_inference_steps=d.num_inference_steps, compute_dtype=p.compute_dtype, objective=d.objective,
      flow_time_distribution=d.flow_time_distribution, timestep_spacing=d.timestep_spacing,
      fused_sampling=bool(p.fused_sampling))


def check_n_action_steps(n_action_steps: int, horizon: int, n_obs_steps: int) -> None:
  """ValueError unless the executed steps [n_obs_steps - 1, n_obs_steps - 1 + n_action_steps) lie inside the chunk."""
  if not 1 <= n_action_steps <= horizon - n_obs_steps + 1:
    raise ValueError(f"n_action_steps={n_action_steps} must be in [1, horizon - n_obs_steps + 1 = "
                     f"{horizon - n_obs_steps + 1}] so executed actions lie inside the chunk.")


def check_fused_sampling(denoiser: str, fused_sampling: bool) -> None:
  """The Pallas conv-block kernels are the U-Net's (`unet1d.Conv1dBlock`): a clear error for any other denoiser."""
  if fused_sampling and denoiser != "unet1d":
    raise ValueError(f"fused_sampling applies to the U-Net only, not the {denoiser!r} denoiser; leave it False "
                     "(config.policy.fused_sampling, rollout --fused_sampling).")


def _block_kwargs(block) -> dict[str, Any]:
  """A network's config block as hashable module attributes (lists become tuples; an empty crop_shape, None)."""
  kwargs = {key: _freeze(value) for key, value in block.items()}
  if "crop_shape" in kwargs and not kwargs["crop_shape"]:
    kwargs["crop_shape"] = None
  return kwargs


def _check_choice(name, value, choices):
  if value not in choices:
    raise ValueError(f"{name}={value!r} is not one of {choices}.")


class PolicyNet(nn.Module):
  """Observation encoder + denoiser. `encode` runs once per observation; `denoise` once per diffusion step."""
  spec: PolicySpec

  def setup(self):
    dtype, matmul_dtype = network_dtypes(self.spec.compute_dtype)
    self.encoder = obs_encoder.ObservationEncoder(obs_shapes=self.spec.obs_shapes, dtype=dtype,
                                                  **dict(self.spec.encoder_kwargs))
    denoiser_cls = {"unet1d": unet1d.ConditionalUnet1D, "transformer": transformer.TransformerDenoiser}
    kwargs = dict(self.spec.denoiser_kwargs)
    if self.spec.fused_sampling:
      kwargs["fused_sampling"] = True
    self.denoiser = denoiser_cls[self.spec.denoiser](dtype=dtype, matmul_dtype=matmul_dtype, **kwargs)

  def encode(self, obs, train: bool):
    """obs: normalised {key: [B, To, ...]} -> features [B, To, F]."""
    return self.encoder(obs, train=train)

  def denoise(self, x, k, features, train: bool):
    """x: [B, T, Da] noisy actions, k: int32 [B] steps, features: [B, To, F] -> [B, T, Da]."""
    return self.denoiser(x, k, features, train=train)

  def condition(self, k, features):
    """k [B] steps (int32; flow: float times), features [B, To, F] -> the denoiser's conditioning at that step:
    everything that does not depend on x (the U-Net's FiLM embeddings, the transformer's memory). Evaluation mode."""
    return self.denoiser(None, k, features, train=False, conditioning_only=True)

  def denoise_conditioned(self, x, conditioning):
    """x: [B, T, Da], conditioning from `condition` -> [B, T, Da], equal to `denoise` in evaluation mode."""
    return self.denoiser(x, None, None, train=False, conditioning=conditioning)

  def __call__(self, obs, x, k, train: bool = False):
    return self.denoise(x, k, self.encode(obs, train), train)


@struct.dataclass
class Policy:
  """Weights, normaliser and (static) spec: everything `sample` needs."""
  params: Any
  normalizer: Any
  spec: PolicySpec = struct.field(pytree_node=False)


def with_n_action_steps(policy: Policy, n_action_steps: int) -> Policy:
  """`policy` executing `n_action_steps` of each chunk before re-planning (the weights and chunk are unchanged)."""
  spec = policy.spec
  check_n_action_steps(n_action_steps, spec.horizon, spec.n_obs_steps)
  return policy.replace(spec=dataclasses.replace(spec, n_action_steps=n_action_steps))


def make_schedule(spec: PolicySpec) -> schedules.NoiseSchedule:
  return schedules.make_schedule(spec.beta_schedule, spec.num_diffusion_steps, beta_start=spec.beta_start,
                                 beta_end=spec.beta_end)


def example_obs(spec: PolicySpec, batch_size: int = 1) -> dict[str, np.ndarray]:
  """Zeros with the spec's observation shapes ([B, To, ...]), images uint8."""
  return {k: np.zeros((batch_size, spec.n_obs_steps) + s, np.uint8 if normalizer_lib.is_image(s) else np.float32)
          for k, s in spec.obs_shapes}


def init_params(spec: PolicySpec, key: jax.Array) -> Any:
  """Fresh network parameters for `spec`."""
  net = PolicyNet(spec)
  obs = {k: jnp.zeros(v.shape, jnp.float32) for k, v in example_obs(spec).items()}
  x = jnp.zeros((1, spec.horizon, spec.action_dim), jnp.float32)
  k = jnp.zeros((1,), jnp.int32)

  # One jitted program: eager init would compile a random-number kernel per parameter shape (slow on CPU).
  @jax.jit
  def init(key):
    params_key, crop_key, dropout_key = jax.random.split(key, 3)
    return net.init({"params": params_key, "crop": crop_key, "dropout": dropout_key}, obs, x, k, train=False)

  return init(key)["params"]


def count_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


@struct.dataclass
class Distillation:
  """A frozen teacher whose deterministic chain (its starting noise -> its action chunk) a flow student learns.

  Reflow (Liu et al. 2023): the student is trained by flow matching on the teacher's (noise, chunk) pairs instead of
  (fresh noise, demonstration), so its paths are nearly straight and one or two Euler steps reproduce the teacher.
  `fraction_at_noise` of each batch is trained at t = 1, the one point a one-step sampler evaluates.
  `obs_noise` (>= 0) shifts each sample's normalised low-dim observation history by one Gaussian offset per feature
  (standard deviation `obs_noise`, the same for all its frames, so the motion between frames stays) before teacher
  and student see it: the student then learns the teacher's map around the demonstrated states too, where a
  closed-loop rollout drifts, and not only on them. `visited_obs` ({key: [N, To, ...]} raw histories, from
  `dpjax.visited_obs.load`) replaces the observations of a `visited_fraction` share of each batch with histories
  drawn from the states a policy visited in its own rollouts (on-policy distillation: the teacher labels where the
  student goes). Both are training batches only (`loss_fn(train=True)`): validation measures the student on the
  demonstrations' observations.
  """
  teacher: Policy
  fraction_at_noise: float = struct.field(pytree_node=False, default=0.5)
  obs_noise: float = struct.field(pytree_node=False, default=0.0)
  visited_obs: Any = None
  visited_fraction: float = struct.field(pytree_node=False, default=0.0)


def loss_fn(params, spec: PolicySpec, normalizer, batch, key: jax.Array, train: bool = True,
            distillation: Distillation | None = None):
  """Training loss on one raw batch: DDPM's noise regression, or flow matching's velocity regression.

  batch: {"obs": {key: [B, To, ...]}, "action": [B, T, Da]} unnormalised (images uint8). Observation steps past To
  are ignored. With `distillation` (flow objective only) the targets are the teacher's chunks for the same
  observations, not the demonstrated actions. Returns the scalar loss.
  """
  obs = {k: v[:, :spec.n_obs_steps] for k, v in batch["obs"].items()}
  if train and distillation is not None and distillation.visited_obs is not None:
    obs = mix_in_visited_obs(obs, distillation.visited_obs, distillation.visited_fraction, jax.random.fold_in(key, 2))
  actions = normalizer_lib.normalize(normalizer["action"], batch["action"])
  chex.assert_shape(actions, (None, spec.horizon, spec.action_dim))
  obs = normalizer_lib.normalize_obs(normalizer, obs)
  net = PolicyNet(spec)
  diffusion_key, crop_key, dropout_key = jax.random.split(key, 3)
  if train and distillation is not None and distillation.obs_noise:   # an augmentation: validation sees clean obs
    obs = shift_low_dim_obs(obs, spec.obs_shapes, distillation.obs_noise, jax.random.fold_in(key, 1))
  features = net.apply({"params": params}, obs, train, method=PolicyNet.encode, rngs={"crop": crop_key})

  def denoise_fn(x, k):
    return net.apply({"params": params}, x, k, features, train, method=PolicyNet.denoise,
                     rngs={"dropout": dropout_key})

  if spec.objective == "ddpm":
    if distillation is not None:
      raise ValueError("Distillation trains a flow student: set config.diffusion.objective='flow'.")
    return objective.diffusion_loss(denoise_fn, make_schedule(spec), actions, diffusion_key,
                                    prediction_type=spec.prediction_type)
  time_key, noise_key = jax.random.split(diffusion_key)
  noise = jax.random.normal(noise_key, actions.shape, actions.dtype)
  if distillation is None:
    t = flow.sample_times(time_key, actions.shape[0], distribution=spec.flow_time_distribution)
  else:
    actions = jax.lax.stop_gradient(_chain_from_normalized(distillation.teacher, obs, noise))
    t = flow.sample_times(time_key, actions.shape[0], distillation.fraction_at_noise, spec.flow_time_distribution)
  return flow.flow_loss(denoise_fn, actions, noise, t)


def action_error(params, spec: PolicySpec, normalizer, batch, key: jax.Array) -> jax.Array:
  """Mean squared error of the chunks the policy samples (its own sampler and steps) from a raw batch's
  observations against the batch's chunks, in normalised action units ([-1, 1] per dimension over the data).

  The original's `train_action_mse_error`, which is in raw units (dominated by the largest-scale dimension): what
  a run on data without a simulator has to watch besides the loss. Returns a scalar.
  """
  obs = normalizer_lib.normalize_obs(normalizer, {k: v[:, :spec.n_obs_steps] for k, v in batch["obs"].items()})
  target = normalizer_lib.normalize(normalizer["action"], batch["action"])
  predicted = _chain_from_normalized(Policy(params=params, normalizer=normalizer, spec=spec), obs, key=key)
  chex.assert_equal_shape((predicted, target))
  return jnp.mean(jnp.square(predicted - target))


def mix_in_visited_obs(obs, visited, fraction: float, key: jax.Array) -> dict:
  """`obs` {key: [B, To, ...]} with each sample's history replaced, with probability `fraction`, by one drawn
  uniformly from `visited` {key: [N, To, ...]} (the same draw for every key of a sample). Raw values in and out."""
  batch_size = next(iter(obs.values())).shape[0]
  num_visited = next(iter(visited.values())).shape[0]
  pick_key, take_key = jax.random.split(key)
  picks = jax.random.randint(pick_key, (batch_size,), 0, num_visited)
  take = jax.random.uniform(take_key, (batch_size,)) < fraction
  mixed = {}
  for name, value in obs.items():
    chex.assert_equal_shape_suffix([value, visited[name]], value.ndim - 1)
    replacement = visited[name][picks].astype(value.dtype)
    mixed[name] = jnp.where(take.reshape((batch_size,) + (1,) * (value.ndim - 1)), replacement, value)
  return mixed


def shift_low_dim_obs(obs, obs_shapes, std: float, key: jax.Array) -> dict:
  """`obs` with every low-dim key's [B, To, D] history shifted by a Gaussian offset [B, 1, D] of standard deviation
  `std` (one per sample and feature, shared by the To frames); images pass unchanged."""
  keys = jax.random.split(key, len(obs_shapes))
  shifted = dict(obs)
  for key_i, (name, shape) in zip(keys, obs_shapes):
    if normalizer_lib.is_image(tuple(shape)):
      continue
    value = obs[name]
    chex.assert_rank(value, 3)
    offset = std * jax.random.normal(key_i, (value.shape[0], 1, value.shape[2]), value.dtype)
    shifted[name] = value + offset
  return shifted


def check_obs_values(key: str, value: Any, image: bool) -> np.ndarray:
  """One observation array as the policy takes it (uint8 images, float32 low-dim), or a ValueError saying what is
  wrong and how to fix it. Non-finite values are errors: a sensor dropout must not become NaN actions."""
  if not hasattr(value, "dtype") or not hasattr(value, "shape"):
    raise ValueError(f"Observation {key!r} is a {type(value).__name__}, not an array; pass np.asarray(...) "
                     f"({'uint8 images' if image else 'float32 values'}).")
  dtype = np.dtype(value.dtype)
  if image:
    if dtype != np.uint8:
      raise ValueError(f"Observation {key!r} is an image of dtype {dtype}; images must be uint8 in [0, 255] as "
                       "recorded (a float image in [0, 1]: (x * 255).round().astype(np.uint8)).")
    return np.asarray(value)
  if not np.issubdtype(dtype, np.floating):
    raise ValueError(f"Observation {key!r} has dtype {dtype}; low-dim observations must be floating point "
                     f"(positions in pixels), e.g. {key}.astype(np.float32).")
  value = np.asarray(value, np.float32)
  if not np.all(np.isfinite(value)):
    raise ValueError(f"Observation {key!r} has {int(np.sum(~np.isfinite(value)))} non-finite value(s) (NaN/inf); "
                     "the policy would return NaN actions. Repeat the last valid reading or stop the robot.")
  return value


def check_obs(spec: PolicySpec, obs: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], bool]:
  """Validates raw observations against the spec (keys, shapes, dtypes, finite values, a non-empty batch).

  Returns:
    (the observations as the policy takes them: uint8 images, float32 low-dim; True when they carry a batch axis).
  """
  expected = dict(spec.obs_shapes)
  if not isinstance(obs, Mapping):
    raise ValueError(f"Observations must be a dict {{key: array}} with keys {sorted(expected)}, got a "
                     f"{type(obs).__name__}.")
  if set(obs) != set(expected):
    raise ValueError(f"Observation keys {sorted(obs)} do not match the policy's {sorted(expected)}; expected "
                     + ", ".join(f"{k}: [B, {spec.n_obs_steps}, {', '.join(map(str, s))}]"
                                 for k, s in expected.items()))
  batched = None
  checked = {}
  for key, shape in expected.items():
    checked[key] = check_obs_values(key, obs[key], normalizer_lib.is_image(shape))
    got = tuple(np.shape(obs[key]))
    unbatched_shape = (spec.n_obs_steps,) + shape
    if got == unbatched_shape:
      this_batched = False
    elif len(got) == len(unbatched_shape) + 1 and got[1:] == unbatched_shape:
      this_batched = True
    else:
      raise ValueError(f"Observation {key!r} has shape {got}; expected [B, {spec.n_obs_steps}, "
                       f"{', '.join(map(str, shape))}] (batched) or [{spec.n_obs_steps}, "
                       f"{', '.join(map(str, shape))}] (one observation history).")
    if batched is not None and batched != this_batched:
      raise ValueError("Observations mix batched and unbatched arrays; give every key a batch axis or none.")
    batched = this_batched
  if batched:
    sizes = {key: np.shape(obs[key])[0] for key in expected}
    if len(set(sizes.values())) > 1:
      raise ValueError(f"Observation batch sizes differ across keys: {sizes}; every key needs the same B.")
    if 0 in sizes.values():
      raise ValueError("The observation batch is empty (B = 0); pass at least one observation history.")
  return checked, bool(batched)


def inference_params(params, spec: PolicySpec):
  """The weights as the sampling chain reads them. With a bfloat16 compute dtype every matmul and convolution
  kernel is cast once, before the chain, so each of its calls reads half the bytes (the cast each layer would make
  anyway: the actions are bit-identical); norm scales and biases and embeddings stay float32. The transformer's
  Dense biases are cast too: with cuBLAS GEMMs each was a convert kernel in every call (233 -> 199 kernels per
  chain iteration), while the U-Net's bias adds fuse with their neighbours and cast biases cost it kernels (74 -> 76
  per batch-1 iteration with fused_sampling, 150 -> 173 at batch 1,024; BUILD_NOTES.md, "Session 15"). With
  "bfloat16_matmuls" only the denoiser's kernels: its layers add float32 biases and the encoder runs in float32
  (`network_dtypes`)."""
  dtype = resolve_compute_dtype(spec.compute_dtype)
  if dtype == jnp.float32:
    return params
  if network_dtypes(spec.compute_dtype)[1] is not None:
    return {**params, "denoiser": _cast_layer_weights(params["denoiser"], dtype, cast_biases=False)}
  return _cast_layer_weights(params, dtype, cast_biases=spec.denoiser == "transformer")


def _cast_layer_weights(params, dtype, cast_biases: bool):
  """`params` with every Dense and convolution kernel (and, if cast_biases, its bias) cast to `dtype`."""

  def cast(tree):
    if not isinstance(tree, Mapping):
      return tree
    layer = "kernel" in tree and not isinstance(tree["kernel"], Mapping)   # a Dense or convolution: kernel, bias

    def cast_leaf(name, leaf):
      if isinstance(leaf, Mapping):
        return cast(leaf)
      is_weight = name == "kernel" or (cast_biases and layer and name == "bias")
      return leaf.astype(dtype) if is_weight and jnp.issubdtype(leaf.dtype, jnp.floating) else leaf

    return {name: cast_leaf(name, leaf) for name, leaf in tree.items()}

  return cast(params)


def for_sampling(policy: Policy) -> Policy:
  """`policy` with its weights cast once as the chain reads them (`inference_params`), for a caller that samples
  many chunks (`control.RecedingHorizonController`): each chunk then starts without the casts, which are GPU
  kernels too (tens per chunk: as many as a one-step policy's network). The same actions bit for bit. Call it
  again after changing the spec's compute dtype."""
  return policy.replace(params=_inference_params_jit(policy.params, policy.spec))


_inference_params_jit = jax.jit(inference_params, static_argnums=1)


def _chain_from_normalized(policy: Policy, obs, noise: jax.Array | None = None, key: jax.Array | None = None,
                           method: str | None = None, num_inference_steps: int | None = None) -> jax.Array:
  """Normalised observations {key: [B, To, ...]} -> normalised action chunks [B, T, Da] by the reverse chain.

  Starts from `noise` [B, T, Da] when given (then DDIM, Euler and Heun are deterministic), else from `key`. The
  method and step count default to the spec's.
  """
  spec = policy.spec
  method = spec.sampler if method is None else method
  num_inference_steps = spec.num_inference_steps if num_inference_steps is None else num_inference_steps
  net = PolicyNet(spec)
  params = inference_params(policy.params, spec)
  features = net.apply({"params": params}, obs, False, method=PolicyNet.encode)
  batch_size = features.shape[0]

  # Split at x: the chain computes every step's conditioning in one pass before its loop.
  denoiser = sampler.ConditionedDenoiser(
      condition=lambda k: net.apply({"params": params}, k, features, method=PolicyNet.condition),
      apply=lambda x, conditioning: net.apply({"params": params}, x, conditioning,
                                              method=PolicyNet.denoise_conditioned))
  return sampler.sample_chain(denoiser, make_schedule(spec), (batch_size, spec.horizon, spec.action_dim),
                              jax.random.key(0) if key is None else key, method=method,
                              num_inference_steps=num_inference_steps, clip_sample=spec.clip_sample,
                              prediction_type=spec.prediction_type, noise=noise,
                              timestep_spacing=spec.timestep_spacing)


def sample_unchecked(policy: Policy, obs, key: jax.Array, method: str, num_inference_steps: int,
                     noise: jax.Array | None = None) -> jax.Array:
  """`sample`'s traceable core: raw batched observations {key: [B, To, ...]} -> raw actions [B, T, Da], without
  `sample`'s checks (for a caller that checks, jits or exports it itself: `dpjax.export`)."""
  obs = normalizer_lib.normalize_obs(policy.normalizer, obs)
  actions = _chain_from_normalized(policy, obs, noise=noise, key=key, method=method,
                                   num_inference_steps=num_inference_steps)
  return normalizer_lib.unnormalize(policy.normalizer["action"], actions)


_sample_batched = jax.jit(sample_unchecked, static_argnames=("method", "num_inference_steps"))


def check_noise(spec: PolicySpec, noise: Any, batch_size: int, batched: bool) -> jax.Array:
  """`sample`'s starting noise as float32 [B, T, Da], or a ValueError saying what shape or values it needs."""
  want = (batch_size, spec.horizon, spec.action_dim) if batched else (spec.horizon, spec.action_dim)
  if not hasattr(noise, "shape") or tuple(noise.shape) != want:
    raise ValueError(f"noise has shape {getattr(noise, 'shape', type(noise).__name__)}, the chain starts from "
                     f"{list(want)} (batch, horizon, action_dim of the observations and policy): standard normal "
                     "values in normalised action units, e.g. jax.random.normal(key, shape).")
  if not np.isfinite(np.asarray(noise, np.float32)).all():
    raise ValueError("noise has non-finite values; pass finite standard normal draws.")
  noise = jnp.asarray(noise, jnp.float32)
  return noise if batched else noise[None]


def check_key(key: Any) -> None:
  """A ValueError unless `key` is one PRNG key: jax.random.key(seed), or a legacy jax.random.PRNGKey(seed)."""
  typed = hasattr(key, "dtype") and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ()
  legacy = hasattr(key, "dtype") and not typed and key.dtype == np.uint32 and tuple(key.shape) == (2,)
  if not (typed or legacy):
    shown = f"{type(key).__name__} {key!r}" if not hasattr(key, "shape") else f"{key.dtype} array of shape {key.shape}"
    raise ValueError(f"key must be one PRNG key, e.g. jax.random.key(0) (split it for several), got a {shown}.")


def sample(policy: Policy, obs: Mapping[str, Any], key: jax.Array, *, method: str | None = None,
           num_inference_steps: int | None = None, timestep_spacing: str | None = None,
           noise: jax.Array | None = None) -> jax.Array:
  """Samples an action chunk from raw observations.

  Args:
    policy: a `Policy` (e.g. from `dpjax.load_policy(run_dir)`).
    obs: raw (unnormalised) observation history, {key: [B, To, ...]} or {key: [To, ...]}; images uint8 in
      [0, 255], low-dim values floating point and finite (anything else is a ValueError saying how to fix it).
    key: PRNG key.
    method: "ddpm" or "ddim" for a noise-prediction policy; "euler", "heun" or "ancestral" (stochastic) for a
      flow policy (default: the spec's sampler).
    num_inference_steps: reverse-chain length (default: the spec's); network calls per chunk are this, twice for
      Heun.
    timestep_spacing: which training steps a DDPM/DDIM chain of fewer than K steps visits, "leading" or
      "trailing" (default: the spec's; `schedules.TIMESTEP_SPACINGS`).
    noise: the chain's starting point x_K, [B, T, Da] (or [T, Da] for unbatched input), standard normal in
      normalised action units (default: drawn from `key`). DDIM, Euler and Heun are then deterministic maps from
      (observations, noise) to actions: paired comparisons of two policies, or a policy's modes, from the same
      draws. DDPM and ancestral steps still draw fresh noise from `key` along the chain.

  Returns:
    Unnormalised actions [B, T, Da] (or [T, Da] for unbatched input).
  """
  if timestep_spacing is not None:
    _check_choice("timestep_spacing", timestep_spacing, schedules.TIMESTEP_SPACINGS)
    policy = policy.replace(spec=dataclasses.replace(policy.spec, timestep_spacing=timestep_spacing))
  spec = policy.spec
  method = spec.sampler if method is None else method
  num_inference_steps = spec.num_inference_steps if num_inference_steps is None else num_inference_steps
  sampler.check_method(spec.objective, method)
  sampler.check_num_inference_steps(spec.objective, spec.num_diffusion_steps, num_inference_steps)
  obs, batched = check_obs(spec, obs)
  check_key(key)
  obs = {k: (v if batched else v[None]) for k, v in obs.items()}
  if noise is not None:
    noise = check_noise(spec, noise, next(iter(obs.values())).shape[0], batched)
  actions = _sample_batched(policy, dict(obs), key, method, num_inference_steps, noise)
  return actions if batched else actions[0]


def action_steps_to_execute(spec: PolicySpec, actions: jax.Array, skip: int = 0) -> jax.Array:
  """The receding-horizon slice: actions [..., T, Da] -> [..., n_action_steps, Da] starting at n_obs_steps - 1
  (the action of the newest observation's step), or `skip` steps later (a chunk that arrives late:
  `control.RecedingHorizonController`'s latency_steps)."""
  start = spec.n_obs_steps - 1 + skip
  return actions[..., start:start + spec.n_action_steps, :]
