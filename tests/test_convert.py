"""Import of the original PyTorch Diffusion Policy's checkpoints (dpjax.convert) against reference vectors.

The fixtures (`../shared/fixtures/torch_dp/`, see its README) are reduced-width checkpoints written by the original
code, with the normaliser outputs, noise predictions and a DDIM-10 chain the original computed from them. Skipped on
a laptop without the fixtures or the `torch` extra; a failure in CI.
"""
import copy
import dataclasses
import importlib.util
import os
import pathlib
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

try:
  import torch
  from omegaconf import OmegaConf
except ImportError:
  if os.environ.get("CI"):
    raise
  pytest.skip("needs the torch extra: pip install -e '.[torch]'", allow_module_level=True)

import dpjax  # noqa: E402
from dpjax import convert, policy as policy_lib, train  # noqa: E402
from dpjax.convert import __main__ as convert_cli, payload as payload_lib, torch_config  # noqa: E402
from dpjax.data import normalizer as normalizer_lib, synthetic  # noqa: E402
from dpjax.diffusion import schedules, steps  # noqa: E402
from tests import smoke  # noqa: E402

FIXTURES = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "torch_dp"
NAMES = ("unet", "transformer")
# Parameter counts from the fixtures' README.
PARAMETERS = {"unet": 294_498, "transformer": 43_842}
# float32 networks evaluated by two libraries: measured max errors are 1.1e-6 (U-Net) and 1.2e-7 (transformer).
EPS_ATOL = 1e-5
# Ten DDIM steps compound the noise-prediction error: measured 3.4e-6 (U-Net) in normalised units.
DDIM_ATOL = 1e-5


def _ckpt(name: str) -> pathlib.Path:
  path = FIXTURES / f"pusht_lowdim_{name}_small.ckpt"
  if not path.exists():
    message = f"PyTorch reference checkpoints not found at {FIXTURES} (../shared/fixtures/torch_dp)."
    if os.environ.get("CI"):
      pytest.fail(message)
    pytest.skip(message)
  return path


def _vectors(name: str) -> dict:
  _ckpt(name)
  return dict(np.load(FIXTURES / f"pusht_lowdim_{name}_small_vectors.npz"))


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
  """Both fixtures converted through the command line, once: name -> run directory."""
  out = {}
  for name in NAMES:
    out[name] = tmp_path_factory.mktemp("converted") / name
    convert_cli.main([f"--from_torch={_ckpt(name)}", f"--out={out[name]}"])
  return out


@pytest.fixture(scope="module")
def unet_payload():
  return payload_lib.read_payload(_ckpt("unet"))


def _eps(policy, obs_raw, x, k):
  net = policy_lib.PolicyNet(policy.spec)
  obs = normalizer_lib.normalize_obs(policy.normalizer, {"low_dim": obs_raw})
  return net.apply({"params": policy.params}, obs, jnp.asarray(x), jnp.asarray(k, jnp.int32))


@pytest.mark.parametrize("name", NAMES)
def test_normalizer_reproduces_the_original(run_dirs, name):
  vectors = _vectors(name)
  policy = dpjax.load_policy(run_dirs[name])
  obs = normalizer_lib.normalize_obs(policy.normalizer, {"low_dim": vectors["obs_raw"]})["low_dim"]
  np.testing.assert_allclose(obs, vectors["obs_normalized"], rtol=0, atol=1e-6)
  agent_xy = normalizer_lib.normalize(policy.normalizer["action"], vectors["obs_raw"][..., 18:20])
  np.testing.assert_allclose(agent_xy, vectors["action_normalized_of_obs_xy"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("use_ema", [True, False], ids=["ema", "raw"])
def test_networks_reproduce_the_original_noise_predictions(run_dirs, name, use_ema):
  vectors = _vectors(name)
  policy = dpjax.load_policy(run_dirs[name], use_ema=use_ema)
  assert policy_lib.count_params(policy.params) == PARAMETERS[name]
  eps = _eps(policy, vectors["obs_raw"], vectors["x"], vectors["k"])
  np.testing.assert_allclose(eps, vectors["eps_ema" if use_ema else "eps_raw"], rtol=0, atol=EPS_ATOL)


@pytest.mark.parametrize("name", NAMES)
def test_ddim10_chain_reproduces_the_original(run_dirs, name):
  vectors = _vectors(name)
  policy = dpjax.load_policy(run_dirs[name])
  schedule = policy_lib.make_schedule(policy.spec)
  timesteps = schedules.inference_timesteps(policy.spec.num_diffusion_steps, 10)
  np.testing.assert_array_equal(timesteps, vectors["ddim10_timesteps"])
  # The original's chain started from a given x; dpjax.sample draws its own, so the steps run here one by one.
  x, step_ratio = jnp.asarray(vectors["ddim10_x_init"]), policy.spec.num_diffusion_steps // 10
  for k in timesteps:
    eps = _eps(policy, vectors["obs_raw"], x, np.full((4,), k))
    x = steps.ddim_step(schedule, x, eps, k, k - step_ratio, None, clip_sample=policy.spec.clip_sample)
  np.testing.assert_allclose(x, vectors["ddim10_x0_normalized"], rtol=0, atol=DDIM_ATOL)
  actions = normalizer_lib.unnormalize(policy.normalizer["action"], x)
  pixel_atol = DDIM_ATOL / float(np.min(policy.normalizer["action"]["scale"]))  # the same error in raw units
  np.testing.assert_allclose(actions, vectors["ddim10_action_raw"], rtol=0, atol=pixel_atol)
  sampled = dpjax.sample(policy, {"low_dim": vectors["obs_raw"]}, jax.random.key(0), method="ddim",
                         num_inference_steps=10)
  assert sampled.shape == (4, 16, 2) and np.isfinite(np.asarray(sampled)).all()


@pytest.mark.slow
def test_run_dir_fine_tunes_with_dpjax_train(run_dirs, tmp_path):
  """`python -m dpjax.train --config=RUN_DIR/config.py --workdir=RUN_DIR` resumes the converted step-0 checkpoint."""
  run_dir = tmp_path / "run"
  convert_cli.main([f"--from_torch={_ckpt('transformer')}", f"--out={run_dir}"])
  module_spec = importlib.util.spec_from_file_location("converted_config", run_dir / "config.py")
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config()
  config.data.path = str(synthetic.write_synthetic_pusht(tmp_path / "pusht.zarr", smoke.SMOKE_EPISODE_LENGTHS,
                                                         image=False, values="random_walk"))
  config.data.val_ratio = 0.2
  config.train.batch_size, config.train.num_steps, config.train.checkpoint_every = 8, 2, 2
  config.train.log_every, config.train.val_every = 1, 0
  final = train.train_and_evaluate(config, run_dir, devices=jax.devices()[:1])
  assert np.isfinite(final["train/loss"])
  before = dpjax.load_policy(run_dir, use_ema=False, step=0)
  after = dpjax.load_policy(run_dir, use_ema=False, step=2)
  assert before.spec == after.spec
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before.params, after.params)
  assert any(jax.tree.leaves(changed))


def test_converting_into_an_existing_run_or_a_file_is_refused(run_dirs, tmp_path):
  with pytest.raises(SystemExit, match=r"already exists; delete it or choose another --out\.$"):
    convert_cli.main([f"--from_torch={_ckpt('unet')}", f"--out={run_dirs['unet']}"])
  (tmp_path / "afile").write_text("")
  with pytest.raises(SystemExit, match=r"^dpjax.convert: .*afile is a file, so .*afile/run cannot be made there"):
    convert_cli.main([f"--from_torch={_ckpt('unet')}", f"--out={tmp_path / 'afile' / 'run'}"])


def test_an_interrupted_conversion_leaves_no_run_and_can_be_run_again(tmp_path, monkeypatch):
  from dpjax.convert import run_dir as run_dir_lib

  def interrupted(*args, **kwargs):   # Ctrl-C after the checkpoint, before conversion.json
    raise KeyboardInterrupt

  monkeypatch.setattr(run_dir_lib, "json", types.SimpleNamespace(dumps=interrupted))
  with pytest.raises(KeyboardInterrupt):
    convert_cli.main([f"--from_torch={_ckpt('unet')}", f"--out={tmp_path / 'run'}"])
  assert not list(tmp_path.iterdir())   # neither the run nor its staging folder
  monkeypatch.undo()
  convert_cli.main([f"--from_torch={_ckpt('unet')}", f"--out={tmp_path / 'run'}"])
  assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
      "checkpoints", "config.json", "config.py", "conversion.json", "policy_spec.json", "torch_config.yaml"]


def _with(payload, **cfg_updates):
  cfg = copy.deepcopy(payload.cfg)
  for key, value in cfg_updates.items():
    OmegaConf.update(cfg, key, value, merge=False)
  return dataclasses.replace(payload, cfg=cfg)


@pytest.mark.parametrize("updates, message", [
    ({"policy._target_": "diffusion_policy.policy.diffusion_unet_hybrid_image_policy.DiffusionUnetHybridImagePolicy",
      "task.name": "pusht_image"}, r"DiffusionUnetHybridImagePolicy \(task 'pusht_image'\).*Image policies"),
    ({"task.name": "kitchen_lowdim"}, r"task 'kitchen_lowdim'.*supported: .*DiffusionUnetLowdimPolicy"),
    ({"policy.model.cond_predict_scale": False}, r"policy.model.cond_predict_scale=False \(dpjax supports True\)"),
    ({"n_latency_steps": 1}, r"n_latency_steps=1 \(dpjax supports 0\)"),
    ({"policy.noise_scheduler.prediction_type": "v_prediction"}, r"prediction_type='v_prediction'"),
    ({"policy.noise_scheduler.variance_type": "fixed_large"}, r"variance_type='fixed_large'"),
])
def test_unsupported_checkpoints_are_clear_errors(unet_payload, updates, message):
  with pytest.raises(convert.UnsupportedCheckpointError, match=message):
    convert.convert_payload(_with(unet_payload, **updates))


def test_scheduler_settings_are_carried_over(unet_payload):
  converted = convert.convert_payload(unet_payload)
  assert (converted.spec.beta_schedule, converted.spec.num_diffusion_steps, converted.spec.clip_sample,
          converted.spec.prediction_type, converted.spec.sampler) == ("squaredcos_cap_v2", 100, True, "epsilon", "ddpm")
  ddim = _with(unet_payload, **{"policy.noise_scheduler._target_": "diffusers.schedulers.scheduling_ddim.DDIMScheduler",
                                "policy.noise_scheduler.set_alpha_to_one": True, "policy.num_inference_steps": 10})
  converted = convert.convert_payload(ddim)
  assert (converted.spec.sampler, converted.spec.num_inference_steps) == ("ddim", 10)
  with pytest.raises(convert.UnsupportedCheckpointError, match=r"set_alpha_to_one=False \(dpjax supports True\)"):
    convert.convert_payload(_with(ddim, **{"policy.noise_scheduler.set_alpha_to_one": False}))


@pytest.mark.parametrize("value, expected", [(90, 90), (None, 0), (17, 17)])
def test_max_train_episodes_null_means_every_episode(unet_payload, value, expected):
  # The original keeps all training episodes for max_train_episodes=None; dpjax spells that 0.
  cfg = _with(unet_payload, **{"task.dataset.max_train_episodes": value}).cfg
  _, overrides, _ = torch_config.config_overrides(cfg)
  assert overrides["data.max_train_episodes"] == expected
  assert torch_config.build_config("lowdim", overrides).data.max_train_episodes == expected


def test_training_fields_the_cfg_lacks_keep_dpjax_defaults(unet_payload):
  cfg = copy.deepcopy(unet_payload.cfg)
  OmegaConf.set_struct(cfg, False)
  cfg.task.dataset.pop("max_train_episodes", None)
  _, overrides, _ = torch_config.config_overrides(cfg)
  assert "data.max_train_episodes" not in overrides


def test_state_dict_that_does_not_map_one_to_one_names_the_keys(unet_payload):
  state = dict(unet_payload.ema_model)
  state["model.extra_layer.weight"] = np.zeros((2, 2), np.float32)
  state["obs_encoder.conv.weight"] = np.zeros((2, 2), np.float32)
  del state["model.final_conv.1.bias"]
  broken = dataclasses.replace(unet_payload, ema_model=state)
  with pytest.raises(convert.UnsupportedCheckpointError,
                     match=r"model\.extra_layer\.weight', 'obs_encoder\.conv\.weight'.*denoiser/final_conv/bias"):
    convert.convert_payload(broken)


def test_payload_without_ema_weights_is_a_clear_error(tmp_path):
  with torch.serialization.safe_globals(payload_lib.safe_globals()):
    raw = torch.load(_ckpt("unet"), map_location="cpu", weights_only=True)
  del raw["state_dicts"]["ema_model"]
  path = tmp_path / "no_ema.ckpt"
  torch.save(raw, path)
  with pytest.raises(convert.UnsupportedCheckpointError, match=r"no state_dicts\['ema_model'\].*use_ema"):
    payload_lib.read_payload(path)


def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path):
  path = tmp_path / "notes.ckpt"
  path.write_bytes(b"not a checkpoint")
  with pytest.raises(convert.UnsupportedCheckpointError, match="not a Diffusion Policy workspace checkpoint"):
    payload_lib.read_payload(path)


@pytest.mark.parametrize("expression, value", [
    (" 2 if False or True else 20 + 2", 2), ("20*2 if True else None", 40), ("2-1+0", 1), ("8-1", 7),
    ("None", None), ("1 < 2 <= 2", True), ("not 0 and 3", 3),
])
def test_safe_eval_handles_the_configs_arithmetic(expression, value):
  assert payload_lib.safe_eval(expression) == value


@pytest.mark.parametrize("expression", ["__import__('os').system('true')", "(1).__class__", "[x for x in ()]"])
def test_safe_eval_refuses_anything_but_arithmetic(expression):
  with pytest.raises(ValueError, match="does not evaluate"):
    payload_lib.safe_eval(expression)
