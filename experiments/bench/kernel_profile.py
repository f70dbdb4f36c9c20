r"""Where the GPU's time goes, kernel by kernel, from a profiler trace (issues 12 and 13).

    PYTHONPATH=. python experiments/bench/kernel_profile.py --out=kernel_profile.json     # on the GPU machine
    PYTHONPATH=. python experiments/bench/kernel_profile.py --quick --out=/tmp/p.json     # CPU dry run, smoke sizes

The kernel counts and byte estimates of `train_step_parts.py --target=h100` come from a compile without a device:
untuned GEMM choices (e.g. split-K GEMMs that write float32 partial sums) and a cost model of ~2.4 us per kernel +
~0.47 ms per GB fitted to four numbers. This measures instead: the low-dim CNN's training (`train_steps`, 10 steps
per dispatch, batch 256) and DDPM-100 at batch 1 (`dpjax.sample`) run under `jax.profiler.trace` (CUPTI), and the
Perfetto trace it writes is summarised per section:

  wall_ms                  host wall time per step (per chunk for sampling), dispatches back to back
  kernels                  device kernels per step
  busy_ms                  time at least one kernel ran, per step (the union of the kernels' intervals)
  gap_ms                   first kernel start to last kernel end, less busy_ms, per step: the device waiting
  duration_histogram       kernels and their time per step by duration (< 3 us ... > 100 us): launch-bound or not
  families                 time per step by kernel family (the name less its number: gemm_fusion_dot, loop_add_fusion,
                           a cuBLAS kernel's name, ...), the 25 largest
  top_kernels              the 40 kernels that take the most time per step

On a machine without a GPU (the dry run) the trace has no device kernels; the JSON then says so and holds the wall
times only. One JSON (`--out`) and the trace folder is deleted afterwards (tens of MB).
"""
import argparse
import collections
import functools
import glob
import gzip
import json
import re
import shutil
import tempfile
import time

import jax
import numpy as np

from dpjax import bench, optim, policy, train_step

DURATION_BINS_US = (3.0, 10.0, 30.0, 100.0)


def device_kernel_events(trace: dict) -> tuple[list[dict], dict]:
  """The kernel events of a Perfetto/Chrome trace ({"traceEvents": [...]}) and, for the record, every device thread's
  (process name, thread name): event count. Kernels are the complete ("X") events on the threads of device processes
  ("/device:..." but not "/host:...") whose name says "Stream"; where no thread does, the busiest device thread's."""
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  processes = {e["pid"]: e["args"]["name"] for e in events
               if e.get("ph") == "M" and e.get("name") == "process_name"}
  threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
  devices = {pid for pid, name in processes.items() if name.startswith("/device:")}
  by_thread = collections.defaultdict(list)
  for e in events:
    if e.get("ph") == "X" and e.get("pid") in devices:
      by_thread[(e["pid"], e.get("tid"))].append(e)
  census = {f"{processes[pid]} | {threads.get((pid, tid), tid)}": len(v) for (pid, tid), v in by_thread.items()}
  streams = [key for key in by_thread if "stream" in str(threads.get(key, "")).lower()]
  if not streams and by_thread:
    streams = [max(by_thread, key=lambda key: len(by_thread[key]))]
  kernels = [e for key in streams for e in by_thread[key]]
  return sorted(kernels, key=lambda e: e["ts"]), census


def family(name: str) -> str:
  """A kernel's name less its instance number: 'loop_add_fusion_12' and 'loop_add_fusion.3' -> 'loop_add_fusion'."""
  return re.sub(r"([_.]\d+)+$", "", name)


def summarize(kernels: list[dict], steps: int) -> dict:
  """Per-step numbers of a section's kernel events (timestamps and durations in microseconds)."""
  if not kernels:
    return {"kernels": 0, "note": "no device kernels in the trace (no GPU, or the profiler saw none)"}
  starts = np.array([e["ts"] for e in kernels], float)
  ends = starts + np.array([e.get("dur", 0.0) for e in kernels], float)
  busy, current_start, current_end = 0.0, starts[0], ends[0]
  for start, end in zip(starts[1:], ends[1:]):   # union of intervals (kernels may overlap on several streams)
    if start > current_end:
      busy += current_end - current_start
      current_start, current_end = start, end
    else:
      current_end = max(current_end, end)
  busy += current_end - current_start
  span = ends.max() - starts.min()
  durations = ends - starts
  bins = np.digitize(durations, DURATION_BINS_US)
  labels = [f"< {DURATION_BINS_US[0]:g} us"] + [f"{a:g}-{b:g} us" for a, b in zip(DURATION_BINS_US, DURATION_BINS_US[1:])]
  labels.append(f">= {DURATION_BINS_US[-1]:g} us")
  histogram = {label: {"kernels": round(float((bins == i).sum()) / steps, 1),
                       "ms": round(float(durations[bins == i].sum()) / steps / 1e3, 4)}
               for i, label in enumerate(labels)}
  per_name = collections.defaultdict(lambda: [0, 0.0])
  per_family = collections.defaultdict(lambda: [0, 0.0])
  for e, duration in zip(kernels, durations):
    for table, key in ((per_name, e["name"]), (per_family, family(e["name"]))):
      table[key][0] += 1
      table[key][1] += duration

  def rows(table, limit):
    ordered = sorted(table.items(), key=lambda item: -item[1][1])[:limit]
    return [{"name": name[:160], "per_step": round(count / steps, 2), "ms_per_step": round(total / steps / 1e3, 4),
             "mean_us": round(total / count, 2)} for name, (count, total) in ordered]

  return {"kernels": round(len(kernels) / steps, 1), "busy_ms": round(busy / steps / 1e3, 4),
          "gap_ms": round((span - busy) / steps / 1e3, 4), "kernel_ms": round(float(durations.sum()) / steps / 1e3, 4),
          "duration_histogram": histogram, "families": rows(per_family, 25), "top_kernels": rows(per_name, 40)}


def profiled(run, steps: int) -> dict:
  """Runs `run()` (which blocks on its results) under the profiler; wall time and the kernel summary per step."""
  folder = tempfile.mkdtemp(prefix="kernel_profile_")
  try:
    with jax.profiler.trace(folder, create_perfetto_trace=True):
      start = time.perf_counter()
      run()
      wall = time.perf_counter() - start
    paths = glob.glob(f"{folder}/**/perfetto_trace.json.gz", recursive=True)
    with gzip.open(paths[0]) as f:
      kernels, census = device_kernel_events(json.load(f))
  except Exception as e:   # no profiler (e.g. CUPTI missing): the wall time still counts
    start = time.perf_counter()
    run()
    return {"wall_ms": round((time.perf_counter() - start) / steps * 1e3, 4), "profiler_error": repr(e)[:400]}
  finally:
    shutil.rmtree(folder, ignore_errors=True)
  return {"wall_ms": round(wall / steps * 1e3, 4), **summarize(kernels, steps), "device_threads": census}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dispatches", type=int, default=5, help="training dispatches (10 steps each) profiled")
  parser.add_argument("--chunks", type=int, default=5, help="DDPM-100 chunks profiled")
  parser.add_argument("--quick", action="store_true", help="smoke sizes (a CPU dry run)")
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  config = bench.load_config("lowdim", args.quick)
  rng = np.random.default_rng(0)
  spec, normalizer, params = bench.synthetic_setup(config, rng)
  normalizer, params = jax.device_put((normalizer, params))
  optimizer = optim.make_optimizer(config.optim, params, spec.denoiser, 10_000)
  batch_size = int(config.train.batch_size)
  stack = jax.device_put(jax.tree.map(lambda x: np.stack([x] * 10), bench.synthetic_batch(spec, batch_size, rng)))
  steps = jax.jit(functools.partial(train_step.train_steps, spec=spec, optimizer=optimizer, ema_config=config.ema),
                  donate_argnums=0)
  record = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "parameters": policy.count_params(params),
            "batch_size": batch_size, "compute_dtype": str(policy.resolve_compute_dtype(spec.compute_dtype))}
  print(f"kernel_profile: {record}", flush=True)
  state = {"train": train_step.create_train_state(jax.tree.map(jax.numpy.copy, params), optimizer)}

  def train(dispatches):
    for i in range(dispatches):
      state["train"], metrics = steps(state["train"], stack, jax.random.key(i), normalizer, None)
    jax.block_until_ready((state["train"], metrics))

  start = time.perf_counter()
  train(2)   # compile + warm-up
  record["train_compile_and_warmup_s"] = round(time.perf_counter() - start, 2)
  record["train_step"] = profiled(lambda: train(args.dispatches), 10 * args.dispatches)
  print(f"kernel_profile: train step {_short(record['train_step'])}", flush=True)

  pol = policy.Policy(params, normalizer, spec)
  obs = {k: v[:1, :spec.n_obs_steps] for k, v in bench.synthetic_batch(spec, 1, rng)["obs"].items()}
  chain_steps = min(100, spec.num_diffusion_steps)   # 100; the smoke sizes have fewer
  record["ddpm_steps"] = chain_steps
  sample = lambda i: policy.sample(pol, obs, jax.random.key(i), method="ddpm", num_inference_steps=chain_steps)
  start = time.perf_counter()
  jax.block_until_ready(sample(0))
  record["ddpm100_compile_s"] = round(time.perf_counter() - start, 2)

  def chunks():
    for i in range(args.chunks):
      jax.block_until_ready(sample(i + 1))   # as a controller samples: one chunk, then its actions

  record["ddpm100_batch1"] = profiled(chunks, args.chunks)
  print(f"kernel_profile: DDPM-100 batch 1 {_short(record['ddpm100_batch1'])}", flush=True)
  with open(args.out, "w") as f:
    json.dump(record, f, indent=1)
  print(f"kernel_profile: wrote {args.out}")


def _short(section: dict) -> str:
  keys = ("wall_ms", "kernels", "busy_ms", "gap_ms", "kernel_ms")
  return ", ".join(f"{k} {section[k]}" for k in keys if k in section)


if __name__ == "__main__":
  main()
