"""U-Net Conv1d lowerings compared on one machine: the train step, DDPM-100 / DDIM-10 latency and kernels per call.

    PYTHONPATH=. python experiments/bench/conv_lowering.py --variant=lowdim --out=conv_lowering.json
    PYTHONPATH=. python experiments/bench/conv_lowering.py --quick          # smoke sizes (a CPU dry run)

Swaps `dpjax.nets.unet1d.conv1d` (the U-Net's every stride-1 and stride-2 convolution) and
`unet1d.transposed_conv1d_x2` (the upsampling) for each lowering in turn: same parameters, same results, and times
each with `dpjax.bench.bench_variant`. `auto` is what the U-Net runs: taps in the sampling chain's calls on an
accelerator (since session 15 at any batch; session 14: at most 64 rows), else im2col; the others run their one
form everywhere, training included. On XLA:CPU im2col won by 9x on the train step
(BUILD_NOTES.md, "Convolution lowering") and taps lost 2.6x (session 14); `lax.conv` is cuDNN's single kernel on a
GPU, where im2col costs a fused pad/concat plus a GEMM, and taps a GEMM whose shifted sum fuses with the bias.
`fused` is `auto` with `config.policy.fused_sampling` (session 15): the chain's conv blocks end in one Pallas kernel
each on CUDA (`dpjax/nets/conv_block_kernel.py`); its train step is auto's, so only its sampling is timed, and its
DDIM-10 actions are compared with auto's from the same weights and noise (`agreement_with_auto`).
"""
import dataclasses
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
flags.DEFINE_list("lowerings", ["auto", "fused", "im2col", "taps", "lax.conv"], "Which lowerings to time, in order.")
FLAGS = flags.FLAGS


def lax_conv(x, kernel, stride, padding):
  """x [B, L, C_in], kernel [k, C_in, C_out] -> [B, L_out, C_out] as one `lax.conv_general_dilated`."""
  return jax.lax.conv_general_dilated(x, kernel, (stride,), [(padding, padding)],
                                      dimension_numbers=("NWC", "WIO", "NWC"))


def everywhere(lowering):
  """`lowering` with the U-Net's signature (a trailing `chain` flag), run in the chain's calls and training alike."""
  return lambda *args, chain=False: lowering(*args)


# name -> (convolution, transposed convolution, fused_sampling)
LOWERINGS = {"auto": (unet1d.conv1d, unet1d.transposed_conv1d_x2, False),
             "fused": (unet1d.conv1d, unet1d.transposed_conv1d_x2, True),
             "im2col": (everywhere(unet1d.conv1d_im2col), everywhere(unet1d.transposed_conv1d_x2_phases), False),
             "taps": (everywhere(unet1d.conv1d_taps), everywhere(unet1d.transposed_conv1d_x2_taps), False),
             "lax.conv": (everywhere(lax_conv), everywhere(unet1d.transposed_conv1d_x2_phases), False)}
# Lowerings whose train step is auto's (training runs im2col, and fused_sampling is inference only): their sampling
# is timed, not their train step.
SAMPLING_ONLY = ("im2col", "fused")


def fused_agreement(variant: str, quick: bool) -> dict:
  """How far the `fused` chain's actions are from `auto`'s: DDIM-10 (deterministic) from the same weights, noise
  and observations, at batch 1 and 50, as the largest absolute difference in normalised-action units (the actions
  span [-1, 1]); bfloat16 rounding moves them by ~1e-2, a wrong kernel by ~1."""
  import numpy as np
  from dpjax import policy
  from dpjax.data import pusht
  config = bench.load_config(variant, quick)
  rng = np.random.default_rng(config.seed)
  obs_shapes = pusht.OBS_SHAPES[config.data.obs_type]
  spec = policy.spec_from_config(config, obs_shapes, bench.ACTION_DIM)
  pol = policy.Policy(params=bench.random_params(spec, rng), normalizer=bench.synthetic_normalizer(obs_shapes, rng),
                      spec=spec)
  fused = pol.replace(spec=dataclasses.replace(spec, fused_sampling=True))
  scale = np.asarray(pol.normalizer["action"]["scale"])   # normalised = raw * scale + offset
  agreement = {}
  for batch in (1, 50):
    obs = bench.synthetic_obs(obs_shapes, (batch, spec.n_obs_steps), rng)
    actions = [np.asarray(policy.sample(p, obs, jax.random.key(batch), method="ddim", num_inference_steps=10))
               for p in (pol, fused)]
    agreement[f"ddim10_b{batch}_max_abs_diff"] = float(np.abs((actions[1] - actions[0]) * scale).max())
  return agreement


def main(argv):
  del argv
  records = {}
  unknown = set(FLAGS.lowerings) - set(LOWERINGS)
  if unknown:
    raise SystemExit(f"conv_lowering: unknown --lowerings {sorted(unknown)}; choose from {list(LOWERINGS)}.")
  for name in FLAGS.lowerings:
    conv, transposed_conv, fused_sampling = LOWERINGS[name]
    unet1d.conv1d, unet1d.transposed_conv1d_x2 = conv, transposed_conv
    jax.clear_caches()
    try:
      record = bench.bench_variant(FLAGS.variant, quick=FLAGS.quick, steps=FLAGS.steps, repeats=FLAGS.repeats,
                                   time_train=name not in SAMPLING_ONLY, fused_sampling=fused_sampling,
                                   samplers=[("ddpm", 100), ("ddim", 10)], sample_batch_sizes=(1,),
                                   log=lambda message, name=name: print(f"[{name}] {message}", flush=True))
    except Exception as error:   # e.g. a Pallas kernel the device's jax cannot compile: the other lowerings still run
      print(f"[{name}] failed: {type(error).__name__}: {str(error)[:2000]}", flush=True)
      record = {"error": f"{type(error).__name__}: {str(error)[:2000]}"}
    if fused_sampling and "error" not in record:
      try:
        record["agreement_with_auto"] = fused_agreement(FLAGS.variant, FLAGS.quick)
        print(f"[{name}] actions against auto's: {record['agreement_with_auto']}", flush=True)
      except Exception as error:
        print(f"[{name}] agreement check failed: {type(error).__name__}: {str(error)[:2000]}", flush=True)
    records[name] = record
    if FLAGS.out:
      with open(FLAGS.out, "w") as f:
        json.dump(records, f, indent=2)
  for name, record in records.items():
    if "error" in record:
      print(f"{name:9s} failed: {record['error'][:200]}", flush=True)
      continue
    sampling = {k: round(v["median_ms"], 2) for k, v in record["sampling"].items()}
    train = f"{record['train']['steps_per_s']:.2f} steps/s" if record.get("train") else "(auto's)"
    print(f"{name:9s} train {train}, kernels/call "
          f"{record['kernels_per_denoiser_call']}, sampling ms {sampling}", flush=True)


if __name__ == "__main__":
  app.run(main)
