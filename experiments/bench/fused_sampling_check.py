r"""The program a CUDA GPU runs with `config.policy.fused_sampling`, checked on a CPU: every `lax.platform_dependent`
takes its GPU branch (taps, the one-matmul FiLM, the Pallas conv-block kernels) and the kernels run in Pallas'
interpreter. Against the CPU's own program (the XLA layers):

    PYTHONPATH=. python experiments/bench/fused_sampling_check.py                     # full-size U-Nets, one call
    PYTHONPATH=. python experiments/bench/fused_sampling_check.py \
        --run=runs/lowdim_cnn_small_alleps_4k --chain=ddim:10 --episodes=50   # scores, 50 test episodes

The first compares one chain call of the full-size low-dim and image U-Nets (initial weights, float32 and bfloat16)
and prints the largest difference. The second evaluates a trained run both ways on the same seeds (the interpreted
kernels are slow: DDIM-10 at batch 50 takes minutes) and prints both mean scores and how many episodes differ.
Nothing here measures speed: that needs the GPU (`experiments/gpu_bench.sh`, stage 1).
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from dpjax.nets import unet1d
from dpjax.nets.gpu_branches import as_on_cuda

# (Not --checkpoint or --sampler: dpjax.rollout, imported for --run, defines those.)
flags.DEFINE_string("run", "", "A U-Net run directory to evaluate both ways; empty: compare one call of the "
                    "full-size U-Nets instead.")
flags.DEFINE_string("chain", "ddim:10", "method:num_inference_steps for --run.")
flags.DEFINE_integer("episodes", 50, "Test episodes (seeds from 100000) for --run.")
FLAGS = flags.FLAGS

FULL_SIZE = {"lowdim": dict(down_dims=(256, 512, 1024), step_embed_dim=256, obs_width=20),
             "image": dict(down_dims=(512, 1024, 2048), step_embed_dim=128, obs_width=66)}


def compare_one_call():
  rng = np.random.default_rng(0)
  for name, sizes in FULL_SIZE.items():
    for dtype in (jnp.float32, jnp.bfloat16):
      net = unet1d.ConditionalUnet1D(down_dims=sizes["down_dims"], step_embed_dim=sizes["step_embed_dim"],
                                     dtype=dtype, one_film_matmul=True)
      x = jnp.asarray(rng.normal(size=(2, 16, 2)), jnp.float32)
      obs = jnp.asarray(rng.normal(size=(2, 2, sizes["obs_width"])), jnp.float32)
      k = jnp.array([3, 70])
      params = net.init(jax.random.key(0), x, k, obs)["params"]   # the PyTorch-style init: biases too

      def chain_call(net):
        conditioning = net.apply({"params": params}, None, k, obs, conditioning_only=True)
        return jax.jit(lambda p, x, c: net.apply({"params": p}, x, None, conditioning=c))(params, x, conditioning)

      cpu = chain_call(net)
      with as_on_cuda():
        fused = chain_call(net.clone(fused_sampling=True))
      print(f"{name} U-Net {jnp.dtype(dtype).name}: max |GPU program with the kernels - CPU program| "
            f"{float(jnp.abs(fused - cpu).max()):.3g} (output up to {float(jnp.abs(cpu).max()):.3g})", flush=True)


def compare_scores():
  from dpjax import checkpoint, rollout
  method, steps = FLAGS.chain.split(":")
  pol = checkpoint.load_policy(FLAGS.run)
  run = functools.partial(rollout.evaluate, num_episodes=FLAGS.episodes, method=method,
                          num_inference_steps=int(steps), out_dir=None, num_videos=0, show_progress=False)
  cpu = run(pol)
  with as_on_cuda():
    fused = run(pol.replace(spec=dataclasses.replace(pol.spec, fused_sampling=True)))
  difference = np.abs(np.array(cpu["scores"]) - np.array(fused["scores"]))
  print(f"{FLAGS.run} {FLAGS.chain}, {FLAGS.episodes} episodes: mean score {cpu['mean_score']:.4f} (CPU "
        f"program) vs {fused['mean_score']:.4f} (GPU program with the kernels, interpreted); episodes differing by "
        f"more than 0.01: {int((difference > 0.01).sum())}, largest difference {difference.max():.3f}", flush=True)


def main(argv):
  del argv
  if FLAGS.run:
    compare_scores()
  else:
    compare_one_call()


if __name__ == "__main__":
  app.run(main)
