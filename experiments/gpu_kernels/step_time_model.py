r"""A train step's time on an H100 from its kernels and bytes: ms = a * kernels + b * GB, fitted to the steps the
H100 timed (session 5, commit 2380ac8) and applied to deviceless counts of later commits. An estimate to rank
changes between GPU sessions, not a measurement.

    python experiments/gpu_kernels/step_time_model.py experiments/gpu_kernels/session14/train_step_parts_*.json

The fit uses the low-dim U-Net at batch 64 / 256 / 1024 (`dpjax.bench` on the H100: 3.55 / 5.36 / 8.67 ms per step
at 10 steps per dispatch, BUILD_NOTES.md "First GPU measurements") against the kernels and bytes of the same loop
body compiled without a GPU (`train_step_parts.py --target=h100 --batch_size=N` at 2380ac8, `step_x10` line, file
2380ac8/train_step_body.txt). The image U-Net and the transformer steps, timed in the same session, are held out
to check it. Bytes are `dpjax.hlo.bytes_moved`'s estimate; FLOPs are left out (bfloat16 matmuls at these sizes
take a small part of the step: the model is for bfloat16 steps only).
"""
import json
import sys

import numpy as np

# An H200's memory is 4.8 TB/s to the H100's 3.35 (same compute): the bytes term scaled by this guesses its time.
H200_BYTES_FACTOR = 3.35 / 4.8
# (step, loop-body kernels, GB moved, H100 ms per step): deviceless counts at 2380ac8, session 5's timings.
FITTED = [("low-dim U-Net, batch 64", 734, 4.38, 3.55),
          ("low-dim U-Net, batch 256", 755, 6.62, 5.36),
          ("low-dim U-Net, batch 1024", 807, 14.40, 8.67)]
HELD_OUT = [("image U-Net, batch 64", 1195, 16.81, 10.45),
            ("low-dim transformer, batch 256 (cuBLAS GEMMs)", 1348, 6.88, 5.46)]


def fit(points) -> np.ndarray:
  """Least-squares (ms per kernel, ms per GB), no intercept."""
  design = np.array([[kernels, gb] for _, kernels, gb, _ in points], float)
  return np.linalg.lstsq(design, np.array([ms for *_, ms in points], float), rcond=None)[0]


def predict(coefficients, kernels: float, gb: float) -> float:
  return float(coefficients[0] * kernels + coefficients[1] * gb)


def main(paths):
  coefficients = fit(FITTED)
  print(f"fit: {1e3 * coefficients[0]:.2f} us per kernel + {coefficients[1]:.3f} ms per GB "
        f"({1 / coefficients[1]:.2f} TB/s effective)")
  for name, kernels, gb, ms in FITTED + HELD_OUT:
    held = " (held out)" if (name, kernels, gb, ms) in HELD_OUT else ""
    print(f"  {name}{held}: {kernels} kernels, {gb:.2f} GB -> {predict(coefficients, kernels, gb):.2f} ms, "
          f"measured {ms:.2f}")
  for path in paths:
    with open(path) as f:
      record = json.load(f)
    body = record["parts"]["step_x10"]
    if "body_gb" not in body:
      print(f"{path}: no bytes recorded (written before session 14)")
      continue
    ms = predict(coefficients, body["body_kernels"], body["body_gb"])
    h200 = predict(coefficients * [1.0, H200_BYTES_FACTOR], body["body_kernels"], body["body_gb"])
    print(f"{path}: {record['variant']} batch {record['batch_size']}: {body['body_kernels']} kernels, "
          f"{body['body_gb']:.2f} GB -> {ms:.2f} ms ({1e3 / ms:.0f} steps/s) predicted on an H100, "
          f"{h200:.2f} ms ({1e3 / h200:.0f} steps/s) on an H200")


if __name__ == "__main__":
  main(sys.argv[1:])
