"""Sampling latency against the unroll of the reverse chain's loop (issue 13: DDPM-100 at batch 1 is launch-bound).

    PYTHONPATH=. python experiments/bench/chain_unroll.py --variant=lowdim --out=chain_unroll.json
    PYTHONPATH=. python experiments/bench/chain_unroll.py --quick        # smoke sizes (a CPU dry run)

`sampler.sample_chain(..., unroll=u)` runs u chain steps per iteration of the compiled loop: the same steps and the
same actions, in 100 / u loop iterations. On a GPU every iteration ends with the loop's condition copied to the host
before the next iteration's kernels are launched, so a bigger body may hide launch latency (or let XLA's command
buffers capture more of it). Each unroll is timed with `dpjax.bench.bench_sampling` on random weights, with its
first call (compile) reported apart and the largest difference of its actions from unroll 1 (same key).
"""
import functools
import json

import jax
import numpy as np
from absl import app, flags

from dpjax import bench, policy
from dpjax.data import pusht
from dpjax.diffusion import sampler

flags.DEFINE_string("variant", "lowdim", "dpjax.bench variant.")
flags.DEFINE_bool("quick", False, "Smoke sizes.")
flags.DEFINE_list("unrolls", ["1", "10", "100"], "Chain steps per loop iteration.")
flags.DEFINE_list("samplers", ["ddpm:100", "ddim:10"], "sampler:steps settings (batch 1).")
flags.DEFINE_integer("repeats", 10, "Timed calls per setting.")
flags.DEFINE_string("out", "", "JSON file for the results.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  config = bench.load_config(FLAGS.variant, FLAGS.quick)
  rng = np.random.default_rng(config.seed)
  obs_shapes = pusht.OBS_SHAPES[config.data.obs_type]
  spec = policy.spec_from_config(config, obs_shapes, bench.ACTION_DIM)
  pol = policy.Policy(params=jax.device_put(bench.random_params(spec, rng)),
                      normalizer=jax.device_put(bench.synthetic_normalizer(obs_shapes, rng)), spec=spec)
  obs = bench.synthetic_obs(dict(spec.obs_shapes), (1, spec.n_obs_steps), np.random.default_rng(1))
  chain = sampler.sample_chain
  results, reference = {}, {}
  for method, steps in bench.parse_samplers(FLAGS.samplers):
    steps = min(steps, spec.num_diffusion_steps)   # the smoke schedule has 10 steps
    for unroll in (int(u) for u in FLAGS.unrolls):
      sampler.sample_chain = functools.partial(chain, unroll=min(unroll, steps))
      jax.clear_caches()
      record = bench.bench_sampling(pol, method, steps, 1, FLAGS.repeats, rng)
      actions = np.asarray(policy.sample(pol, obs, jax.random.key(0), method=method, num_inference_steps=steps))
      reference.setdefault(method, actions)
      record.update(unroll=unroll, max_abs_diff_from_unroll_1=float(np.max(np.abs(actions - reference[method]))))
      results[f"{method}{steps}_unroll{unroll}"] = record
      print(f"{method}{steps} b1 unroll {unroll:3d}: {record['median_ms']:8.2f} ms (first call "
            f"{record['first_call_s']:.1f} s, max |diff| {record['max_abs_diff_from_unroll_1']:.2e})", flush=True)
  sampler.sample_chain = chain
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump({"variant": FLAGS.variant, "quick": FLAGS.quick, "device": bench.device_info(), "results": results},
                f, indent=2)


if __name__ == "__main__":
  app.run(main)
