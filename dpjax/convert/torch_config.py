"""The original run's OmegaConf cfg -> a dpjax config (configs/pusht.py with the run's values), or a clear refusal.

Supported: the low-dim Push-T policies `DiffusionUnetLowdimPolicy` (ConditionalUnet1D, global observation condition)
and `DiffusionTransformerLowdimPolicy` (TransformerForDiffusion, observations as condition tokens), with diffusers'
DDPM or DDIM scheduler. Every architectural value comes from the cfg; the settings dpjax has no equivalent for must
hold their default (the `REQUIRED` tables) or the conversion stops, naming the setting.
"""
import pathlib
from typing import Any

from dpjax import config_files
from dpjax.convert.payload import UnsupportedCheckpointError

CONFIG_FILE = config_files.PUSHT_CONFIG
TASK = "pusht_lowdim"
OBS_DIM, ACTION_DIM = 20, 2
POLICIES = {
    "diffusion_policy.policy.diffusion_unet_lowdim_policy.DiffusionUnetLowdimPolicy": "unet1d",
    "diffusion_policy.policy.diffusion_transformer_lowdim_policy.DiffusionTransformerLowdimPolicy": "transformer",
}
MODELS = {"unet1d": "diffusion_policy.model.diffusion.conditional_unet1d.ConditionalUnet1D",
          "transformer": "diffusion_policy.model.diffusion.transformer_for_diffusion.TransformerForDiffusion"}
SCHEDULERS = {"diffusers.schedulers.scheduling_ddpm.DDPMScheduler": "ddpm",
              "diffusers.schedulers.scheduling_ddim.DDIMScheduler": "ddim"}

# cfg settings with no dpjax counterpart: the value dpjax implements (None: the key may also be absent).
REQUIRED = {
    "common": {"n_latency_steps": 0, "past_action_visible": False, "policy.pred_action_steps_only": False},
    "unet1d": {"policy.obs_as_global_cond": True, "policy.obs_as_local_cond": False,
               "policy.oa_step_convention": True, "policy.model.cond_predict_scale": True,
               "policy.model.local_cond_dim": None, "policy.model.input_dim": ACTION_DIM},
    "transformer": {"policy.obs_as_cond": True, "policy.model.time_as_cond": True, "policy.model.n_cond_layers": 0,
                    "policy.model.input_dim": ACTION_DIM, "policy.model.output_dim": ACTION_DIM,
                    "policy.model.cond_dim": OBS_DIM},
}
# The original's value where a cfg leaves a REQUIRED key out (any other absent key reads as None).
ORIGINAL_DEFAULTS = {"n_latency_steps": 0, "past_action_visible": False, "policy.pred_action_steps_only": False,
                     "policy.obs_as_local_cond": False, "policy.model.time_as_cond": True,
                     "policy.model.n_cond_layers": 0}
SCHEDULER_REQUIRED = {"variance_type": "fixed_small", "set_alpha_to_one": True, "steps_offset": 0,
                      "trained_betas": None, "thresholding": False, "clip_sample_range": 1.0,
                      "timestep_spacing": "leading", "rescale_betas_zero_snr": False}
BETA_SCHEDULES = ("squaredcos_cap_v2", "linear")
PREDICTION_TYPES = ("epsilon", "sample")

# dpjax config field <- cfg key. Architecture: every key must be present.
ARCHITECTURE = {
    "common": {"horizon": "horizon", "n_obs_steps": "n_obs_steps", "n_action_steps": "policy.n_action_steps",
               "diffusion.num_inference_steps": "policy.num_inference_steps"},
    "unet1d": {"policy.unet1d.down_dims": "policy.model.down_dims",
               "policy.unet1d.kernel_size": "policy.model.kernel_size",
               "policy.unet1d.n_groups": "policy.model.n_groups",
               "policy.unet1d.step_embed_dim": "policy.model.diffusion_step_embed_dim"},
    "transformer": {"policy.transformer.num_layers": "policy.model.n_layer",
                    "policy.transformer.num_heads": "policy.model.n_head",
                    "policy.transformer.width": "policy.model.n_emb",
                    "policy.transformer.embed_dropout": "policy.model.p_drop_emb",
                    "policy.transformer.attn_dropout": "policy.model.p_drop_attn",
                    "policy.transformer.causal_attn": "policy.model.causal_attn"},
}
# Training settings, carried over for fine-tuning where the cfg has them (else configs/pusht.py's defaults).
TRAINING = {
    "seed": "training.seed", "train.batch_size": "dataloader.batch_size",
    "optim.learning_rate": ("optimizer.lr", "optimizer.learning_rate"), "optim.eps": "optimizer.eps",
    "optim.weight_decay": "optimizer.weight_decay", "optim.warmup_steps": "training.lr_warmup_steps",
    "ema.power": "ema.power", "ema.inv_gamma": "ema.inv_gamma", "ema.min_decay": "ema.min_value",
    "ema.max_decay": "ema.max_value", "ema.update_after_step": "ema.update_after_step",
    "data.val_ratio": "task.dataset.val_ratio", "data.max_train_episodes": "task.dataset.max_train_episodes",
    "data.split_seed": "task.dataset.seed",
}
# Training fields whose null in the cfg means something dpjax spells otherwise: the original keeps every training
# episode for max_train_episodes=None, dpjax for 0. Other nulls leave configs/pusht.py's default.
NULL_MEANS = {"data.max_train_episodes": 0}
_MISSING = object()
_ABSENT = object()


def select(cfg, key: str, default: Any = _MISSING) -> Any:
  """cfg value at dotted `key`, interpolations resolved, containers as plain lists/dicts."""
  from omegaconf import DictConfig, ListConfig, OmegaConf
  value = OmegaConf.select(cfg, key, default=_MISSING)
  if value is _MISSING:
    if default is _MISSING:
      raise UnsupportedCheckpointError(f"The checkpoint's cfg has no {key!r}; it is not a Diffusion Policy "
                                       f"workspace config dpjax.convert knows.")
    return default
  if isinstance(value, (DictConfig, ListConfig)):
    return OmegaConf.to_container(value, resolve=True)
  return value


def denoiser_of(cfg) -> str:
  """'unet1d' or 'transformer'; refuses image policies and tasks other than low-dim Push-T."""
  target = select(cfg, "policy._target_", None)
  task = select(cfg, "task.name", None)
  supported = f"supported: {sorted(t.rsplit('.', 1)[1] for t in POLICIES)} on task {TASK!r}"
  if target not in POLICIES:
    image = target is not None and ("image" in target.lower() or select(cfg, "policy.shape_meta", None) is not None)
    why = (" Image policies (robomimic ResNet-18 GroupNorm encoder) cannot be imported yet; that is the next step."
           if image else "")
    raise UnsupportedCheckpointError(f"The checkpoint holds policy {target} (task {task!r}); {supported}.{why}")
  if task != TASK:
    raise UnsupportedCheckpointError(f"The checkpoint is for task {task!r}; {supported}. Other tasks' observations "
                                     "do not match dpjax's Push-T data and simulator.")
  denoiser = POLICIES[target]
  _check_equal(cfg, {"policy.model._target_": MODELS[denoiser], "task.obs_dim": OBS_DIM,
                     "task.action_dim": ACTION_DIM})
  return denoiser


def _check_equal(cfg, expected: dict[str, Any]) -> None:
  wrong = []
  for key, want in expected.items():
    got = select(cfg, key, ORIGINAL_DEFAULTS.get(key))
    if got != want:
      wrong.append(f"{key}={got!r} (dpjax supports {want!r})")
  if wrong:
    raise UnsupportedCheckpointError("The checkpoint uses settings dpjax does not implement: " + "; ".join(wrong)
                                     + ".")


def diffusion_settings(cfg) -> dict[str, Any]:
  """policy.noise_scheduler -> dpjax config.diffusion fields (num_inference_steps comes from the policy)."""
  scheduler = select(cfg, "policy.noise_scheduler")
  target = scheduler.pop("_target_", None)
  if target not in SCHEDULERS:
    raise UnsupportedCheckpointError(f"Noise scheduler {target} is not supported; dpjax.convert supports "
                                     f"{sorted(SCHEDULERS)}.")
  settings = dict(sampler=SCHEDULERS[target], num_diffusion_steps=int(scheduler.pop("num_train_timesteps", 1000)),
                  beta_start=float(scheduler.pop("beta_start", 1e-4)), beta_end=float(scheduler.pop("beta_end", 2e-2)),
                  beta_schedule=scheduler.pop("beta_schedule", "linear"),
                  clip_sample=bool(scheduler.pop("clip_sample", True)),
                  prediction_type=scheduler.pop("prediction_type", "epsilon"))
  wrong = [f"{k}={scheduler[k]!r} (dpjax supports {v!r})" for k, v in SCHEDULER_REQUIRED.items()
           if k in scheduler and scheduler[k] != v]
  if settings["beta_schedule"] not in BETA_SCHEDULES:
    wrong.append(f"beta_schedule={settings['beta_schedule']!r} (dpjax supports {BETA_SCHEDULES})")
  if settings["prediction_type"] not in PREDICTION_TYPES:
    wrong.append(f"prediction_type={settings['prediction_type']!r} (dpjax supports {PREDICTION_TYPES})")
  unknown = sorted(set(scheduler) - set(SCHEDULER_REQUIRED))
  wrong += [f"{k}={scheduler[k]!r} (unknown to dpjax.convert)" for k in unknown]
  if wrong:
    raise UnsupportedCheckpointError("The checkpoint's noise scheduler uses settings dpjax does not implement: "
                                     + "; ".join(wrong) + ".")
  return settings


def load_base_config(variant: str, config_file=CONFIG_FILE):
  """configs/pusht.py:<variant> (defaults for everything the conversion does not set)."""
  if not pathlib.Path(config_file).is_file():
    raise FileNotFoundError(f"{config_file} not found: converted runs build on configs/pusht.py; use dpjax from a "
                            "source checkout (pip install -e .).")
  return config_files.get_config(variant, config_file)


def build_config(variant: str, overrides: dict[str, Any]):
  """configs/pusht.py:<variant> with `overrides` ({"policy.unet1d.down_dims": (16, 32), ...}) applied, each cast
  to the type of the field it replaces."""
  config = load_base_config(variant)
  for dotted, value in overrides.items():
    *parents, leaf = dotted.split(".")
    node = config
    for name in parents:
      node = node[name]
    node[leaf] = tuple(value) if isinstance(value, (list, tuple)) else type(node[leaf])(value)
  return config


def config_overrides(cfg) -> tuple[str, dict[str, Any], list[str]]:
  """(configs/pusht.py variant, {dpjax config field: value}, notes) for the run in `cfg`: its architecture,
  scheduler, sequence shape and training settings.

  Raises UnsupportedCheckpointError for image policies, other tasks and settings dpjax does not implement.
  """
  denoiser = denoiser_of(cfg)
  _check_equal(cfg, {**REQUIRED["common"], **REQUIRED[denoiser]})
  if denoiser == "unet1d":
    _check_equal(cfg, {"policy.model.global_cond_dim": OBS_DIM * int(select(cfg, "n_obs_steps"))})
  overrides = {field: select(cfg, key) for field, key in {**ARCHITECTURE["common"], **ARCHITECTURE[denoiser]}.items()}
  overrides.update({f"diffusion.{field}": value for field, value in diffusion_settings(cfg).items()})
  for field, keys in TRAINING.items():
    present = [select(cfg, key, _ABSENT) for key in ((keys,) if isinstance(keys, str) else keys)]
    present = [v for v in present if v is not _ABSENT]
    values = [v for v in present if v is not None]
    if values:
      overrides[field] = values[0]
    elif present and field in NULL_MEANS:
      overrides[field] = NULL_MEANS[field]
  betas = select(cfg, "optimizer.betas", None)
  if betas is not None:
    overrides["optim.b1"], overrides["optim.b2"] = (float(b) for b in betas)
  notes = []
  schedule = select(cfg, "training.lr_scheduler", None)
  if schedule in ("cosine", "constant"):
    overrides["optim.schedule"] = schedule
  elif schedule is not None:
    notes.append(f"training.lr_scheduler={schedule!r} has no dpjax equivalent; fine-tuning uses configs/pusht.py's "
                 "config.optim.schedule.")
  overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
  return ("transformer" if denoiser == "transformer" else "lowdim"), overrides, notes
