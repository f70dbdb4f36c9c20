r"""A trained policy as one compiled-ahead program for a robot: jax + numpy to run it, no dpjax, flax or orbax.

    python -m dpjax.export --checkpoint=runs/quickstart                      # -> runs/quickstart/export/
    python -m dpjax.export --checkpoint=RUN --sampler=ddim --num_inference_steps=10 --platforms=cpu,cuda

The folder holds three files:
  policy.jaxexport   the sampling chain as serialized StableHLO (`jax.export`): (weights, obs, key_data) ->
                     raw actions [B, T, Da]; normalisation, the reverse chain and the sampler's choices are inside.
  weights.npz        its weights, arr_0 .. arr_{n-1} in the order the program takes them (float32).
  policy.json        what goes in and out: each observation's shape and dtype, the actions' shape, which actions
                     of a chunk to execute, the sampler, the run's observation keys, the source checkpoint.

Running it (`load` does this; README "Deploying a policy" has the same without dpjax):
    program = jax.export.deserialize(bytearray(open(f"{folder}/policy.jaxexport", "rb").read()))
    stored = np.load(f"{folder}/weights.npz")
    weights = jax.device_put([stored[f"arr_{i}"] for i in range(len(stored.files))])   # on the device once
    actions = program.call(weights, obs, jax.random.key_data(key))      # obs {name: [B, To, ...]}

The batch size is fixed at export (`--batch_size`, default 1: one robot): each batch size lowers the U-Net's
convolutions its own way (`nets/unet1d.py`). One program can carry several platforms (`--platforms=cpu,cuda`);
JAX picks the one it runs on. The actions are dpjax.sample's for the same observations and key, bit for bit on the
platform that exported them. Serialising needs the `flatbuffers` package (a dependency of dpjax).
"""
import dataclasses
import json
import pathlib
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from dpjax import cli, files, policy as policy_lib
from dpjax.data import normalizer as normalizer_lib
from dpjax.diffusion import sampler, schedules

FORMAT = "dpjax.export/1"
PROGRAM, WEIGHTS, DESCRIPTION = "policy.jaxexport", "weights.npz", "policy.json"
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """The command line's flags, defined only when it runs: `dpjax.rollout` defines flags of the same names, and
  both modules are imported together (training imports the rollout)."""
  flags.DEFINE_string("checkpoint", None, "Training run directory (holding checkpoints/) to export.")
  flags.DEFINE_string("step", None, "Checkpoint step, latest (the default) or best: the one with the highest "
                      "in-training rollout score.")
  flags.DEFINE_bool("ema", True, "Export the EMA weights (default) or, with --noema, the raw weights.")
  flags.DEFINE_enum("sampler", None, list(policy_lib.SAMPLERS), "Reverse-chain sampler (default: the run's config).")
  flags.DEFINE_integer("num_inference_steps", None, "Reverse-chain steps (default: the run's config).")
  flags.DEFINE_enum("timestep_spacing", None, list(schedules.TIMESTEP_SPACINGS),
                    "Which training steps a DDPM/DDIM chain of fewer than K steps visits (default: the run's).")
  flags.DEFINE_enum("compute_dtype", None, list(policy_lib.COMPUTE_DTYPES),
                    "Compute dtype of the networks (default: the run's, usually auto: float32 on CPU, bfloat16 on "
                    "GPU/TPU, for the first of --platforms; bfloat16_matmuls: bfloat16 matmul operands only, for CPUs "
                    "with bfloat16 units); weights stay float32.")
  flags.DEFINE_integer("batch_size", 1, "Observation histories per call, fixed in the program (1: one robot).")
  flags.DEFINE_list("platforms", None, f"Platforms the program runs on, of {', '.join(PLATFORMS)} (default: this "
                    "machine's).")
  flags.DEFINE_string("out", None, "Output folder, which must not exist (default: CHECKPOINT/export).")


@dataclasses.dataclass(frozen=True)
class ExportedPolicy:
  """A loaded export: call it with raw observations {name: [B, To, ...]} and a key for raw actions [B, T, Da]."""
  program: Any                 # jax.export.Exported
  weights: list[jax.Array]    # on the default device
  description: dict

  def __call__(self, obs: Mapping[str, Any], key: jax.Array) -> jax.Array:
    """obs {name: [B, To, ...]} as policy.json says (images uint8, low-dim finite floats), a jax.random.key."""
    return self.program.call(self.weights, check_obs(self.description, obs), jax.random.key_data(key))

  def actions_to_execute(self, actions):
    """The receding-horizon slice of a chunk: [..., T, Da] -> [..., n_action_steps, Da]."""
    first, count = self.description["execute"]["first"], self.description["execute"]["count"]
    return actions[..., first:first + count, :]


def check_platforms(platforms: Sequence[str] | None) -> tuple[str, ...]:
  """The platforms to lower for (default: this machine's), or a ValueError naming the known ones."""
  if not platforms:
    return (jax.default_backend(),)
  unknown = sorted(set(platforms) - set(PLATFORMS))
  if unknown:
    raise ValueError(f"--platforms names {unknown}; choose from {', '.join(PLATFORMS)} (comma-separated).")
  return tuple(dict.fromkeys(platforms))


def describe(policy: policy_lib.Policy, method: str, num_inference_steps: int, batch_size: int,
             platforms: Sequence[str], obs_keys: str = "", source: Mapping[str, Any] | None = None) -> dict:
  """policy.json's content: the call's inputs and outputs and how the program was made."""
  spec = policy.spec
  obs = {name: {"shape": [batch_size, spec.n_obs_steps, *shape],
                "dtype": "uint8" if normalizer_lib.is_image(shape) else "float32"} for name, shape in spec.obs_shapes}
  return {
      "format": FORMAT,
      "obs": obs,
      "key_data": {"shape": [2], "dtype": "uint32", "how": "jax.random.key_data(jax.random.key(seed))"},
      "actions": {"shape": [batch_size, spec.horizon, spec.action_dim], "dtype": "float32"},
      "execute": {"first": spec.n_obs_steps - 1, "count": spec.n_action_steps},
      "sampler": method,
      "num_inference_steps": num_inference_steps,
      "network_calls": sampler.network_calls(method, num_inference_steps),
      "timestep_spacing": spec.timestep_spacing,
      "compute_dtype": policy_lib.compute_dtype_name(spec.compute_dtype, platforms[0]),
      "platforms": list(platforms),
      "obs_keys": obs_keys,
      "jax_version": jax.__version__,
      "source": dict(source or {}),
  }


def export_policy(policy: policy_lib.Policy, *, method: str | None = None, num_inference_steps: int | None = None,
                  batch_size: int = 1, platforms: Sequence[str] | None = None):
  """(jax.export.Exported, its weights [np.ndarray], the policy as exported (its compute dtype resolved), method,
  num_inference_steps) of `policy`'s sampling chain.

  The program is `policy_lib.sample_unchecked` for batches of `batch_size`, taking its weights (params and
  normaliser, flattened) as its first argument so that the program stays small and the weights are plain arrays.
  """
  spec = policy.spec
  method = spec.sampler if method is None else method
  num_inference_steps = spec.num_inference_steps if num_inference_steps is None else num_inference_steps
  sampler.check_method(spec.objective, method)
  sampler.check_num_inference_steps(spec.objective, spec.num_diffusion_steps, num_inference_steps)
  if batch_size < 1:
    raise ValueError(f"--batch_size={batch_size}: give the number of observation histories per call (>= 1).")
  platforms = check_platforms(platforms)
  # "auto" is decided by the first platform the program is for, not by the machine exporting it.
  spec = dataclasses.replace(spec, compute_dtype=policy_lib.compute_dtype_name(spec.compute_dtype, platforms[0]))
  leaves, treedef = jax.tree.flatten((policy.params, policy.normalizer))
  weights = [np.asarray(leaf) for leaf in leaves]

  def sample_actions(weights, obs, key_data):
    params, normalizer = jax.tree.unflatten(treedef, weights)
    chain_policy = policy_lib.Policy(params=params, normalizer=normalizer, spec=spec)
    return policy_lib.sample_unchecked(chain_policy, obs, jax.random.wrap_key_data(key_data), method,
                                       num_inference_steps)

  obs = {name: jax.ShapeDtypeStruct(value.shape, value.dtype)
         for name, value in policy_lib.example_obs(spec, batch_size).items()}
  weight_shapes = [jax.ShapeDtypeStruct(w.shape, w.dtype) for w in weights]
  program = jax.export.export(jax.jit(sample_actions), platforms=platforms)(
      weight_shapes, obs, jax.ShapeDtypeStruct((2,), jnp.uint32))
  return program, weights, policy.replace(spec=spec), method, num_inference_steps


def save(out, program, weights: Sequence[np.ndarray], description: Mapping[str, Any]) -> pathlib.Path:
  """Writes the three files into `out` (which must not exist) through a staging folder renamed when complete, so
  an interrupted export leaves no partial folder."""
  with files.staged_folder(out) as folder:
    (folder / PROGRAM).write_bytes(program.serialize())
    np.savez(folder / WEIGHTS, *weights)
    (folder / DESCRIPTION).write_text(json.dumps(description, indent=2) + "\n")
  return pathlib.Path(out).expanduser()


def load(folder) -> ExportedPolicy:
  """The policy `save` wrote in `folder`."""
  folder = pathlib.Path(folder)
  missing = [name for name in (PROGRAM, WEIGHTS, DESCRIPTION) if not (folder / name).is_file()]
  if missing:
    raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}; export a run there with python -m dpjax.export.")
  description = json.loads((folder / DESCRIPTION).read_text())
  if description.get("format") != FORMAT:
    raise ValueError(f"{folder / DESCRIPTION} is format {description.get('format')!r}, not {FORMAT!r}; export the "
                     "run again with this dpjax.")
  program = jax.export.deserialize(bytearray((folder / PROGRAM).read_bytes()))
  with np.load(folder / WEIGHTS) as stored:   # on the device once, not copied there at every call
    weights = jax.device_put([stored[f"arr_{i}"] for i in range(len(stored.files))])
  return ExportedPolicy(program, weights, description)


def check_obs(description: Mapping[str, Any], obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """`obs` as the program takes it, or a ValueError naming the problem: `dpjax.sample`'s checks of each array
  (uint8 images, finite floating-point low-dim values) and the shapes fixed at export."""
  want = description["obs"]
  expected = ", ".join(f"{name}: {spec['dtype']} {spec['shape']}" for name, spec in want.items())
  if not isinstance(obs, Mapping) or set(obs) != set(want):
    got = sorted(obs) if isinstance(obs, Mapping) else type(obs).__name__
    raise ValueError(f"Observations {got} do not match the exported policy's: {expected}.")
  checked = {}
  for name, spec in want.items():
    value = policy_lib.check_obs_values(name, obs[name], image=spec["dtype"] == "uint8")
    if list(value.shape) != spec["shape"]:
      raise ValueError(f"Observation {name!r} has shape {list(value.shape)}; the exported policy takes {expected} "
                       "(the batch size is fixed at export: --batch_size).")
    checked[name] = value
  return checked


def export_run(run_dir, out=None, *, step: str | None = None, use_ema: bool = True, method: str | None = None,
               num_inference_steps: int | None = None, timestep_spacing: str | None = None,
               compute_dtype: str | None = None, batch_size: int = 1,
               platforms: Sequence[str] | None = None) -> pathlib.Path:
  """Exports a training run's checkpoint (`step`: a number, "latest" or "best") to `out` (default RUN/export)."""
  from dpjax import checkpoint  # imported lazily: orbax is heavy
  from dpjax.data import obs_keys as obs_keys_lib, run_obs_keys
  run_dir = pathlib.Path(run_dir)
  out = files.new_folder(run_dir / "export" if out is None else out)   # before the work; `save` checks again
  checkpoint_step = checkpoint.step_from_flag(step, run_dir, "dpjax.export")
  policy, checkpoint_step = checkpoint.load_policy_and_step(run_dir, use_ema=use_ema, step=checkpoint_step)
  if timestep_spacing:
    policy = policy.replace(spec=dataclasses.replace(policy.spec, timestep_spacing=timestep_spacing))
  if compute_dtype:
    policy = policy.replace(spec=dataclasses.replace(policy.spec, compute_dtype=compute_dtype))
  program, weights, policy, method, num_inference_steps = export_policy(
      policy, method=method, num_inference_steps=num_inference_steps, batch_size=batch_size, platforms=platforms)
  has_config = (run_dir / "config.json").exists()   # an imported PyTorch checkpoint may have none
  keys = obs_keys_lib.format_obs_keys(run_obs_keys(run_dir)) if has_config else ""
  source = {"run": str(run_dir), "step": checkpoint_step, "ema": use_ema}
  description = describe(policy, method, num_inference_steps, batch_size, program.platforms, keys, source)
  return save(out, program, weights, description)


def main(argv):
  cli.start_run_reader(argv, FLAGS.checkpoint)
  from dpjax import checkpoint
  with cli.errors_as_one_line("dpjax.export", (checkpoint.CheckpointError, ValueError, OSError)):
    out = export_run(FLAGS.checkpoint, FLAGS.out, step=FLAGS.step, use_ema=FLAGS.ema, method=FLAGS.sampler,
                     num_inference_steps=FLAGS.num_inference_steps, timestep_spacing=FLAGS.timestep_spacing,
                     compute_dtype=FLAGS.compute_dtype, batch_size=FLAGS.batch_size, platforms=FLAGS.platforms)
  print(f"dpjax.export: wrote {out} (load it with dpjax.export.load, or jax alone: README, Deploying a policy)")


def run_main():
  _define_flags()
  cli.run(main, "dpjax.export")


if __name__ == "__main__":
  run_main()
