"""The training state and the pure, jit-able train and validation steps.

`train_step(state, batch, base_key, normalizer) -> (state, metrics)`; the step's randomness is
`fold_in(base_key, state.step)`, so a resumed run needs no saved RNG state and reproduces an uninterrupted one.
`train_steps` runs n of them in one dispatch (a `lax.scan` over a stack of n batches, or of n window-id batches
gathered from device-resident data), so the host round trip is paid once per n steps.
"""
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.flatten_util import ravel_pytree

from dpjax import ema, optim, policy, sharding
from dpjax.data import device_data


# Optimiser steps per dispatch on accelerators when config.train.steps_per_dispatch is 0 (auto).
AUTO_STEPS_PER_DISPATCH = 10


@struct.dataclass
class TrainState:
  step: jax.Array          # int32 scalar: optimiser steps taken
  params: Any
  ema_params: Any
  opt_state: Any


def create_train_state(params, optimizer: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    ema_params=jax.tree.map(jnp.copy, params), opt_state=optimizer.init(params))


def state_sharding(params, optimizer: optax.GradientTransformation, mesh: jax.sharding.Mesh,
                   split_ema_and_moments: bool = False) -> TrainState:
  """Where each leaf of the training state built from `params` (arrays or ShapeDtypeStructs) lives on `mesh`: all
  replicated (every device updates every weight), or with `split_ema_and_moments` the EMA weights and the optimiser
  state split over the data axis, each array along its largest axis the device count divides (replicated when none
  does, `sharding.split_over_data_axis`), the step and the weights still replicated: ZeRO stage 1 plus the EMA.
  Each device then updates 1/n of the moments and EMA and holds 1/n of them; the weights are all-gathered."""
  shapes = jax.eval_shape(functools.partial(create_train_state, optimizer=optimizer), params)
  replicated = sharding.replicated(mesh)
  split = ((lambda x: sharding.split_over_data_axis(x.shape, mesh)) if split_ema_and_moments
           else (lambda x: replicated))
  return TrainState(step=replicated, params=jax.tree.map(lambda _: replicated, shapes.params),
                    ema_params=jax.tree.map(split, shapes.ema_params), opt_state=jax.tree.map(split, shapes.opt_state))


def init_train_state(params, optimizer: optax.GradientTransformation, shardings) -> TrainState:
  """The initial state (EMA = the weights, a fresh optimiser state) built by one jitted program straight into
  `shardings` (one sharding for every leaf, or a `state_sharding` tree): the optimiser state is never built on the
  host and copied."""
  return jax.jit(functools.partial(create_train_state, optimizer=optimizer), out_shardings=shardings)(params)


def abstract_train_state(params, optimizer: optax.GradientTransformation, shardings: TrainState) -> TrainState:
  """The shapes, dtypes and `shardings` (a `state_sharding` tree) of the state `init_train_state` builds from
  `params` (arrays or ShapeDtypeStructs), without building it: the target a checkpoint restores into."""
  shapes = jax.eval_shape(functools.partial(create_train_state, optimizer=optimizer), params)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)


def global_norm(tree) -> jax.Array:
  """The L2 norm of all leaves together, as one reduction over their concatenation: `optax.tree.norm` reduces leaf
  by leaf, 88 of the full-size U-Net step's 755 GPU kernels for a logged number (experiments/gpu_kernels/). Used
  when the optimiser flattens the gradients too (`config.optim.flat_moments`) and XLA shares the concatenation;
  otherwise it is a copy of every gradient (1.5 GB per step for the 262.7 M image U-Net), so the logged norm
  follows the optimiser's layout (`grad_norm_like_optimizer`)."""
  flat, _ = ravel_pytree(tree)
  return jnp.sqrt(jnp.sum(jnp.square(flat.astype(jnp.float32))))


def grad_norm_like_optimizer(grads, opt_state) -> jax.Array:
  """The gradients' global norm, over their concatenation where the optimiser concatenates them anyway (flat
  moments: `global_norm`), else leaf by leaf (`optax.tree.norm`)."""
  return global_norm(grads) if optim.moments_are_flat(opt_state) else optax.tree.norm(grads)


def train_step(state: TrainState, batch, base_key: jax.Array, normalizer, *, spec: policy.PolicySpec,
               optimizer: optax.GradientTransformation, ema_config,
               distillation: policy.Distillation | None = None,
               learning_rate: optax.Schedule | None = None) -> tuple[TrainState, dict]:
  """One optimiser step on a global batch; returns the new state and scalar metrics. With `distillation` the
  targets come from the frozen teacher (`policy.loss_fn`). With `learning_rate` (the optimiser's schedule) the
  metrics hold the rate this step applied."""
  return _step_from_compute_params(state, training_compute_params(state.params, spec), batch, base_key, normalizer,
                                   spec=spec, optimizer=optimizer, ema_config=ema_config, distillation=distillation,
                                   learning_rate=learning_rate)


def training_compute_params(params, spec: policy.PolicySpec):
  """The weights the loss is differentiated at: `policy.inference_params` (the kernels cast once to a bfloat16
  compute dtype, the cast each layer would make), except with "bfloat16_matmuls", whose kernels stay float32:
  its rounded matmul returns each gradient in its kernel's dtype, so a bfloat16 kernel would round the float32
  gradient the mode keeps (0.16 % of it, session 29)."""
  if policy.network_dtypes(spec.compute_dtype)[1] is not None:
    return params
  return policy.inference_params(params, spec)


def _step_from_compute_params(state: TrainState, compute_params, batch, base_key: jax.Array, normalizer, *,
                              spec: policy.PolicySpec, optimizer: optax.GradientTransformation, ema_config,
                              distillation: policy.Distillation | None,
                              learning_rate: optax.Schedule | None) -> tuple[TrainState, dict]:
  """`train_step` given `compute_params` = `training_compute_params(state.params, spec)`: with a bfloat16 compute
  dtype the weights with their matmul and convolution kernels in it, the cast each layer would make (so the loss and
  gradients are the same bit for bit). The gradients come back in that dtype and are cast to the weights' own."""
  key = jax.random.fold_in(base_key, state.step)
  loss, compute_grads = jax.value_and_grad(policy.loss_fn)(compute_params, spec, normalizer, batch, key, True,
                                                           distillation)
  grads = jax.tree.map(lambda g, p: g.astype(p.dtype), compute_grads, state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  step = state.step + 1
  decay = ema.decay_from_config(step, ema_config)
  new_state = TrainState(step=step, params=params, ema_params=ema.ema_update(state.ema_params, params, decay),
                         opt_state=opt_state)
  grad_norm = grad_norm_like_optimizer(grads, state.opt_state)
  metrics = {"loss": loss, "grad_norm": grad_norm, "ema_decay": decay,
             "finite": jnp.isfinite(loss) & jnp.isfinite(grad_norm)}
  if learning_rate is not None:
    metrics["learning_rate"] = jnp.asarray(learning_rate(state.step), jnp.float32)
  return new_state, metrics


def train_steps(state: TrainState, batches, base_key: jax.Array, normalizer, data,
                distillation: policy.Distillation | None = None, *, spec: policy.PolicySpec,
                optimizer: optax.GradientTransformation, ema_config,
                learning_rate: optax.Schedule | None = None) -> tuple[TrainState, dict]:
  """n optimiser steps in one call; equal to n calls of `train_step`.

  The loop carries the weights in the compute dtype next to the state, cast where each step updates them, so a
  bfloat16 step reads its kernels once in bfloat16 instead of casting every float32 kernel again at its start (on
  a GPU the cast joins the update's kernels instead of being ~26 kernels and ~0.35 GB of its own per step).

  Args:
    batches: a stack of n global batches: raw batches {"obs": {key: [n, B, To, ...]}, "action": [n, B, T, Da]}
      when `data` is None, else int [n, B] window ids into `data`.
    data: `device_data.DeviceWindows` resident on the devices, or None.
    distillation: a frozen teacher for a reflow student, or None.

  Returns:
    (state after n steps, metrics of every step stacked along a leading axis [n]).
  """
  step = functools.partial(_step_from_compute_params, base_key=base_key, normalizer=normalizer, spec=spec,
                           optimizer=optimizer, ema_config=ema_config, distillation=distillation,
                           learning_rate=learning_rate)

  def body(carry, batch):
    state, kernels = carry
    if data is not None:
      batch = device_data.gather(data, batch)
    state, metrics = step(state, _with_cast_leaves(state.params, kernels), batch)
    return (state, _cast_leaves(state.params, spec)), metrics

  if jax.tree.leaves(batches)[0].shape[0] == 1:
    # No loop for one step: XLA:CPU runs convolutions inside a loop body several times slower (the image
    # ResNet's step: 14.5 s in a length-1 scan vs 2.3 s without, batch 16; BUILD_NOTES.md).
    (state, _), metrics = body((state, _cast_leaves(state.params, spec)), jax.tree.map(lambda x: x[0], batches))
    return state, jax.tree.map(lambda x: x[None], metrics)
  (state, _), metrics = jax.lax.scan(body, (state, _cast_leaves(state.params, spec)), batches)
  return state, metrics


def _cast_leaves(params, spec: policy.PolicySpec) -> list:
  """The leaves that `training_compute_params` casts (in leaf order; None where it keeps a leaf as it is): what the
  loop carries, so that no float32 leaf is carried twice (XLA would copy each, ~100 kernels per step)."""
  cast = jax.tree.leaves(training_compute_params(params, spec))
  return [c if c.dtype != p.dtype else None for c, p in zip(cast, jax.tree.leaves(params))]


def _with_cast_leaves(params, cast_leaves: list):
  """`params` with the leaves of `_cast_leaves` put in: `training_compute_params(params, spec)`."""
  leaves, treedef = jax.tree.flatten(params)
  return jax.tree.unflatten(treedef, [p if c is None else c for p, c in zip(leaves, cast_leaves)])


def validation_loss(params, batch, key: jax.Array, normalizer, distillation: policy.Distillation | None = None, *,
              spec: policy.PolicySpec) -> jax.Array:
  """Loss with the network in evaluation mode (no dropout, centre crop); the key fixes the noise draw. A reflow
  student's validation loss is against its teacher's chunks."""
  return policy.loss_fn(params, spec, normalizer, batch, key, False, distillation)


def resolve_steps_per_dispatch(value: int, backend: str | None = None) -> int:
  """config.train.steps_per_dispatch; 0 (auto): 1 on CPU, where a step takes seconds and a dispatch
  microseconds, else AUTO_STEPS_PER_DISPATCH."""
  if value < 0:
    raise ValueError(f"config.train.steps_per_dispatch={value} must be >= 1, or 0 for auto.")
  if value:
    return value
  return 1 if (backend or jax.default_backend()) == "cpu" else AUTO_STEPS_PER_DISPATCH


def resolve_split(shard_ema_and_moments: bool, mesh: jax.sharding.Mesh) -> bool:
  """config.train.shard_ema_and_moments as it applies on `mesh`: a split needs more than one device."""
  return bool(shard_ema_and_moments) and mesh.devices.size > 1


def jit_train_steps(spec, optimizer, ema_config, state_shardings, stacked_batch_sharding, replicated,
                    learning_rate: optax.Schedule | None = None):
  """`train_steps` jitted; the state is donated. Compiles once per (n, data placement)."""
  step_fn = functools.partial(train_steps, spec=spec, optimizer=optimizer, ema_config=ema_config,
                              learning_rate=learning_rate)
  return jax.jit(step_fn, in_shardings=(state_shardings, stacked_batch_sharding, replicated, replicated, replicated,
                                        replicated),
                 out_shardings=(state_shardings, replicated), donate_argnums=(0,))


def jit_validation_loss(spec, batch_sharding, replicated):
  fn = functools.partial(validation_loss, spec=spec)
  return jax.jit(fn, in_shardings=(replicated, batch_sharding, replicated, replicated, replicated),
                 out_shardings=replicated)


def jit_validation_action_error(spec, batch_sharding, replicated):
  """`policy.action_error(params, spec, normalizer, batch, key)` jitted as (params, batch, key, normalizer)."""
  def fn(params, batch, key, normalizer):
    return policy.action_error(params, spec, normalizer, batch, key)
  return jax.jit(fn, in_shardings=(replicated, batch_sharding, replicated, replicated), out_shardings=replicated)
