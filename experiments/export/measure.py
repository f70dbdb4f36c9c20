"""What a robot pays to start and run a policy: dpjax.load_policy + dpjax.sample against an export run by jax alone.

    python experiments/export/measure.py --run=RUN [--out=experiments/export/cpu_2core.json]

Exports RUN (DDIM-10 and DDPM-100, batch 1, this machine's platform) with `python -m dpjax.export`, then, in a
fresh Python process per path and sampler (JAX's persistent compilation cache off, as in a library user's
process): seconds to import, to load the weights, to the first chunk (its compile included), the median of the
next chunks, peak resident memory, and how many modules the process imported; then the export path again in a
second process that finds its compiled program in JAX's persistent cache (a robot restarting). Also checks that
both paths give the same chunk for the same observations and key.
"""
import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]

DPJAX_PATH = """
import time; start = time.perf_counter()
import resource, sys, numpy as np, jax, dpjax
imported = time.perf_counter()
policy = dpjax.load_policy(RUN)
loaded = time.perf_counter()
obs = {k: np.full((1, policy.spec.n_obs_steps) + s, 200.0, np.float32) for k, s in policy.spec.obs_shapes}
chunk = lambda seed: np.asarray(dpjax.sample(policy, obs, jax.random.key(seed), method=METHOD,
                                              num_inference_steps=STEPS))
"""

EXPORT_PATH = """
import time; start = time.perf_counter()
import resource, sys, json
for name in ("dpjax", "flax", "orbax", "optax", "grain", "ml_collections"):
  sys.modules[name] = None   # the robot's process has none of them
import numpy as np, jax
imported = time.perf_counter()
program = jax.export.deserialize(bytearray(open(f"{FOLDER}/policy.jaxexport", "rb").read()))
stored = np.load(f"{FOLDER}/weights.npz")
weights = jax.device_put([stored[f"arr_{i}"] for i in range(len(stored.files))])
jax.block_until_ready(weights)
loaded = time.perf_counter()
spec = json.load(open(f"{FOLDER}/policy.json"))["obs"]
obs = {k: np.full(v["shape"], 200.0, v["dtype"]) for k, v in spec.items()}
chunk = lambda seed: np.asarray(program.call(weights, obs, jax.random.key_data(jax.random.key(seed))))
"""

TIMING = """
first = chunk(0)
first_done = time.perf_counter()
times = []
for seed in range(1, REPEATS + 1):
  t = time.perf_counter(); chunk(seed); times.append(time.perf_counter() - t)
np.save(OUT_NPY, first)
print(json.dumps({"import_s": imported - start, "load_s": loaded - imported, "first_chunk_s": first_done - loaded,
                  "median_chunk_ms": 1000 * float(np.median(times)), "repeats": REPEATS,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "modules_imported": len(sys.modules)}))
"""


def _run_python(code: str, cache_dir: str = "") -> dict:
  """Runs `code` in a fresh process: without JAX's persistent compilation cache, or with it in `cache_dir`."""
  env = dict(os.environ, PYTHONPATH=str(REPO))
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  if cache_dir:
    env["JAX_COMPILATION_CACHE_DIR"] = cache_dir
  else:
    env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
  done = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, env=env,
                        cwd=REPO, timeout=1800)
  if done.returncode:
    raise SystemExit(done.stderr[-3000:])
  return json.loads(done.stdout.strip().splitlines()[-1])


def _cpu_model() -> str:
  for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines() if pathlib.Path("/proc/cpuinfo").exists() else []:
    if line.startswith("model name"):
      return line.split(":", 1)[1].strip()
  return platform.processor() or platform.machine()


def _jax_version() -> str:
  import jax   # pylint: disable=g-import-not-at-top
  return jax.__version__


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--run", required=True, help="a training run directory")
  parser.add_argument("--out", default=str(REPO / "experiments" / "export" / "cpu_2core.json"))
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  import numpy as np   # pylint: disable=g-import-not-at-top
  run = pathlib.Path(args.run).resolve()
  results = {"machine": f"{_cpu_model()}, {os.cpu_count()} cores", "jax": _jax_version(), "run": str(run),
             "samplers": {}}
  for method, steps in (("ddim", 10), ("ddpm", 100)):
    folder = run / f"export_{method}{steps}"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dpjax.export", f"--checkpoint={run}", f"--sampler={method}",
                           f"--num_inference_steps={steps}", f"--out={folder}", "--compilation_cache_dir="],
                          cwd=REPO, capture_output=True, text=True, timeout=1800)
    if done.returncode:
      raise SystemExit(done.stderr[-3000:])
    export_s = time.perf_counter() - start
    sizes = {p.name: p.stat().st_size for p in folder.iterdir()}
    row = {"export_command_s": export_s, "file_bytes": sizes}
    for name, code in (("dpjax", DPJAX_PATH), ("export", EXPORT_PATH)):
      constants = (f"RUN = {str(run)!r}\nFOLDER = {str(folder)!r}\nMETHOD = {method!r}\nSTEPS = {steps}\n"
                   f"REPEATS = {args.repeats}\nOUT_NPY = {str(folder / (name + '_chunk.npy'))!r}\n")
      row[name] = _run_python(constants + code + TIMING)
    # A robot that restarts: the second process finds the export's compiled program in JAX's persistent cache.
    with tempfile.TemporaryDirectory() as cache_dir:
      constants = constants.replace("export_chunk.npy", "cached_chunk.npy")
      _run_python(constants + EXPORT_PATH + TIMING, cache_dir)
      row["export_restart_with_cache"] = _run_python(constants + EXPORT_PATH + TIMING, cache_dir)
    chunks = [np.load(folder / f"{name}_chunk.npy") for name in ("dpjax", "export", "cached")]
    row["same_chunk"] = all(np.array_equal(chunks[0], chunk) for chunk in chunks[1:])
    results["samplers"][f"{method}{steps}"] = row
    print(json.dumps({f"{method}{steps}": row}, indent=1), flush=True)
  pathlib.Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
