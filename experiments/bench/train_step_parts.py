r"""Where a train step's time goes: the step and its parts timed and kernel-counted apart (issue 12).

    PYTHONPATH=. python experiments/bench/train_step_parts.py --variant=lowdim --out=parts.json
    PYTHONPATH=. python experiments/bench/train_step_parts.py --variant=lowdim --quick    # smoke sizes, a dry run
    PYTHONPATH=. .venv-gpu-aot/bin/python experiments/bench/train_step_parts.py --target=h100   # kernels only, no GPU

On one H100 the low-dim CNN step (65.8 M parameters) and the low-dim transformer's (9.0 M) both take ~5.4 ms at
batch 256, and batch 64 -> 1024 costs 3.6 -> 8.7 ms: a fixed cost per step that neither the parameters nor the batch
sets. This splits the step into what it runs, each part jitted alone on the variant's synthetic batch:

  step       `train_step.train_step`, one step per call (forward, backward, optimiser, EMA)
  step_x10   `train_step.train_steps`, 10 steps per call (what training runs on an accelerator), per step
  forward    `policy.loss_fn` only
  grad       `jax.value_and_grad(policy.loss_fn)`: forward + backward
  optimizer  `optimizer.update` + `optax.apply_updates` on fixed gradients (state donated, as in training)
  ema        `ema.ema_update` (donated)

and, to see whether the per-parameter-leaf launches of the update are the fixed cost (148 leaves for the U-Net, 222
for the transformer), plain Adam three ways: on the parameter tree (`adam_tree`), through `optax.flatten` (one
concatenated vector per step, `adam_flatten`), and on parameters stored as one vector (`adam_flat`), with the EMA
on one vector (`ema_flat`).

For each: compile seconds, kernels (top-level instructions of the compiled HLO, `dpjax/hlo.py`; about one launch
each on a GPU), the bytes they move (`hlo.bytes_moved`, an estimate from the HLO) and median milliseconds per call
over `--repeats` back-to-back calls (dispatch overlaps the device, so a device-bound part reads its device time).
Random weights; no dataset is read. `step_x10` also counts the kernels and bytes of its loop's body (`body_kernels`,
`body_gb`: one training step as the accelerator runs it).

`--target=h100|h200` compiles every part for that GPU on a machine without one (`deviceless_gpu.py`, which says what
to install; compute dtype `auto` = bfloat16 there) and reports kernels only: XLA:GPU's own fusion, untuned.
"""
import argparse
import functools
import json
import statistics
import time

import this_checkout


def _target_flags() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(add_help=False)
  this_checkout.add_target_flags(parser)
  return parser


if __name__ == "__main__":   # a GPU target sets JAX_PLATFORMS, which must happen before jax is imported below
  this_checkout.target_sharding(_target_flags().parse_known_args()[0])

import jax
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from dpjax import bench, ema, optim, policy, train_step

hlo = this_checkout.load("dpjax/hlo.py")


def time_calls(fn, args, repeats: int, carry=None) -> float:
  """Median ms per call of `fn(*args)` over `repeats` rounds of 5 back-to-back calls; `carry(out)` (if given) is the
  new first argument, which the call donated."""
  args = list(args)

  def call():
    out = fn(*args)
    if carry is not None:
      args[0] = carry(out)
    return out

  jax.block_until_ready(call())
  rounds = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(5):
      out = call()
    jax.block_until_ready(out)
    rounds.append((time.perf_counter() - start) / 5)
  return 1e3 * statistics.median(rounds)


def measure(name: str, jitted, args, repeats: int, carry=None, steps_per_call: int = 1, sharding=None) -> dict:
  """Compiles `jitted` on `args`, counts its kernels and times it; with a deviceless `sharding`, compiles for that
  GPU on abstract copies of `args` and does not time it."""
  start = time.perf_counter()
  args = this_checkout.place(args, sharding)
  compiled = jitted.lower(*args).compile()
  compile_s = time.perf_counter() - start
  text = compiled.as_text()
  record = {"kernels": hlo.kernel_count(text), "gb": hlo.bytes_moved(text) / 1e9, "compile_s": compile_s,
            "steps_per_call": steps_per_call}
  bodies = hlo.while_bodies(text)
  if steps_per_call > 1 and bodies:
    record["body_kernels"] = hlo.kernel_count(text, bodies[-1])
    record["body_gb"] = hlo.bytes_moved(text, bodies[-1]) / 1e9
  record["ms_per_step"] = None if sharding is not None else time_calls(compiled, args, repeats, carry) / steps_per_call
  ms = "" if record["ms_per_step"] is None else f"{record['ms_per_step']:8.3f} ms/step  "
  body = (f" (loop body {record['body_kernels']}, {record['body_gb']:.2f} GB)" if "body_kernels" in record
          else f" {record['gb']:.2f} GB")
  print(f"{name:12s} {ms}{record['kernels']:5d} kernels (top level){body}  compile {compile_s:.1f} s", flush=True)
  return record


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], parents=[_target_flags()])
  parser.add_argument("--variant", default="lowdim", choices=list(bench.VARIANTS))
  parser.add_argument("--batch_size", type=int, default=None)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--quick", action="store_true", help="smoke sizes")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  sharding = this_checkout.target_sharding(args)

  config = bench.load_config(args.variant, args.quick)
  if sharding is not None or args.compute_dtype:
    config.policy.compute_dtype = this_checkout.compute_dtype(args, sharding)
  measure_part = functools.partial(measure, sharding=sharding)
  batch_size = args.batch_size or int(config.train.batch_size)
  rng = np.random.default_rng(0)
  spec, normalizer, params = bench.synthetic_setup(config, rng)
  normalizer, params = jax.device_put((normalizer, params))
  optimizer = optim.make_optimizer(config.optim, params, spec.denoiser, 10_000)
  fresh_state = lambda: train_step.create_train_state(jax.tree.map(jax.numpy.copy, params), optimizer)  # donated
  batch = jax.device_put(bench.synthetic_batch(spec, batch_size, rng))
  stack = jax.device_put(jax.tree.map(lambda x: np.stack([x] * 10), bench.synthetic_batch(spec, batch_size, rng)))
  key = jax.random.key(0)
  grads = jax.tree.map(lambda p: 1e-3 * jax.numpy.ones_like(p), params)
  device = args.target if sharding is not None else jax.devices()[0].device_kind
  print(f"{args.variant}: {policy.count_params(params):,} parameters, batch {batch_size}, {device}, "
        f"compute dtype {policy.resolve_compute_dtype(spec.compute_dtype)}")

  loss = lambda p, b, k: policy.loss_fn(p, spec, normalizer, b, k, True, None)
  step = functools.partial(train_step.train_step, spec=spec, optimizer=optimizer, ema_config=config.ema)
  steps = functools.partial(train_step.train_steps, spec=spec, optimizer=optimizer, ema_config=config.ema)

  def apply_optimizer(params, opt_state, grads):
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  def optimizer_step(carry, grads):
    return apply_optimizer(*carry, grads)

  parts = {
      "step": measure_part("step", jax.jit(step, donate_argnums=0), (fresh_state(), batch, key, normalizer),
                           args.repeats, carry=lambda out: out[0]),
  }
  parts["step_x10"] = measure_part("step_x10", jax.jit(steps, donate_argnums=0),
                                   (fresh_state(), stack, key, normalizer, None), args.repeats,
                                   carry=lambda out: out[0], steps_per_call=10)
  parts["forward"] = measure_part("forward", jax.jit(loss), (params, batch, key), args.repeats)
  parts["grad"] = measure_part("grad", jax.jit(jax.value_and_grad(loss)), (params, batch, key), args.repeats)
  carry = (jax.tree.map(jax.numpy.copy, params), optimizer.init(params))
  parts["optimizer"] = measure_part("optimizer", jax.jit(optimizer_step, donate_argnums=0), (carry, grads),
                                    args.repeats, carry=lambda out: out)
  ema_params = jax.tree.map(jax.numpy.copy, params)
  parts["ema"] = measure_part("ema", jax.jit(ema.ema_update, donate_argnums=0),
                              (ema_params, params, jax.numpy.float32(0.999)), args.repeats, carry=lambda out: out)
  adam = optax.chain(optax.scale_by_adam(b1=config.optim.b1, b2=config.optim.b2),
                     optax.scale_by_learning_rate(config.optim.learning_rate))
  for name, transform, tree, tree_grads in (
      ("adam_tree", adam, params, grads), ("adam_flatten", optax.flatten(adam), params, grads),
      ("adam_flat", adam, ravel_pytree(params)[0], ravel_pytree(grads)[0])):
    def adam_step(carry, grads, transform=transform):
      params, opt_state = carry
      updates, opt_state = transform.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state
    carry = (jax.tree.map(jax.numpy.copy, tree), transform.init(tree))
    parts[name] = measure_part(name, jax.jit(adam_step, donate_argnums=0), (carry, tree_grads), args.repeats,
                               carry=lambda out: out)
  flat = ravel_pytree(params)[0]
  parts["ema_flat"] = measure_part("ema_flat", jax.jit(ema.ema_update, donate_argnums=0),
                                   (jax.numpy.copy(flat), flat, jax.numpy.float32(0.999)), args.repeats,
                                   carry=lambda out: out)
  record = {"variant": args.variant, "quick": args.quick, "batch_size": batch_size,
            "num_params": policy.count_params(params),
            "compute_dtype": str(policy.resolve_compute_dtype(spec.compute_dtype)),
            "device": bench.device_info(), "target": args.target, "parts": parts}
  if args.out:
    with open(args.out, "w") as f:
      json.dump(record, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
