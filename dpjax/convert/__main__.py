r"""python -m dpjax.convert --from_torch=PATH.ckpt --out=RUN_DIR: a PyTorch Diffusion Policy checkpoint as a dpjax run.

Needs the `torch` extra (pip install -e '.[torch]'). See dpjax/convert/__init__.py for what is carried over.
"""
import argparse
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None):
  parser = argparse.ArgumentParser(prog="python -m dpjax.convert", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--from_torch", required=True, help="the original workspace's .ckpt file")
  parser.add_argument("--out", required=True, help="run directory to write (must not exist)")
  args = parser.parse_args(argv)
  from dpjax import convert  # after parsing: --help stays fast
  try:
    converted = convert.convert(args.from_torch, args.out)
  except (convert.UnsupportedCheckpointError, OSError, ImportError) as e:   # OSError: a missing file, a taken --out
    raise SystemExit(f"dpjax.convert: {e}") from None
  spec = converted.spec
  print(f"dpjax.convert: wrote {args.out} ({spec.denoiser}, horizon {spec.horizon}, {spec.n_obs_steps} observation "
        f"steps, {spec.sampler} {spec.num_inference_steps} steps)")
  for note in converted.notes:
    print(f"dpjax.convert: note: {note}")
  print(f"  evaluate:  python -m dpjax.rollout --checkpoint={args.out}\n"
        f"  fine-tune: python -m dpjax.train --config={args.out}/config.py --workdir={args.out}")
  return converted


if __name__ == "__main__":
  main(sys.argv[1:])
