"""The README cannot drift: its commands name real modules, flags, config fields, make targets and files, use run
directories an earlier command creates, run in the venv, and its Python snippets run as written (against a tiny
trained run in place of the quickstart's)."""
import pathlib
import re
import shlex

import numpy as np
import pytest

from dpjax import config_files, export, train
from dpjax.data import replay
from tests import smoke

REPO = pathlib.Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
# Flags every absl program has.
ABSL_FLAGS = {"verbosity", "v", "logtostderr", "alsologtostderr", "log_dir", "helpfull", "help", "helpshort"}
# Commands whose targets are placeholders or the user's own files, not paths in this repository.
PLACEHOLDER = re.compile(r"PATH|\.ckpt$|^~")


def code_blocks(language: str) -> list[str]:
  return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def shell_commands() -> list[list[str]]:
  """Every bash command of the README, in order, as tokens (continuations joined, comments dropped)."""
  commands = []
  for block in code_blocks("bash"):
    for line in block.replace("\\\n", " ").splitlines():
      for part in re.split(r"\s&&\s", line):
        tokens = shlex.split(part, comments=True)
        if tokens:
          commands.append(tokens)
  return commands


def module_flags(module: str) -> set[str]:
  """Flag names a `python -m` module defines (absl DEFINE_* or argparse), read from its source."""
  path = REPO / (module.replace(".", "/") + ".py")
  if not path.exists():
    path = REPO / module.replace(".", "/") / "__main__.py"
  assert path.exists(), f"README runs `python -m {module}`, which does not exist"
  source = path.read_text()
  return set(re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", source)) | set(re.findall(r"add_argument\(\"--(\w+)\"", source))


def _flag(token: str) -> tuple[str, str]:
  name, _, value = token[2:].partition("=")
  return name, value


def _config(value: str):
  path, _, variant = value.partition(":")
  module = config_files.load_module(REPO / path)
  return module.get_config(variant or None)


def _has_field(config, dotted: str) -> bool:
  node = config
  for part in dotted.split("."):
    if part not in node:
      return False
    node = node[part]
  return True


def test_every_command_names_real_modules_flags_fields_targets_and_files():
  makefile = (REPO / "Makefile").read_text()
  targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.M))
  activated = False
  for tokens in shell_commands():
    command = " ".join(tokens)
    if tokens[:2] == ["source", ".venv/bin/activate"]:
      activated = True
    elif tokens[0] == "make":
      assert set(t for t in tokens[1:] if "=" not in t) <= targets, command
    elif tokens[0] in ("bash", "python") and tokens[1].endswith((".sh", ".py")):
      assert (REPO / tokens[1]).exists(), command
    if "-m" in tokens and tokens[tokens.index("-m") + 1].startswith("dpjax"):
      assert activated or tokens[0].startswith(".venv/"), f"{command}: runs outside the venv (activate it first)"
      module = tokens[tokens.index("-m") + 1]
      known = module_flags(module) | ABSL_FLAGS
      config = None
      for token in tokens[tokens.index("-m") + 2:]:
        if not token.startswith("--"):
          continue
        name, value = _flag(token)
        if name == "config" and value.startswith("configs/"):
          config = _config(value)
        elif name.startswith("config.") and module == "dpjax.train":
          assert config is None or _has_field(config, name[len("config."):]), f"{command}: no field {name}"
        else:
          assert name in known or name.removeprefix("no") in known, f"{command}: {module} has no flag --{name}"


def test_run_directories_are_created_before_they_are_used():
  created = {"runs/quickstart"}   # `make train`'s WORKDIR
  assert "WORKDIR ?= runs/quickstart" in (REPO / "Makefile").read_text()
  for tokens in shell_commands():
    flags = dict(_flag(t) for t in tokens if t.startswith("--"))
    for used in (flags.get("checkpoint"), flags.get("config.distill.teacher")):
      assert used is None or used in created, f"{' '.join(tokens)}: {used} is not created by an earlier command"
    for made in (flags.get("workdir"), flags.get("out") if "dpjax.convert" in tokens else None):
      if made:
        created.add(made)
  for snippet in code_blocks("python"):
    for used in re.findall(r"load_policy\(\"([^\"]+)\"\)", snippet):
      assert used in created, f"load_policy({used!r}) in the README loads a run no command creates"


@pytest.fixture(scope="module")
def quickstart_run(trained_run, tmp_path_factory):
  """A smoke-sized stand-in for the quickstart's run, at runs/quickstart under a temporary working directory."""
  root = tmp_path_factory.mktemp("readme")
  smoke.copy_run(trained_run, root / "runs", "quickstart")
  export.export_run(root / "runs" / "quickstart")   # "Deploying a policy"'s first command
  # And of "Your own demonstrations"' first run: a robot's three arrays joined as `state`.
  rng = np.random.default_rng(0)
  lengths = smoke.SMOKE_EPISODE_LENGTHS
  arrays = {name: rng.normal(size=(sum(lengths), size)) for name, size in
            (("eef_pos", 3), ("eef_quat", 4), ("gripper_qpos", 2), ("action", 7))}
  replay.write_zarr_replay(root / "my_robot.zarr", arrays, np.cumsum(lengths))
  config = config_files.get_config("smoke", REPO / "configs" / "replay.py")
  config.data.path, config.data.obs_keys = str(root / "my_robot.zarr"), "state=eef_pos+eef_quat+gripper_qpos"
  config.train.num_steps, config.train.val_every = 2, 0
  train.train_and_evaluate(config, root / "runs" / "my_robot")
  return root


def test_python_snippets_run_as_written(quickstart_run, monkeypatch):
  monkeypatch.chdir(quickstart_run)
  namespace = {}
  snippets = code_blocks("python")
  assert snippets
  for snippet in snippets:
    exec(compile(snippet, "README.md", "exec"), namespace)   # in order, sharing names, as a reader pastes them
  assert namespace["execute"].shape == (1, namespace["policy"].spec.n_action_steps, 2)
  assert namespace["controller"].num_plans >= 1
  assert namespace["chunk"].shape == (1, namespace["policy"].spec.horizon, 2)
