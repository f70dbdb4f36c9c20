"""U-Net Conv1d lowerings compared on one machine: the train step, DDPM-100 / DDIM-10 latency and kernels per call.

    PYTHONPATH=. python experiments/bench/conv_lowering.py --variant=lowdim --out=conv_lowering.json
    PYTHONPATH=. python experiments/bench/conv_lowering.py --quick          # smoke sizes (a CPU dry run)

Swaps `dpjax.nets.unet1d.conv1d` (the U-Net's every stride-1 and stride-2 convolution) and
`unet1d.transposed_conv1d_x2` (the upsampling) for each lowering in turn: same parameters, same results, and times
each with `dpjax.bench.bench_variant`. `auto` is what the U-Net runs: taps on an accelerator for at most
`unet1d.TAPS_MAX_ROWS` rows (the batch-1 chain), else im2col. On XLA:CPU im2col won by 9x on the train step
(BUILD_NOTES.md, "Convolution lowering") and taps lost 2.6x (session 14); `lax.conv` is cuDNN's single kernel on a
GPU, where im2col costs a fused pad/concat plus a GEMM, and taps a GEMM whose shifted sum fuses with the bias.
"""
import json

import jax
from absl import app, flags

from dpjax import bench
from dpjax.nets import unet1d

flags.DEFINE_string("variant", "lowdim", "dpjax.bench variant (a U-Net one).")
flags.DEFINE_bool("quick", False, "Smoke sizes.")
flags.DEFINE_integer("steps", 50, "Timed train steps per lowering.")
flags.DEFINE_integer("repeats", 10, "Timed sampling calls per setting.")
flags.DEFINE_string("out", "", "JSON file for the records (one per lowering).")
flags.DEFINE_list("lowerings", ["auto", "im2col", "taps", "lax.conv"], "Which lowerings to time, in order.")
FLAGS = flags.FLAGS


def lax_conv(x, kernel, stride, padding):
  """x [B, L, C_in], kernel [k, C_in, C_out] -> [B, L_out, C_out] as one `lax.conv_general_dilated`."""
  return jax.lax.conv_general_dilated(x, kernel, (stride,), [(padding, padding)],
                                      dimension_numbers=("NWC", "WIO", "NWC"))


# name -> (convolution, transposed convolution)
LOWERINGS = {"auto": (unet1d.conv1d, unet1d.transposed_conv1d_x2),
             "im2col": (unet1d.conv1d_im2col, unet1d.transposed_conv1d_x2_phases),
             "taps": (unet1d.conv1d_taps, unet1d.transposed_conv1d_x2_taps),
             "lax.conv": (lax_conv, unet1d.transposed_conv1d_x2_phases)}


def main(argv):
  del argv
  records = {}
  unknown = set(FLAGS.lowerings) - set(LOWERINGS)
  if unknown:
    raise SystemExit(f"conv_lowering: unknown --lowerings {sorted(unknown)}; choose from {list(LOWERINGS)}.")
  for name in FLAGS.lowerings:
    conv, transposed_conv = LOWERINGS[name]
    unet1d.conv1d, unet1d.transposed_conv1d_x2 = conv, transposed_conv
    jax.clear_caches()
    # im2col's train step is auto's (a training batch has more than TAPS_MAX_ROWS rows): time its sampling only.
    record = bench.bench_variant(FLAGS.variant, quick=FLAGS.quick, steps=FLAGS.steps, repeats=FLAGS.repeats,
                                 time_train=name != "im2col",
                                 samplers=[("ddpm", 100), ("ddim", 10)], sample_batch_sizes=(1,),
                                 log=lambda message, name=name: print(f"[{name}] {message}", flush=True))
    records[name] = record
    if FLAGS.out:
      with open(FLAGS.out, "w") as f:
        json.dump(records, f, indent=2)
  for name, record in records.items():
    sampling = {k: round(v["median_ms"], 2) for k, v in record["sampling"].items()}
    train = f"{record['train']['steps_per_s']:.2f} steps/s" if record.get("train") else "(auto's)"
    print(f"{name:9s} train {train}, kernels/call "
          f"{record['kernels_per_denoiser_call']}, sampling ms {sampling}", flush=True)


if __name__ == "__main__":
  app.run(main)
