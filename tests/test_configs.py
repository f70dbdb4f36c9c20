"""configs/pusht.py: the paper's per-variant hyper-parameters (from the original's released Push-T configs)."""
import pathlib

import pytest

from dpjax import config_files, train
from tests import smoke

REPO = pathlib.Path(__file__).resolve().parents[1]

# variant -> (horizon, down_dims or None, lr, (b1, b2), weight_decay, warmup, batch, attn_dropout or None)
# Sources (real-stanford/diffusion_policy): train_diffusion_unet_lowdim_workspace / pusht_lowdim,
# train_diffusion_unet_hybrid_workspace, train_diffusion_transformer_lowdim_pusht_workspace,
# train_diffusion_transformer_hybrid_workspace (image transformer: horizon 10, transformer_weight_decay 1e-3).
PAPER = {
    "lowdim": (16, (256, 512, 1024), 1e-4, (0.95, 0.999), 1e-6, 500, 256, None),
    "image": (16, (512, 1024, 2048), 1e-4, (0.95, 0.999), 1e-6, 500, 64, None),
    "transformer": (16, None, 1e-4, (0.9, 0.95), 1e-1, 1000, 256, 0.01),
    "image,transformer": (10, None, 1e-4, (0.9, 0.95), 1e-3, 1000, 64, 0.3),
}


def _config(variant):
  return smoke.smoke_config("unused", variant)


@pytest.mark.parametrize("variant", list(PAPER))
def test_variant_defaults_match_the_paper(variant):
  horizon, down_dims, lr, betas, weight_decay, warmup, batch, attn_dropout = PAPER[variant]
  config = _config(variant)
  assert (config.horizon, config.n_obs_steps, config.n_action_steps) == (horizon, 2, 8)
  assert config.n_obs_steps - 1 + config.n_action_steps <= config.horizon
  assert config.policy.denoiser == ("transformer" if "transformer" in variant else "unet1d")
  assert config.policy.encoder == ("resnet18" if "image" in variant else "lowdim")
  if down_dims:
    assert tuple(config.policy.unet1d.down_dims) == down_dims
  else:
    t = config.policy.transformer
    assert (t.num_layers, t.num_heads, t.width, t.attn_dropout) == (8, 4, 256, attn_dropout)
  assert config.optim.learning_rate == lr
  assert (config.optim.b1, config.optim.b2) == betas
  assert config.optim.weight_decay == weight_decay
  assert config.optim.warmup_steps == warmup
  assert config.train.batch_size == batch
  assert (config.diffusion.num_diffusion_steps, config.diffusion.num_inference_steps) == (100, 100)
  assert config.data.max_train_episodes == 90


@pytest.mark.parametrize("variant,epochs", [("lowdim", 5000), ("transformer", 8000), ("image", 3050),
                                            ("image,transformer", 3050)])
def test_default_training_length_is_the_original_number_of_epochs(variant, epochs):
  config = _config(variant)
  assert (config.train.num_epochs, config.train.num_steps) == (epochs, 0)
  # 10,726 windows of the 90 training episodes at horizon 16 (tests/test_data_real.py checks the count): 42 steps
  # of 256 per epoch, the paper's 210,000 steps for the low-dim U-Net.
  steps = train.resolve_num_steps(config.train, 10_726)
  assert steps == -(-10_726 // config.train.batch_size) * epochs
  if variant == "lowdim":
    assert steps == 210_000
  config.train.num_steps = 1234
  assert train.resolve_num_steps(config.train, 10_726) == 1234   # an explicit step count wins


# `small` variant -> (its recorded CPU run, learning rate): the run's network and learning rate are the preset's.
SMALL_RUNS = {"small": ("quickstart_cpu", 3e-4), "small,transformer": ("transformer_small_lr/lr2e3", 2e-3),
              "small,image": ("pusht_image_cnn_small", 3e-4),
              "small,image,transformer": ("pusht_image_transformer_small", 3e-4)}


@pytest.mark.parametrize("variant", list(SMALL_RUNS))
def test_small_is_each_network_as_its_recorded_cpu_run(variant):
  from dpjax import config_json, policy
  run, learning_rate = SMALL_RUNS[variant]
  stored = policy.PolicySpec.from_json((REPO / "experiments" / run / "policy_spec.json").read_text())
  config = _config(variant)
  spec = policy.spec_from_config(config, dict(stored.obs_shapes), stored.action_dim)
  assert spec.network_fields() == stored.network_fields()
  recorded = config_json.get_config(REPO / "experiments" / run / "config.json")
  assert config.optim.learning_rate == recorded.optim.learning_rate == learning_rate
  assert (config.optim.warmup_steps, config.train.num_steps) == (500, 4000)


def test_image_transformer_synonym_and_unknown_words():
  assert _config("image_transformer").to_dict() == _config("image,transformer").to_dict()
  with pytest.raises(ValueError, match="Unknown config variant"):
    _config("imgae")


def test_an_older_runs_config_json_loads_with_current_names():
  """experiments/pusht_lowdim_cnn_small/config.json was written before the rollout fields were renamed and before
  flow matching, distillation or epochs existed; passed back as --config it still trains the same policy, the
  fields it lacks at today's defaults."""
  from dpjax import config_json, policy
  config = config_json.get_config(REPO / "experiments" / "pusht_lowdim_cnn_small" / "config.json")
  assert (config.train.rollout_every, config.rollout.max_steps) == (0, 300) and "eval" not in config
  assert (config.train.num_steps, config.optim.learning_rate, config.distill.teacher) == (4000, 3e-4, "")
  train.validate_config(config)
  assert config.diffusion.num_diffusion_steps == 100 and "num_train_steps" not in config.diffusion
  spec = policy.spec_from_config(config, {"low_dim": (20,)}, 2)
  assert (spec.objective, dict(spec.denoiser_kwargs)["down_dims"]) == ("ddpm", (64, 128, 256))
  # Its policy_spec.json (and checkpoints' metadata) still says num_train_steps: it reads as the same spec.
  stored = (REPO / "experiments" / "pusht_lowdim_cnn_small" / "policy_spec.json").read_text()
  assert "num_train_steps" in stored
  assert policy.PolicySpec.from_json(stored).network_fields() == spec.network_fields()


def test_an_older_transformer_run_loads_without_its_removed_field():
  """The low-dim transformer run was written when `time_as_cond` (always True) was still a setting."""
  from dpjax import config_json, policy
  run = REPO / "experiments" / "pusht_lowdim_transformer_small"
  config = config_json.get_config(run / "config.json")
  assert "time_as_cond" not in config.policy.transformer
  spec = policy.spec_from_config(config, {"low_dim": (20,)}, 2)
  stored = (run / "policy_spec.json").read_text()
  assert "time_as_cond" in stored
  assert policy.PolicySpec.from_json(stored).network_fields() == spec.network_fields()
  with pytest.raises(ValueError, match="time_as_cond"):
    config_json.upgrade({"policy": {"transformer": {"time_as_cond": False}}})


def test_an_older_run_keeps_the_optimiser_state_layout_it_started_with():
  """Runs written before `optim.flat_moments` kept Adam's moments per array: their config.json reads False (their
  checkpoints' layout), while the configs leave it to `optim.resolve_flat_moments` (None), which a new run records."""
  from dpjax import config_json
  old = config_json.get_config(REPO / "experiments" / "pusht_lowdim_transformer_small" / "config.json")
  assert "flat_moments" not in (REPO / "experiments" / "pusht_lowdim_transformer_small" / "config.json").read_text()
  assert old.optim.flat_moments is False
  for variant in ("lowdim", "image", "transformer", "image,transformer", "small", "smoke"):
    assert config_files.get_config(variant).optim.flat_moments is None
  assert config_json.upgrade({"optim": {"flat_moments": True}})["optim"]["flat_moments"] is True
  assert old.rollout.policy_seed_per_checkpoint is False   # added since: in-training rollouts kept seed 0
