"""Measures the training pipeline on the real Push-T data: load time and batches per second.

    python -m dpjax.data.bench_pipeline --obs_type=lowdim --batch_size=256 --num_batches=200
    python -m dpjax.data.bench_pipeline --obs_type=image --batch_size=256 --num_batches=200
"""
import argparse
import time
from typing import Sequence

from dpjax import config_files


def load_config(obs_type: str, config_path: str):
  return config_files.get_config("image" if obs_type == "image" else None, config_path)


def main(argv: Sequence[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(prog="python -m dpjax.data.bench_pipeline", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--obs_type", default="lowdim", choices=("lowdim", "image"))
  parser.add_argument("--batch_size", type=int, default=256, help="global batch size")
  parser.add_argument("--num_batches", type=int, default=200)
  parser.add_argument("--path", default="", help="replay buffer (default: $DPJAX_PUSHT_ZARR, then shared)")
  parser.add_argument("--config", default=str(config_files.PUSHT_CONFIG))
  parser.add_argument("--prefetch", type=int, default=None, help="override config.data.prefetch")
  args = parser.parse_args(argv)

  import dpjax.data  # pylint: disable=g-import-not-at-top
  config = load_config(args.obs_type, args.config)
  config.data.path = args.path
  if args.prefetch is not None:
    config.data.prefetch = args.prefetch

  start = time.perf_counter()
  bundle = dpjax.data.build_data(config)
  load_s = time.perf_counter() - start
  iterator = dpjax.data.make_train_iterator(bundle, config, batch_size=args.batch_size)
  start = time.perf_counter()
  next(iterator)
  first_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(args.num_batches):
    next(iterator)
  loop_s = time.perf_counter() - start
  result = {
      "obs_type": args.obs_type, "batch_size": args.batch_size, "num_batches": args.num_batches,
      "windows": len(bundle.train_source), "load_s": load_s, "first_batch_s": first_s,
      "batches_per_s": args.num_batches / loop_s,
      "batches_per_s_incl_load": (args.num_batches + 1) / (load_s + first_s + loop_s),
  }
  print(f"obs_type={args.obs_type} global_batch={args.batch_size} train_windows={result['windows']}\n"
        f"  load (zarr -> windows + normalizer): {load_s:.2f} s\n"
        f"  first batch: {first_s * 1e3:.1f} ms\n"
        f"  steady state: {result['batches_per_s']:.1f} batches/s "
        f"({result['batches_per_s'] * args.batch_size:.0f} windows/s) over {args.num_batches} batches\n"
        f"  including load: {result['batches_per_s_incl_load']:.1f} batches/s")
  return result


if __name__ == "__main__":
  main()
