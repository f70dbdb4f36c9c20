r"""Benchmarks every Push-T policy variant: parameters, train throughput, compile times, sampling latency.

    python -m dpjax.bench                                    # all four variants, full size
    python -m dpjax.bench --variants=lowdim,transformer --steps=20 --out=bench.json
    python -m dpjax.bench --variants=image --steps=3 --repeats=2 --samplers=ddim:10
    python -m dpjax.bench --quick                             # `smoke` sizes: tiny nets, a few steps

Random weights and synthetic batches: no dataset is read, and the numbers measure the model and the step alone
(host data loading is `dpjax.data.bench_pipeline`'s job). Per variant it measures:

- train: the jitted train step as training runs it (`train_step.jit_train_steps`: config.train.steps_per_dispatch
  steps per call, data-parallel over every device of `sharding.make_mesh()`) on the variant's global batch.
  Compile time is `jit(...).lower(...).compile()` wall time (tracing + XLA). Throughput is taken after >= 2
  warm-up steps: `--steps` steps (rounded up to whole dispatches) are dispatched back to back and the clock stops
  at `block_until_ready` on the last state, so dispatch overlaps compute as in training. The batches are
  synthetic, already on device, and cycled, so input transfer is not timed.
- sampling: `dpjax.policy.sample` latency of one action chunk from raw observations (host numpy in, actions out)
  for each batch size and sampler, with the policy's weights on one device. The first call compiles; compile time
  is reported as (first call - median latency). Latency is the median of `--repeats` calls after that first call.
- kernels per denoiser call: the top-level instructions of one compiled denoiser call at each sampling batch size
  (XLA's optimised HLO, after fusion), as the chain's loop runs it (on a step's precomputed conditioning, with the
  bfloat16 kernels cast before the loop): on a GPU each is about one kernel launch, which at batch 1 costs more
  than the arithmetic (`denoiser_call_kernels`).

`--objective=flow` benchmarks flow-matching policies (samplers euler/heun/ancestral) instead of DDPM ones.

Results go to `--out` as JSON (rewritten after each variant, so a stopped run keeps what it finished) and a
markdown table is printed.
"""
import datetime
import functools
import importlib.metadata
import json
import os
import pathlib
import platform
import statistics
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from absl import app, flags

from dpjax import config_files, files, hlo, optim, policy, sharding, train_step
from dpjax.data import normalizer as normalizer_lib, pusht
from dpjax.diffusion import sampler

DEFAULT_CONFIG = config_files.PUSHT_CONFIG

# Bench variant name -> configs/pusht.py variant string.
VARIANTS = {"lowdim": "lowdim", "image": "image", "transformer": "transformer",
            "image_transformer": "image,transformer"}
ACTION_DIM = 2
COORD_RANGE = (0.0, 512.0)   # Push-T positions and actions are pixels of a 512 x 512 workspace.
WARMUP_STEPS = 2
NUM_TRAIN_BATCHES = 2        # distinct synthetic batches cycled through the timed steps

def load_config(variant: str, quick: bool = False, config_path=DEFAULT_CONFIG):
  """configs/pusht.py:<variant>[,smoke] as a ConfigDict."""
  return config_files.get_config(config_arg(variant, quick), config_path)


def config_arg(variant: str, quick: bool) -> str:
  if variant not in VARIANTS:
    raise ValueError(f"Unknown bench variant {variant!r}; choose from {list(VARIANTS)}.")
  return VARIANTS[variant] + (",smoke" if quick else "")


DEFAULT_SAMPLERS = {"ddpm": (("ddpm", 100), ("ddim", 10)), "flow": (("euler", 1), ("euler", 10))}


def parse_samplers(items: Sequence[str]) -> list[tuple[str, int]]:
  """["ddpm:100", "ddim:10"] -> [("ddpm", 100), ("ddim", 10)]."""
  out = []
  for item in items:
    method, sep, steps = item.partition(":")
    if not sep or method not in policy.SAMPLERS or not steps.isdigit() or int(steps) < 1:
      raise ValueError(f"Sampler {item!r} is not method:num_inference_steps with method in {policy.SAMPLERS} and "
                       "num_inference_steps >= 1.")
    out.append((method, int(steps)))
  return out


def synthetic_obs(obs_shapes: Mapping[str, tuple[int, ...]], leading: tuple[int, ...],
                  rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Random raw observations [*leading, ...]: uint8 images, low-dim values in the Push-T coordinate range."""
  obs = {}
  for key, shape in obs_shapes.items():
    if normalizer_lib.is_image(shape):
      obs[key] = rng.integers(0, 256, leading + tuple(shape), dtype=np.uint8)
    else:
      obs[key] = rng.uniform(*COORD_RANGE, leading + tuple(shape)).astype(np.float32)
  return obs


def synthetic_actions(leading: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
  return rng.uniform(*COORD_RANGE, leading + (ACTION_DIM,)).astype(np.float32)


def synthetic_normalizer(obs_shapes, rng: np.random.Generator, num: int = 64):
  """`fit_normalizer` on `num` random per-step samples of the right shapes."""
  return normalizer_lib.fit_normalizer(synthetic_obs(obs_shapes, (num,), rng), synthetic_actions((num,), rng))


def synthetic_batch(spec: policy.PolicySpec, batch_size: int, rng: np.random.Generator) -> dict:
  """Raw batch {"obs": {key: [B, To, ...]}, "action": [B, T, Da]}, as the data pipeline yields."""
  return {"obs": synthetic_obs(dict(spec.obs_shapes), (batch_size, spec.n_obs_steps), rng),
          "action": synthetic_actions((batch_size, spec.horizon), rng)}


def synthetic_setup(config, rng: np.random.Generator) -> tuple[policy.PolicySpec, Any, Any]:
  """(spec, normaliser, weights): `config`'s policy for Push-T's observations with a normaliser fitted to synthetic
  values and random weights (host arrays), what every benchmark times."""
  obs_shapes = pusht.OBS_SHAPES[config.data.obs_type]
  spec = policy.spec_from_config(config, obs_shapes, ACTION_DIM)
  return spec, synthetic_normalizer(obs_shapes, rng), random_params(spec, rng)


def random_params(spec: policy.PolicySpec, rng: np.random.Generator) -> Any:
  """Host (numpy) parameters with `policy.init_params`'s tree and shapes and PyTorch-init scale.

  Timing does not depend on the values; tracing `init_params` with `jax.eval_shape` costs no compile, while
  running it would (tens of seconds on a small CPU even for the smoke networks).
  """
  shapes = jax.eval_shape(functools.partial(policy.init_params, spec), jax.random.key(0))

  def draw(path, leaf):
    name = getattr(path[-1], "key", "")
    if name == "scale":
      return np.ones(leaf.shape, leaf.dtype)
    if name == "bias" or leaf.ndim < 2:
      return np.zeros(leaf.shape, leaf.dtype)
    fan_in = int(np.prod(leaf.shape[:-1]))
    return (rng.uniform(-1.0, 1.0, leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)
  return jax.tree_util.tree_map_with_path(draw, shapes)


def device_info() -> dict:
  """What ran a benchmark: the devices, versions, host and date, and `XLA_FLAGS` (they change compiled speed)."""
  device = jax.devices()[0]
  return {"device_kind": device.device_kind, "platform": device.platform, "device_count": jax.device_count(),
          "local_device_count": jax.local_device_count(), "process_count": jax.process_count(),
          "jax_version": jax.__version__, "jaxlib_version": importlib.metadata.version("jaxlib"),
          "host_cpu_count": os.cpu_count(), "python": platform.python_version(),
          "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _block(tree) -> None:
  jax.tree.map(lambda x: x.block_until_ready(), tree)


def bench_train(config, spec: policy.PolicySpec, params, normalizer, batch_size: int, steps: int,
                rng: np.random.Generator) -> dict:
  """Compile time and throughput of the jitted, data-parallel train step, as training runs it: n =
  config.train.steps_per_dispatch (resolved) steps per call over a stack of n batches."""
  mesh = sharding.make_mesh()
  sharding.check_batch_size(batch_size, mesh)
  replicated = sharding.replicated(mesh)
  per_dispatch = train_step.resolve_steps_per_dispatch(int(config.train.steps_per_dispatch))
  split = train_step.resolve_split(config.train.shard_ema_and_moments, mesh)
  optimizer = optim.make_optimizer(config.optim, params, spec.denoiser, config.train.num_steps,
                                   split_over_devices=split)
  state_shardings = train_step.state_sharding(params, optimizer, mesh, split)
  state = train_step.init_train_state(params, optimizer, state_shardings)
  normalizer = sharding.put_replicated(normalizer, mesh)
  stacks = [sharding.put_global_stack([synthetic_batch(spec, batch_size, rng) for _ in range(per_dispatch)], mesh)
            for _ in range(NUM_TRAIN_BATCHES)]
  key = jax.random.key(config.seed)
  steps_fn = train_step.jit_train_steps(spec, optimizer, config.ema, state_shardings,
                                        sharding.stacked_batch_sharding(mesh), replicated)

  start = time.perf_counter()
  lowered = steps_fn.lower(state, stacks[0], key, normalizer, None, None)
  lower_s = time.perf_counter() - start
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()   # per device; None where the backend does not say

  warmup_dispatches = -(-WARMUP_STEPS // per_dispatch)
  for i in range(warmup_dispatches):
    state, metrics = compiled(state, stacks[i % len(stacks)], key, normalizer, None, None)
  _block((state, metrics))
  dispatches = -(-steps // per_dispatch)
  start = time.perf_counter()
  for i in range(dispatches):
    state, metrics = compiled(state, stacks[i % len(stacks)], key, normalizer, None, None)
  _block((state, metrics))
  elapsed = time.perf_counter() - start
  steps = dispatches * per_dispatch
  loss = float(jax.device_get(metrics["loss"])[-1])
  return {"batch_size": batch_size, "steps": steps, "steps_per_dispatch": per_dispatch,
          "flat_moments": optim.moments_are_flat(state.opt_state), "shard_ema_and_moments": split,
          "argument_bytes_per_device": None if memory is None else int(memory.argument_size_in_bytes),
          "warmup_steps": warmup_dispatches * per_dispatch,
          "compile_s": compile_s, "lower_s": lower_s,
          "time_s": elapsed, "steps_per_s": steps / elapsed, "samples_per_s": steps * batch_size / elapsed,
          "step_ms": 1e3 * elapsed / steps, "final_loss": loss}


def bench_sampling(pol: policy.Policy, method: str, num_inference_steps: int, batch_size: int, repeats: int,
                   rng: np.random.Generator) -> dict:
  """Latency of `policy.sample` for one setting, on the weights a controller holds (`policy.for_sampling`: cast
  once, not per chunk; since session 15); the first call compiles and is reported apart."""
  obs = synthetic_obs(dict(pol.spec.obs_shapes), (batch_size, pol.spec.n_obs_steps), rng)
  pol = policy.for_sampling(pol)

  def call(seed):
    start = time.perf_counter()
    policy.sample(pol, obs, jax.random.key(seed), method=method,
                  num_inference_steps=num_inference_steps).block_until_ready()
    return time.perf_counter() - start

  first_call_s = call(0)
  times = [call(i + 1) for i in range(repeats)]
  median_s = statistics.median(times)
  return {"method": method, "num_inference_steps": num_inference_steps, "batch_size": batch_size,
          "repeats": repeats, "first_call_s": first_call_s, "compile_s": max(first_call_s - median_s, 0.0),
          "median_ms": 1e3 * median_s, "min_ms": 1e3 * min(times), "max_ms": 1e3 * max(times),
          "per_step_ms": 1e3 * median_s / num_inference_steps}


def denoiser_call_kernels(pol: policy.Policy, batch_size: int) -> int:
  """Kernels of one iteration's denoiser call at `batch_size` as the sampling chain runs it (on its step's
  conditioning, computed before the loop: `PolicyNet.denoise_conditioned`), compiled alone."""
  spec = pol.spec
  net = policy.PolicyNet(spec)
  params = policy.inference_params(pol.params, spec)
  obs = {k: jax.numpy.asarray(v) for k, v in policy.example_obs(spec, batch_size).items()}
  k = jax.numpy.zeros((batch_size,), np.int32 if spec.objective == "ddpm" else np.float32)
  conditioning = jax.eval_shape(
      lambda p, o, k: net.apply({"params": p}, k, net.apply({"params": p}, o, False, method=policy.PolicyNet.encode),
                                method=policy.PolicyNet.condition), params, obs, k)
  x = jax.ShapeDtypeStruct((batch_size, spec.horizon, spec.action_dim), np.float32)
  call = jax.jit(lambda p, x, c: net.apply({"params": p}, x, c, method=policy.PolicyNet.denoise_conditioned))
  return hlo.kernel_count(call.lower(params, x, conditioning).compile().as_text())


def bench_variant(variant: str, *, quick: bool = False, batch_size: int | None = None, steps: int | None = None,
                  compute_dtype: str | None = None, steps_per_dispatch: int | None = None,
                  flat_moments: bool | None = None, fused_sampling: bool | None = None,
                  shard_ema_and_moments: bool | None = None, repeats: int | None = None,
                  samplers: Sequence[tuple[str, int]] | None = None,
                  objective: str = "ddpm", sample_batch_sizes: Sequence[int] = (1, 50), config_path=DEFAULT_CONFIG,
                  time_train: bool = True, log=functools.partial(print, flush=True)) -> dict:
  """All measurements for one variant as a JSON-ready dict (`time_train=False` skips the train step; an empty
  `sample_batch_sizes` skips sampling)."""
  wall_start = time.perf_counter()
  steps = steps or (3 if quick else 20)
  repeats = repeats or (2 if quick else 5)
  samplers = DEFAULT_SAMPLERS[objective] if samplers is None else samplers
  for method, _ in samplers:
    sampler.check_method(objective, method)
  config = load_config(variant, quick, config_path)
  overrides = {}
  if objective != config.diffusion.objective:
    overrides["diffusion.objective"] = config.diffusion.objective = objective
    overrides["diffusion.sampler"] = config.diffusion.sampler = samplers[0][0]
    overrides["diffusion.num_inference_steps"] = config.diffusion.num_inference_steps = samplers[0][1]
  if batch_size:
    overrides["train.batch_size"] = config.train.batch_size = int(batch_size)
  if compute_dtype:
    overrides["policy.compute_dtype"] = config.policy.compute_dtype = compute_dtype
  if steps_per_dispatch is not None:
    overrides["train.steps_per_dispatch"] = config.train.steps_per_dispatch = int(steps_per_dispatch)
  if flat_moments is not None:
    overrides["optim.flat_moments"] = config.optim.flat_moments = bool(flat_moments)
  if fused_sampling is not None:
    overrides["policy.fused_sampling"] = config.policy.fused_sampling = bool(fused_sampling)
  if shard_ema_and_moments is not None:
    overrides["train.shard_ema_and_moments"] = config.train.shard_ema_and_moments = bool(shard_ema_and_moments)
  rng = np.random.default_rng(config.seed)
  spec, normalizer, params = synthetic_setup(config, rng)
  num_params = policy.count_params(params)
  log(f"[{variant}] {num_params:,} parameters, compute dtype {policy.compute_dtype_name(spec.compute_dtype)}; "
      "timing the train step...")

  # The sampling policy lives on one device, in its own buffers (the train step donates its state).
  device = jax.devices()[0]
  pol = policy.Policy(params=jax.device_put(params, device), normalizer=jax.device_put(normalizer, device),
                      spec=spec)
  train = None
  if time_train:
    train = bench_train(config, spec, params, normalizer, config.train.batch_size, steps, rng)
    log(f"[{variant}] train: compile {train['compile_s']:.1f} s, {train['steps_per_s']:.3f} steps/s, "
        f"{train['samples_per_s']:.1f} samples/s")

  kernels = {f"b{b}": denoiser_call_kernels(pol, int(b)) for b in sample_batch_sizes}
  log(f"[{variant}] kernels per denoiser call: {kernels}")
  sampling = {}
  for method, requested_steps in samplers:
    num_steps = requested_steps
    if objective == "ddpm":
      num_steps = min(requested_steps, spec.num_diffusion_steps)   # the smoke schedule has only 10 steps
    for sample_batch in sample_batch_sizes:
      result = bench_sampling(pol, method, num_steps, int(sample_batch), repeats, rng)
      result["requested_num_inference_steps"] = requested_steps
      sampling[f"{method}{num_steps}_b{sample_batch}"] = result
      log(f"[{variant}] sample {method}{num_steps} b{sample_batch}: {result['median_ms']:.1f} ms "
          f"(compile {result['compile_s']:.1f} s)")

  config_name = "configs/pusht.py" if pathlib.Path(config_path) == DEFAULT_CONFIG else str(config_path)
  return {"variant": variant, "config": f"{config_name}:{config_arg(variant, quick)}", "quick": quick,
          "overrides": overrides, "num_params": num_params,
          "compute_dtype": policy.compute_dtype_name(spec.compute_dtype),
          "num_params_encoder": policy.count_params(params.get("encoder", {})),
          "num_params_denoiser": policy.count_params(params["denoiser"]),
          "kernels_per_denoiser_call": kernels,
          "train": train, "sampling": sampling, "device": device_info(),
          "policy_spec": json.loads(spec.to_json()), "wall_s": time.perf_counter() - wall_start}


def run(variants: Sequence[str], out=None, log=functools.partial(print, flush=True), **kwargs) -> list[dict]:
  """Benchmarks `variants` in turn; rewrites `out` (if given) after each one. kwargs go to `bench_variant`."""
  for variant in variants:
    config_arg(variant, False)   # fail on a typo before spending minutes on earlier variants
  records = []
  for variant in variants:
    records.append(bench_variant(variant, log=log, **kwargs))
    if out:
      files.write_text_atomic(out, json.dumps({"device": device_info(), "records": records}, indent=2))
  return records


def markdown_table(records: Sequence[Mapping[str, Any]]) -> str:
  """One row per variant; one latency column per sampling setting (median ms, sampler compile s)."""
  settings = list(dict.fromkeys(k for r in records for k in r["sampling"]))
  header = (["variant", "devices", "dtype", "params (M)", "batch", "train compile (s)", "steps/s", "samples/s"]
            + [f"{s} ms (compile s)" for s in settings])
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in records:
    t = r["train"]
    row = [r["variant"] + (" (quick)" if r["quick"] else ""),
           f"{r['device']['device_count']}x {r['device']['device_kind']}", r.get("compute_dtype", "float32"),
           f"{r['num_params'] / 1e6:.2f}"]
    row += ([str(t["batch_size"]), f"{t['compile_s']:.1f}", f"{t['steps_per_s']:.3g}", f"{t['samples_per_s']:.3g}"]
            if t else ["-"] * 4)
    for s in settings:
      m = r["sampling"].get(s)
      row.append(f"{m['median_ms']:.4g} ({m['compile_s']:.1f})" if m else "-")
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines)


def define_flags() -> None:
  """CLI flags, defined only when run as a program: importing this module (tests) defines none, so its flag
  names cannot collide with other CLIs' (`dpjax.train`'s --config, `dpjax.rollout`'s --sampler)."""
  flags.DEFINE_list("variants", list(VARIANTS), f"Variants to run, from {list(VARIANTS)}.")
  flags.DEFINE_integer("batch_size", None, "Global train batch size (default: the variant's config.train.batch_size).")
  flags.DEFINE_integer("steps", None, "Timed train steps after the warm-up (default: 20, or 3 with --quick).")
  flags.DEFINE_integer("repeats", None, "Timed sampling calls per setting (default: 5, or 2 with --quick).")
  flags.DEFINE_enum("objective", "ddpm", list(sampler.OBJECTIVES), "Benchmark DDPM or flow-matching policies.")
  flags.DEFINE_list("samplers", None, "method:num_inference_steps pairs to time (default: ddpm:100,ddim:10 for "
                    "--objective=ddpm, euler:1,euler:10 for flow).")
  flags.DEFINE_list("sample_batch_sizes", ["1", "50"], "Batch sizes for sampling latency (empty: no sampling).")
  flags.DEFINE_bool("train", True, "Time the train step (--notrain: sampling only).")
  flags.DEFINE_bool("quick", False, "Use the `smoke` variant sizes (tiny networks) and few steps.")
  flags.DEFINE_enum("compute_dtype", None, list(policy.COMPUTE_DTYPES),
                    "Compute dtype of the networks (default: the config's, \"auto\").")
  flags.DEFINE_integer("steps_per_dispatch", None, "Train steps per jitted call (default: the config's; 0 = auto).")
  flags.DEFINE_enum("flat_moments", None, ["true", "false"],
                    "Adam's moments as one vector each (default: the config's, per variant).")
  flags.DEFINE_enum("fused_sampling", None, ["true", "false"],
                    "U-Net: Pallas conv-block kernels in the sampling chain on CUDA (default: the config's, off).")
  flags.DEFINE_enum("shard_ema_and_moments", None, ["true", "false"],
                    "Split the EMA weights and optimiser state over the devices (default: the config's, off).")
  flags.DEFINE_string("out", "bench.json", "JSON output path.")
  flags.DEFINE_string("config", str(DEFAULT_CONFIG), "Config file with get_config(variant).")


def main(argv):
  opts = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    samplers = parse_samplers(opts.samplers) if opts.samplers else None
    records = run(opts.variants, out=opts.out, quick=opts.quick, batch_size=opts.batch_size,
                  compute_dtype=opts.compute_dtype, steps_per_dispatch=opts.steps_per_dispatch,
                  flat_moments=None if opts.flat_moments is None else opts.flat_moments == "true",
                  fused_sampling=None if opts.fused_sampling is None else opts.fused_sampling == "true",
                  shard_ema_and_moments=(None if opts.shard_ema_and_moments is None
                                         else opts.shard_ema_and_moments == "true"),
                  steps=opts.steps, repeats=opts.repeats, samplers=samplers, objective=opts.objective,
                  sample_batch_sizes=[int(b) for b in opts.sample_batch_sizes], config_path=opts.config,
                  time_train=opts.train)
  except ValueError as e:
    raise SystemExit(f"dpjax.bench: {e}") from None
  print(markdown_table(records))
  print(f"wrote {opts.out}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
