"""python -m dpjax.export: a policy as one serialized program that jax alone runs, with dpjax.sample's actions."""
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from dpjax import checkpoint, export, policy as policy_lib
from tests import smoke
from tests.conftest import REPO_ROOT

IMAGE_SHAPES = (("agent_pos", (2,)), ("image", (96, 96, 3)))


def _obs(spec, batch_size):
  return smoke.random_batch(spec, batch_size, seed=0)["obs"]


@pytest.mark.parametrize("variant, obs_shapes, method, steps", [
    ("smoke", (("low_dim", (20,)),), "ddpm", 4),            # stochastic: the key's draws, as dpjax.sample's
    ("smoke", (("low_dim", (20,)),), "ddim", 3),
    ("transformer,smoke", (("low_dim", (20,)),), "ddim", 2),
    ("flow,image,smoke", IMAGE_SHAPES, "euler", 2),
])
def test_saved_program_gives_sample_actions_bit_for_bit(tmp_path, variant, obs_shapes, method, steps):
  policy = smoke.random_policy(variant, obs_shapes)
  program, weights, exported, method, steps = export.export_policy(policy, method=method, num_inference_steps=steps,
                                                                   batch_size=3)
  description = export.describe(exported, method, steps, 3, program.platforms)
  loaded = export.load(export.save(tmp_path / "export", program, weights, description))
  obs, key = _obs(policy.spec, 3), jax.random.key(7)
  actions = np.asarray(loaded(obs, key))
  np.testing.assert_array_equal(actions, policy_lib.sample(policy, obs, key, method=method, num_inference_steps=steps))
  assert actions.shape == tuple(loaded.description["actions"]["shape"]) == (3, policy.spec.horizon, 2)
  spec = policy.spec
  assert loaded.actions_to_execute(actions).shape == (3, spec.n_action_steps, 2)
  np.testing.assert_array_equal(loaded.actions_to_execute(actions),
                                policy_lib.action_steps_to_execute(spec, actions))
  if method == "ddpm":   # another key, other draws
    assert not np.array_equal(np.asarray(loaded(obs, jax.random.key(8))), actions)


def test_one_program_for_cpu_and_cuda_runs_here_and_checks_its_inputs(tmp_path, monkeypatch):
  policy = smoke.random_policy()
  program, weights, exported, method, steps = export.export_policy(policy, method="ddim", num_inference_steps=2,
                                                                   platforms=["cpu", "cuda"])
  assert program.platforms == ("cpu", "cuda")
  description = export.describe(exported, method, steps, 1, program.platforms)
  assert description["compute_dtype"] == "float32" and description["obs"]["low_dim"]["shape"] == [1, 2, 20]
  loaded = export.load(export.save(tmp_path / "export", program, weights, description))
  obs = _obs(policy.spec, 1)
  np.testing.assert_array_equal(loaded(obs, jax.random.key(0)),
                                policy_lib.sample(policy, obs, jax.random.key(0), method="ddim", num_inference_steps=2))
  with pytest.raises(ValueError, match=r"'low_dim' has shape \[2, 2, 20\]; the exported policy takes low_dim: "
                                       r"float32 \[1, 2, 20\] \(the batch size is fixed at export"):
    loaded(_obs(policy.spec, 2), jax.random.key(0))
  with pytest.raises(ValueError, match=r"Observations \['image'\] do not match"):
    loaded({"image": obs["low_dim"]}, jax.random.key(0))
  with pytest.raises(ValueError, match=r"'low_dim' has 2 non-finite value"):   # as dpjax.sample refuses it
    loaded({"low_dim": np.where(np.arange(20) == 3, np.nan, obs["low_dim"])}, jax.random.key(0))
  with pytest.raises(ValueError, match=r"--platforms names \['gpu'\]; choose from cpu, cuda, rocm, tpu"):
    export.export_policy(policy, platforms=["gpu"])
  with pytest.raises(FileExistsError, match="already exists"):
    export.save(tmp_path / "export", program, weights, description)
  # An export that fails half-way leaves nothing: no folder, no staging leftovers.
  with pytest.raises(OSError, match="disk full"):
    with monkeypatch.context() as patch:
      patch.setattr(export.np, "savez", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
      export.save(tmp_path / "second", program, weights, description)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
  (tmp_path / "export" / export.WEIGHTS).unlink()
  with pytest.raises(FileNotFoundError, match=r"lacks weights.npz; export a run there"):
    export.load(tmp_path / "export")


STANDALONE = """
import sys
for name in ("dpjax", "flax", "orbax", "optax", "grain", "ml_collections"):
  sys.modules[name] = None   # importing any of them now fails: the program needs jax and numpy only
import json, jax, numpy as np
folder, seed = sys.argv[1], int(sys.argv[2])
program = jax.export.deserialize(bytearray(open(f"{folder}/policy.jaxexport", "rb").read()))
stored = np.load(f"{folder}/weights.npz")
weights = jax.device_put([stored[f"arr_{i}"] for i in range(len(stored.files))])
obs = {k: np.asarray(v) for k, v in np.load(f"{folder}/obs.npz").items()}
np.save(f"{folder}/actions.npy", program.call(weights, obs, jax.random.key_data(jax.random.key(seed))))
"""


def test_cli_exports_a_run_that_jax_alone_runs(trained_run, tmp_path):
  smoke.copy_run(trained_run, tmp_path)
  command = [sys.executable, "-m", "dpjax.export", f"--checkpoint={tmp_path / 'run'}", "--sampler=ddim",
             "--num_inference_steps=3", "--batch_size=2"]
  done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  folder = tmp_path / "run" / "export"
  description = json.loads((folder / "policy.json").read_text())
  assert description["source"] == {"run": str(tmp_path / "run"), "step": 4, "ema": True}
  assert description["obs_keys"] == "low_dim=keypoint+state[:2]" and description["network_calls"] == 3
  assert description["execute"] == {"first": 1, "count": 8} and description["platforms"] == ["cpu"]
  trained = checkpoint.load_policy(tmp_path / "run")
  obs = _obs(trained.spec, 2)
  np.savez(folder / "obs.npz", **obs)
  standalone = subprocess.run([sys.executable, "-c", STANDALONE, str(folder), "5"], capture_output=True, text=True,
                              timeout=600)
  assert standalone.returncode == 0, standalone.stderr[-3000:]
  want = policy_lib.sample(trained, obs, jax.random.key(5), method="ddim", num_inference_steps=3)
  np.testing.assert_array_equal(np.load(folder / "actions.npy"), want)
  np.testing.assert_array_equal(export.load(folder)(obs, jax.random.key(5)), want)
  again = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
  assert again.returncode != 0 and "export already exists; delete it or choose another --out" in again.stderr
  assert len(again.stderr.strip().splitlines()) == 1, again.stderr   # one line, no traceback


def test_imports_beside_the_other_command_lines():
  """Its flags share names with dpjax.rollout's, which training imports: defined only when its command line runs."""
  done = subprocess.run([sys.executable, "-c", "import dpjax.export, dpjax.rollout, dpjax.train"], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
