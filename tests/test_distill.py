"""Reflow distillation: the student's loss wiring, teacher checks, and a student run end to end."""
import dataclasses
import shutil

import jax
import numpy as np
import pytest

import dpjax
from dpjax import checkpoint, config_json, distill, policy as policy_lib, train, visited_obs
from tests import smoke


@pytest.fixture
def teacher_dir(trained_run):
  """A DDPM smoke run (the shared one, read only): the teacher."""
  return trained_run


def _student_config(data_path, teacher_dir):
  config = smoke.smoke_config(data_path, "flow,smoke")
  config.distill.teacher = str(teacher_dir)
  config.diffusion.num_inference_steps = 1
  return config


def _random_batch(batch_size=6, seed=0):
  rng = np.random.default_rng(seed)
  return {"obs": {"low_dim": rng.uniform(0, 512, (batch_size, 2, 20)).astype(np.float32)},
          "action": rng.uniform(0, 512, (batch_size, 16, 2)).astype(np.float32)}


def test_student_equal_to_a_one_step_teacher_has_zero_loss_at_noise():
  """Teacher chunk = z - v(z, 1) (one Euler step); the student regresses z - chunk at t = 1, which is v(z, 1)
  itself: zero loss iff the teacher's chain and the student's path use the same noise and observations."""
  flow_policy = smoke.random_policy("flow,smoke")
  spec = dataclasses.replace(flow_policy.spec, clip_sample=False, num_inference_steps=1)
  teacher = flow_policy.replace(spec=spec)
  batch, key = _random_batch(), jax.random.key(3)
  at_noise = policy_lib.Distillation(teacher=teacher, fraction_at_noise=1.0)
  loss = policy_lib.loss_fn(teacher.params, spec, teacher.normalizer, batch, key, False, at_noise)
  assert float(loss) < 1e-10
  anywhere = policy_lib.Distillation(teacher=teacher, fraction_at_noise=0.0)
  loss = policy_lib.loss_fn(teacher.params, spec, teacher.normalizer, batch, key, False, anywhere)
  assert float(loss) > 1e-4
  with pytest.raises(ValueError, match="objective='flow'"):
    ddpm = smoke.random_policy("smoke")
    policy_lib.loss_fn(ddpm.params, ddpm.spec, ddpm.normalizer, batch, key, False, at_noise)


def test_obs_noise_shifts_each_low_dim_history_by_one_offset_and_leaves_images_alone():
  rng = np.random.default_rng(0)
  obs = {"low_dim": rng.normal(size=(64, 2, 20)).astype(np.float32),
         "image": rng.integers(0, 255, (64, 2, 8, 8, 3)).astype(np.float32)}
  shapes = (("image", (8, 8, 3)), ("low_dim", (20,)))
  shifted = policy_lib.shift_low_dim_obs(obs, shapes, 0.05, jax.random.key(0))
  np.testing.assert_array_equal(shifted["image"], obs["image"])
  offset = np.asarray(shifted["low_dim"]) - obs["low_dim"]
  np.testing.assert_allclose(offset[:, 0], offset[:, 1], atol=1e-6)      # the motion between frames stays
  assert abs(offset[:, 0].std() - 0.05) < 0.005 and abs(offset[:, 0].mean()) < 0.005
  other = policy_lib.shift_low_dim_obs(obs, shapes, 0.05, jax.random.key(1))
  assert not np.allclose(np.asarray(other["low_dim"]), np.asarray(shifted["low_dim"]))


def test_obs_noise_changes_the_training_loss_only():
  flow_policy = smoke.random_policy("flow,smoke")
  spec = dataclasses.replace(flow_policy.spec, num_inference_steps=1)
  teacher = flow_policy.replace(spec=spec)
  batch, key = _random_batch(), jax.random.key(3)
  loss = lambda d, train: float(policy_lib.loss_fn(teacher.params, spec, teacher.normalizer, batch, key, train, d))
  plain, noisy = (policy_lib.Distillation(teacher=teacher, fraction_at_noise=0.5, obs_noise=s) for s in (0.0, 0.5))
  assert loss(noisy, True) != loss(plain, True)
  assert loss(noisy, False) == loss(plain, False)      # validation measures the student on clean observations


def test_visited_obs_replace_the_asked_share_of_each_history_with_one_draw_for_all_keys():
  rng = np.random.default_rng(0)
  obs = {"low_dim": rng.normal(size=(512, 2, 20)).astype(np.float32),
         "image": rng.integers(0, 255, (512, 2, 4, 4, 3)).astype(np.uint8)}
  visited = {"low_dim": 100.0 + np.arange(3 * 2 * 20, dtype=np.float32).reshape(3, 2, 20),
             "image": np.arange(3, dtype=np.uint8)[:, None, None, None, None] * np.ones((3, 2, 4, 4, 3), np.uint8)}
  key = jax.random.key(0)
  for fraction in (0.0, 0.3, 1.0):
    mixed = jax.device_get(policy_lib.mix_in_visited_obs(obs, visited, fraction, key))
    assert mixed["image"].dtype == np.uint8 and mixed["low_dim"].shape == obs["low_dim"].shape
    replaced = mixed["low_dim"][:, 0, 0] >= 100.0
    assert abs(replaced.mean() - fraction) < 0.06
    np.testing.assert_array_equal(mixed["low_dim"][~replaced], obs["low_dim"][~replaced])
    picks = ((mixed["low_dim"][replaced, 0, 0] - 100.0) / 40).astype(int)   # which visited history each one is
    np.testing.assert_array_equal(mixed["low_dim"][replaced], visited["low_dim"][picks])
    np.testing.assert_array_equal(mixed["image"][replaced], visited["image"][picks])   # the same draw for every key
    if fraction == 1.0:
      assert set(picks) == {0, 1, 2}


def test_visited_obs_change_the_training_loss_only(tmp_path):
  flow_policy = smoke.random_policy("flow,smoke")
  spec = dataclasses.replace(flow_policy.spec, num_inference_steps=1)
  teacher = flow_policy.replace(spec=spec)
  batch, key = _random_batch(), jax.random.key(3)
  visited = {"low_dim": _random_batch(seed=1)["obs"]["low_dim"]}
  loss = lambda d, train: float(policy_lib.loss_fn(teacher.params, spec, teacher.normalizer, batch, key, train, d))
  plain = policy_lib.Distillation(teacher=teacher)
  on_policy = policy_lib.Distillation(teacher=teacher, visited_obs=visited, visited_fraction=1.0)
  assert loss(on_policy, True) != loss(plain, True)
  assert loss(on_policy, False) == loss(plain, False)   # validation measures the student on the demonstrations


def test_student_starts_from_the_teachers_weights_when_shapes_match(data_path, teacher_dir):
  config = _student_config(data_path, teacher_dir)
  student_spec = policy_lib.spec_from_config(config, {"low_dim": (20,)}, 2)
  distillation, _ = distill.load_teacher(config.distill, student_spec)
  assert distillation.teacher.spec.sampler == "ddim" and distillation.teacher.spec.num_inference_steps == 10
  fresh = policy_lib.init_params(student_spec, jax.random.key(1))
  params, copied = distill.initial_params(distillation, fresh)
  assert copied
  jax.tree.map(np.testing.assert_array_equal, params, jax.device_get(distillation.teacher.params))
  config.policy.unet1d.down_dims = (8, 16)
  other = policy_lib.init_params(policy_lib.spec_from_config(config, {"low_dim": (20,)}, 2), jax.random.key(1))
  assert distill.initial_params(distillation, other) == (other, False)


@pytest.mark.parametrize("field, value, message", [
    ("teacher_sampler", "ddpm", "not deterministic"),
    ("teacher_sampler", "euler", "does not apply to a 'ddpm' model"),
    ("teacher_steps", 0, "teacher_steps"),
    ("fraction_at_noise", 1.5, "fraction_at_noise"),
    ("obs_noise", -0.1, "obs_noise=-0.1 must be >= 0"),
    ("teacher_timestep_spacing", "uniform", "teacher_timestep_spacing='uniform' is not one of"),
    ("visited_obs", "nowhere/visited_obs.npz", "nowhere/visited_obs.npz do not exist"),
])
def test_bad_distillation_settings_are_clear_errors(data_path, teacher_dir, field, value, message):
  config = _student_config(data_path, teacher_dir)
  config.distill[field] = value
  with pytest.raises(ValueError, match=message):
    distill.load_teacher(config.distill, policy_lib.spec_from_config(config, {"low_dim": (20,)}, 2))


def test_visited_obs_are_loaded_with_their_share_and_the_share_is_checked(data_path, teacher_dir, tmp_path):
  config = _student_config(data_path, teacher_dir)
  spec = policy_lib.spec_from_config(config, {"low_dim": (20,)}, 2)
  histories = np.random.default_rng(0).uniform(0, 512, (5, 2, 20)).astype(np.float32)
  config.distill.visited_obs = str(visited_obs.save(tmp_path / "a.npz", {"low_dim": histories}, np.arange(5),
                                                    np.zeros(5))) + "," + str(tmp_path / "a.npz")
  config.distill.visited_fraction = 0.25
  distillation, _ = distill.load_teacher(config.distill, spec)
  assert distillation.visited_fraction == 0.25
  np.testing.assert_array_equal(distillation.visited_obs["low_dim"], np.concatenate([histories, histories]))
  config.distill.visited_fraction = 0.0
  with pytest.raises(ValueError, match=r"visited_fraction=0.0 must be in \(0, 1\]"):
    distill.load_teacher(config.distill, spec)


def test_student_must_be_a_flow_policy_with_the_teachers_shapes(data_path, teacher_dir):
  config = _student_config(data_path, teacher_dir)
  config.horizon, config.n_action_steps = 8, 4
  with pytest.raises(ValueError, match=r"horizon \(16 vs 8\), n_action_steps \(8 vs 4\)"):
    distill.load_teacher(config.distill, policy_lib.spec_from_config(config, {"low_dim": (20,)}, 2))
  ddpm_config = smoke.smoke_config(data_path)
  with pytest.raises(ValueError, match="configs/pusht.py:flow"):
    distill.load_teacher(config.distill, policy_lib.spec_from_config(ddpm_config, {"low_dim": (20,)}, 2))


def test_distilled_student_trains_checkpoints_and_samples_in_one_call(data_path, teacher_dir, tmp_path):
  config = _student_config(data_path, teacher_dir)
  histories = _random_batch(32)["obs"]["low_dim"]   # on-policy states, sharded over the test's 8 devices
  config.distill.visited_obs = str(visited_obs.save(tmp_path / "visited" / "visited_obs.npz", {"low_dim": histories},
                                                    np.arange(32), np.zeros(32)))
  final = train.train_and_evaluate(config, tmp_path / "run")
  assert np.isfinite(final["train/loss"]) and np.isfinite(final["val/loss"])
  student, teacher = checkpoint.load_policy(tmp_path / "run"), checkpoint.load_policy(teacher_dir)
  assert (student.spec.objective, student.spec.sampler, student.spec.num_inference_steps) == ("flow", "euler", 1)
  jax.tree.map(np.testing.assert_array_equal, student.normalizer, teacher.normalizer)
  actions = dpjax.sample(student, _random_batch(2)["obs"], jax.random.key(0))
  assert actions.shape == (2, 16, 2) and np.all(np.isfinite(actions))


def test_a_resumed_student_distils_the_teacher_checkpoint_it_started_with(data_path, teacher_dir, tmp_path, capsys):
  teacher = smoke.copy_run(teacher_dir, tmp_path, "teacher")   # checkpoints 2 and 4
  config = _student_config(data_path, teacher)
  config.train.num_steps, config.train.checkpoint_every, config.train.val_every = 2, 2, 0
  train.train_and_evaluate(config, tmp_path / "student")
  recorded = config_json.get_config(tmp_path / "student" / "config.json").distill
  assert recorded.teacher_step == 4 and f"distilling {teacher} step 4 (ddpm" in capsys.readouterr().out
  # The teacher run changes meanwhile (here: its newest checkpoint goes); the resume must not take another one.
  shutil.rmtree(teacher / "checkpoints" / "4")
  config.train.num_steps = 4
  with pytest.raises(checkpoint.CheckpointError, match=rf"No checkpoint for step 4 in {teacher}; available: \[2\]"):
    train.train_and_evaluate(config, tmp_path / "student")
