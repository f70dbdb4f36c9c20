"""Compiling dpjax for a Cloud TPU slice on a machine without one: does the code run there unchanged, and does it fit?

    make tpu-aot      # once: jax[tpu] (libtpu) at this venv's jax version, in .venv-tpu-aot (~1.6 GB)
    PYTHONPATH=. .venv-tpu-aot/bin/python experiments/bench/tpu_compile.py --topology=v5e:2x4 --variants=lowdim \\
        --out=experiments/tpu_compile/v5e_2x4_lowdim.json

libtpu compiles for a named topology (`jax.experimental.topologies.get_topology_desc`) with no TPU attached:
compile-only devices, nothing runs. For each full-size Push-T variant this builds what `python -m dpjax.train`
builds on that slice (the library's own mesh over all chips, `sharding.make_mesh`; its train step,
`train_step.jit_train_steps`, at the accelerators' 10 steps per dispatch, compute dtype bfloat16 = `auto` on a
TPU; the demonstrations resident on the chips and, as the fallback, batches from the host) and what a controller
runs on one chip (`dpjax.sample`'s chain, weights cast once as `policy.for_sampling` does); with
`--reflow_student` also issue 13's distillation step (a flow student, its DDPM teacher's DDIM-10 chain run on every
batch). It records per program:
compile seconds, XLA's memory plan per chip (arguments, outputs, donated aliases, temporaries, code), XLA's cost
model (flops and bytes accessed; for a loop, one iteration), and the collectives in the train step's loop body.
No timings: those need the chips. Random weights and synthetic shapes (Push-T's: 25,650 steps, 10,726 windows).
"""
import argparse
import dataclasses
import json
import os
import pathlib
import re
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")   # compile-only TPU devices; nothing looks for an attached one

import jax  # noqa: E402  (after JAX_PLATFORMS)
import numpy as np  # noqa: E402
from jax.experimental import topologies  # noqa: E402

from dpjax import bench, config_files, files, hlo, optim, policy, sharding, train_step  # noqa: E402
from dpjax.data import device_data, pusht  # noqa: E402

# Push-T's replay buffer: steps and the training windows of its 90 training episodes (horizon 16).
PUSHT_STEPS, PUSHT_WINDOWS = 25_650, 10_726
# High-bandwidth memory per chip (GiB), by the compile-only devices' kind: Cloud TPU's published sizes.
HBM_GIB = {"TPU v4": 32, "TPU v5 lite": 16, "TPU v5": 95, "TPU v6 lite": 32}


def compile_only_devices(topology: str) -> list:
  """The chips of a TPU slice named like "v5e:2x4" (libtpu's names), as compile-only devices. Exits with a
  one-line message when libtpu is missing, cannot start or does not know the name."""
  try:
    return list(topologies.get_topology_desc(topology, "tpu").devices)
  except RuntimeError as error:   # jax.errors.JaxRuntimeError is one too
    if "not installed" in str(error):
      raise SystemExit(f"No libtpu in this environment ({error}): run `make tpu-aot` and use "
                       ".venv-tpu-aot/bin/python.") from error
    first_line = str(error).splitlines()[0]
    if "INVALID_ARGUMENT" not in first_line:   # e.g. libtpu's lock file, held by another compile or left stale
      raise SystemExit(f"libtpu could not start ({first_line}): it compiles for one process at a time; wait "
                       "for the other one, or remove a stale /tmp/libtpu_lockfile.") from error
    raise SystemExit(f"libtpu cannot compile for topology {topology!r} ({first_line}): name a "
                     "slice like v5e:2x4, v4:2x2x1, v5p:2x2x1 or v6e:2x2.") from error


def abstract(tree, placement):
  """Arrays, numpy arrays or ShapeDtypeStructs -> ShapeDtypeStructs placed by `placement`."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=placement), tree)


def bfloat16_setup(variant: str, words: str = ""):
  """(config, per-step observation shapes, spec) of a full-size Push-T variant in bfloat16, `auto` on a TPU;
  `words` adds variant words (",flow")."""
  config = config_files.get_config(bench.config_arg(variant, False) + words)
  config.policy.compute_dtype = "bfloat16"
  obs_shapes = pusht.OBS_SHAPES[config.data.obs_type]
  return config, obs_shapes, policy.spec_from_config(config, obs_shapes, bench.ACTION_DIM)


def host_batches(spec: policy.PolicySpec, batch_size: int, steps: int, placement):
  """The abstract stack of `steps` raw global batches one dispatch takes when the host feeds them."""
  one = bench.synthetic_batch(spec, batch_size, np.random.default_rng(0))
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct((steps, *x.shape), x.dtype, sharding=placement), one)


def program_record(compiled, seconds: float) -> dict:
  """Compile seconds, XLA's memory plan per device (and its `peak_bytes`), its cost model of a compiled program
  (None where the compiler has none: XLA:GPU without a GPU) and, for programs with a loop (the train steps' scan,
  the sampling chain), the kernels and `hlo.bytes_moved` of one iteration of each loop body, summed."""
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  text = compiled.as_text()
  bodies = hlo.while_bodies(text)
  record = {"compile_s": round(seconds, 1),
            "memory_per_chip_bytes": {name: int(getattr(memory, f"{name}_size_in_bytes"))
                                      for name in ("argument", "output", "alias", "temp", "generated_code")},
            "flops": None if cost is None else float(cost.get("flops", 0.0)),
            "bytes_accessed": None if cost is None else float(cost.get("bytes accessed", 0.0)),
            "loop_body_kernels": sum(hlo.kernel_count(text, body) for body in bodies) if bodies else None,
            "loop_body_bytes_moved": sum(hlo.bytes_moved(text, body) for body in bodies) if bodies else None}
  record["peak_per_chip_bytes"] = peak_bytes(record)
  return record


def peak_bytes(record: dict) -> int:
  """Device memory the program needs at once: its arguments, its outputs less those donated into arguments, its
  temporaries and code."""
  m = record["memory_per_chip_bytes"]
  return m["argument"] + m["output"] - m["alias"] + m["temp"] + m["generated_code"]


def loop_body_collectives(hlo_text: str) -> dict:
  """`hlo.collectives` of every while-loop body of an optimised module (the train steps' `lax.scan`), summed."""
  total = {}
  for body in hlo.while_bodies(hlo_text):
    for op, found in hlo.collectives(hlo_text, body).items():
      entry = total.setdefault(op, {"count": 0, "bytes": 0})
      entry["count"] += found["count"]
      entry["bytes"] += found["bytes"]
  return total


def reflow_distillation(variant: str, student_config, placement) -> policy.Distillation:
  """A frozen DDPM teacher of `variant` (abstract weights), set to run the chain `distill.load_teacher` gives it by
  default: DDIM with config.distill.teacher_steps steps on each training batch."""
  _, obs_shapes, teacher_spec = bfloat16_setup(variant)
  spec = dataclasses.replace(teacher_spec, sampler="ddim",
                             num_inference_steps=int(student_config.distill.teacher_steps))
  teacher = policy.Policy(params=jax.eval_shape(lambda key: policy.init_params(spec, key), jax.random.key(1)),
                          normalizer=bench.synthetic_normalizer(obs_shapes, np.random.default_rng(0)), spec=spec)
  return abstract(policy.Distillation(teacher=teacher,
                                      fraction_at_noise=float(student_config.distill.fraction_at_noise)), placement)


def train_programs(variant: str, devices: list, placements, steps_per_dispatch: int,
                   flat_moments: bool | None = None, student: bool = False, split: bool = False) -> dict:
  """What `python -m dpjax.train` compiles for `variant` over `devices`, per data placement; `flat_moments` as
  config.optim.flat_moments (None: the library's choice for these chips), `split` as
  config.train.shard_ema_and_moments. `student`: the reflow student's step instead (issue 13: a flow network of the
  same size learning its DDPM teacher's map, `reflow_distillation`)."""
  config, obs_shapes, spec = bfloat16_setup(variant, ",flow" if student else "")
  config.optim.flat_moments = flat_moments
  mesh = sharding.make_mesh(devices)
  replicated, stacked = sharding.replicated(mesh), sharding.stacked_batch_sharding(mesh)
  batch_size = int(config.train.batch_size)
  sharding.check_batch_size(batch_size, mesh)
  params = jax.eval_shape(lambda key: policy.init_params(spec, key), jax.random.key(0))
  backend = devices[0].platform   # "tpu": the optimiser's layout as training on these chips picks it
  split = train_step.resolve_split(split, mesh)
  optimizer = optim.make_optimizer(config.optim, params, spec.denoiser, int(config.train.num_steps), backend, split)
  state_shardings = train_step.state_sharding(params, optimizer, mesh, split)
  state = train_step.abstract_train_state(params, optimizer, state_shardings)
  normalizer = abstract(bench.synthetic_normalizer(obs_shapes, np.random.default_rng(0)), replicated)
  key = abstract(jax.random.key(0), replicated)
  steps_fn = train_step.jit_train_steps(spec, optimizer, config.ema, state_shardings, stacked, replicated)
  distillation = reflow_distillation(variant, config, replicated) if student else None
  name = f"{variant} reflow student" if student else variant
  record = {"num_params": policy.count_params(params), "batch_size": batch_size,
            "per_chip_batch": batch_size // len(devices), "steps_per_dispatch": steps_per_dispatch,
            "flat_moments": optim.moments_are_flat(state.opt_state), "shard_ema_and_moments": split}
  for placement in placements:
    if placement == "device":
      obs = {k: jax.ShapeDtypeStruct((PUSHT_STEPS, *shape), np.uint8 if k == "image" else np.float32,
                                     sharding=replicated) for k, shape in obs_shapes.items()}
      data = device_data.DeviceWindows(
          obs=obs, action=jax.ShapeDtypeStruct((PUSHT_STEPS, bench.ACTION_DIM), np.float32, sharding=replicated),
          steps=jax.ShapeDtypeStruct((PUSHT_WINDOWS, spec.horizon), np.int32, sharding=replicated),
          n_obs_steps=spec.n_obs_steps)
      batches = jax.ShapeDtypeStruct((steps_per_dispatch, batch_size), np.int32, sharding=stacked)
    else:
      data, batches = None, host_batches(spec, batch_size, steps_per_dispatch, stacked)
    start = time.perf_counter()
    compiled = steps_fn.lower(state, batches, key, normalizer, data, distillation).compile()
    part = program_record(compiled, time.perf_counter() - start)
    part["loop_body_collectives"] = loop_body_collectives(compiled.as_text())
    record[f"train_{placement}_data"] = part
    print(f"{name} train, data on {placement}: compile {part['compile_s']} s, "
          f"{part['peak_per_chip_bytes'] / 2**30:.2f} GiB per chip, collectives {part['loop_body_collectives']}",
          flush=True)
  return record


def sampling_programs(variant: str, device, samplers, batch_sizes) -> dict:
  """`dpjax.sample`'s chain for `variant` on one chip, per sampler and batch size."""
  _, obs_shapes, spec = bfloat16_setup(variant)
  rng = np.random.default_rng(0)
  one_chip = jax.sharding.SingleDeviceSharding(device)
  pol = policy.Policy(params=jax.eval_shape(lambda key: policy.init_params(spec, key), jax.random.key(0)),
                      normalizer=bench.synthetic_normalizer(obs_shapes, rng), spec=spec)
  pol = abstract(jax.eval_shape(policy.for_sampling, pol), one_chip)
  key = abstract(jax.random.key(0), one_chip)
  record = {}
  for method, steps in samplers:
    for batch in batch_sizes:
      obs = abstract(bench.synthetic_obs(obs_shapes, (batch, spec.n_obs_steps), rng), one_chip)
      start = time.perf_counter()
      compiled = policy._sample_batched.lower(pol, obs, key, method, steps).compile()
      part = program_record(compiled, time.perf_counter() - start)
      record[f"{method}{steps}_b{batch}"] = part
      print(f"{variant} {method}-{steps} batch {batch}: compile {part['compile_s']} s, "
            f"{part['peak_per_chip_bytes'] / 2**20:.0f} MiB", flush=True)
  if spec.denoiser == "unet1d" and samplers:
    # config.policy.fused_sampling's Pallas kernels are CUDA's (`lax.platform_dependent`): on a TPU the chain must
    # compile with the XLA layers instead, calling no Pallas (Mosaic) or Triton kernel.
    fused = dataclasses.replace(pol, spec=dataclasses.replace(spec, fused_sampling=True))
    method, steps = samplers[0]
    obs = abstract(bench.synthetic_obs(obs_shapes, (1, spec.n_obs_steps), rng), one_chip)
    text = policy._sample_batched.lower(fused, obs, key, method, steps).compile().as_text()
    record["fused_sampling_custom_calls"] = sorted(set(re.findall(r'custom_call_target="([^"]*)"', text)))
    print(f"{variant} with fused_sampling: compiles, custom calls {record['fused_sampling_custom_calls']}", flush=True)
  return record


def compile_only_gpus(spec: str) -> list:
  """`count` NVIDIA GPUs of one host, named like "h100:8" (`deviceless_gpu.TARGETS`), as compile-only devices:
  XLA:GPU's program for them, with its untuned GEMM choices, from jax's CUDA plugin (`make gpu-aot`)."""
  deviceless_gpu = config_files.load_module(pathlib.Path(__file__).with_name("deviceless_gpu.py"))
  kind, _, count = spec.partition(":")
  if kind not in deviceless_gpu.TARGETS or not count.isdigit() or int(count) < 1:
    raise SystemExit(f"--gpus={spec!r}: name a GPU and a count, e.g. h100:8 ({sorted(deviceless_gpu.TARGETS)}).")
  try:
    return list(topologies.get_topology_desc(platform="cuda", target_config=deviceless_gpu.TARGETS[kind],
                                             topology=f"1x1x{count}").devices)
  except RuntimeError as error:
    raise SystemExit(f"No CUDA compiler in this environment ({str(error).splitlines()[0]}): run `make gpu-aot` and "
                     "use .venv-gpu-aot/bin/python.") from error


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--topology", default="v5e:2x4", help="libtpu's name of a slice, e.g. v5e:2x4, v4:2x2x1")
  parser.add_argument("--gpus", default=None,
                      help="compile for this many GPUs of one host instead, e.g. h100:8 (needs `make gpu-aot`)")
  parser.add_argument("--variants", default="lowdim,transformer,image,image_transformer")
  parser.add_argument("--placements", default="device,host", help="where the demonstrations live")
  parser.add_argument("--samplers", default="ddpm:100,ddim:10")
  parser.add_argument("--sample_batch_sizes", default="1,50")
  parser.add_argument("--flat_moments", choices=("true", "false"), default=None,
                      help="Adam's moments flat or per array (default: what training on these chips picks)")
  parser.add_argument("--shard_ema_and_moments", action="store_true",
                      help="the EMA weights and optimiser state split over the chips (config.train's field)")
  parser.add_argument("--reflow_student", action="store_true",
                      help="also the reflow student's train step (its teacher's DDIM-10 inside; data on the chips)")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  flat_moments = None if args.flat_moments is None else args.flat_moments == "true"
  devices = compile_only_gpus(args.gpus) if args.gpus else compile_only_devices(args.topology)
  kind, topology = devices[0].device_kind, args.gpus or args.topology
  print(f"{topology}: {len(devices)} x {kind} (compile-only), jax {jax.__version__}", flush=True)
  record = {"topology": topology, "device_kind": kind, "num_chips": len(devices),
            "hbm_per_chip_gib": HBM_GIB.get(kind), "jax": jax.__version__, "variants": {}}
  samplers = bench.parse_samplers(args.samplers.split(",")) if args.samplers else []
  batch_sizes = [int(b) for b in args.sample_batch_sizes.split(",") if b]
  for variant in args.variants.split(","):
    record["variants"][variant] = {
        **train_programs(variant, devices, [p for p in args.placements.split(",") if p],
                         train_step.AUTO_STEPS_PER_DISPATCH, flat_moments, split=args.shard_ema_and_moments),
        "sampling_one_chip": sampling_programs(variant, devices[0], samplers, batch_sizes)}
    if args.reflow_student:
      record["variants"][variant]["reflow_student"] = train_programs(
          variant, devices, ["device"], train_step.AUTO_STEPS_PER_DISPATCH, flat_moments, student=True,
          split=args.shard_ema_and_moments)
  if args.out:
    files.write_text_atomic(args.out, json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
