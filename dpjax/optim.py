"""AdamW with a warm-up + cosine learning-rate schedule and per-group weight decay.

The original Diffusion Policy applies weight decay to every U-Net and encoder weight (1e-6), and for the transformer
follows minGPT: decay on Dense/attention kernels only (0.1 low-dim, 1e-3 image), none on biases, norms and
embeddings, with a separate decay (1e-6) for the vision encoder. Both are expressed here as masks over one parameter
tree {"encoder": ..., "denoiser": ...}.

`config.optim.flat_moments` keeps Adam's two moments as one vector each (`optax.flatten`) instead of one array per
parameter: the same arithmetic element by element, in a few GPU kernels instead of one per parameter array (the
full-size U-Net has 148). It changes the layout of the optimiser state in checkpoints, so a run resumes only with
the setting it started with: `dpjax.train` records the resolved value in config.json and a resume left at the
default takes the run's own (older runs' config.json lack the field and read False: `config_json.ADDED`). The
moments pass then writes both vectors and the per-array weight and EMA updates read them again: fewer kernels, more
bytes. `resolve_flat_moments` says where that pays.
"""
import jax
import optax

from dpjax.nets import transformer


def learning_rate_schedule(optim_config, num_steps: int) -> optax.Schedule:
  """Linear warm-up from 0, then cosine decay to 0 at `num_steps` (diffusers' "cosine"), or constant."""
  warmup = int(optim_config.warmup_steps)
  if optim_config.schedule == "constant":
    if warmup == 0:
      return optax.constant_schedule(optim_config.learning_rate)
    return optax.join_schedules([optax.linear_schedule(0.0, optim_config.learning_rate, max(warmup, 1)),
                                 optax.constant_schedule(optim_config.learning_rate)], [max(warmup, 1)])
  if optim_config.schedule != "cosine":
    raise ValueError(f"config.optim.schedule={optim_config.schedule!r} is not one of ('cosine', 'constant').")
  return optax.warmup_cosine_decay_schedule(0.0, optim_config.learning_rate, warmup_steps=warmup,
                                            decay_steps=max(num_steps, warmup + 1), end_value=0.0)


def weight_decay_masks(params, denoiser: str):
  """(denoiser mask, encoder mask): pytrees of bools over `params` saying which leaves each decay applies to."""
  false_like = lambda tree: jax.tree.map(lambda _: False, tree)
  true_like = lambda tree: jax.tree.map(lambda _: True, tree)
  denoiser_params = params["denoiser"]
  denoiser_mask = (transformer.weight_decay_mask(denoiser_params) if denoiser == "transformer"
                   else true_like(denoiser_params))
  main = dict(false_like(params), denoiser=denoiser_mask)
  enc = false_like(params)
  if "encoder" in params:
    enc["encoder"] = true_like(params["encoder"])
  return main, enc


def resolve_flat_moments(optim_config, params, denoiser: str, backend: str | None = None,
                         split_over_devices: bool = False) -> bool:
  """config.optim.flat_moments, or where it is None (the configs' default), what was measured to pay on `backend`
  (default: JAX's): per array for a U-Net with a vision encoder (the 262.7 M image U-Net's step moves more bytes
  than it launches kernels: BUILD_NOTES.md, "Session 14") and for a transformer on a TPU (XLA:TPU lays the whole
  flat vector out like the output head's [width, action_dim] kernel, whose minor dimension its tiles pad to 128:
  64-fold for Push-T's 2, "Session 28"); per array when the moments are split over several devices
  (`split_over_devices`: a flat vector's length rarely divides by their count, 65,783,298 for the low-dim U-Net);
  flat otherwise."""
  if optim_config.flat_moments is not None:
    return bool(optim_config.flat_moments)
  if split_over_devices:
    return False
  if denoiser == "unet1d" and jax.tree.leaves(params.get("encoder", {})):
    return False
  return not (denoiser == "transformer" and (backend or jax.default_backend()) == "tpu")


def clip_then(inner: optax.GradientTransformation, max_norm: float) -> optax.GradientTransformation:
  """`inner` applied to the gradients clipped to global norm `max_norm`, with `inner`'s state alone: clipping
  keeps no state, so turning it on or off leaves checkpoints loadable (a run stopped by NaN resumes clipped)."""
  if max_norm < 0:
    raise ValueError(f"config.optim.grad_clip_norm={max_norm}: give a global norm > 0, or 0 to disable clipping "
                     "(a negative one would flip every gradient).")
  if not max_norm:
    return inner
  clip = optax.clip_by_global_norm(max_norm)

  def update(updates, state, params=None):
    clipped, _ = clip.update(updates, clip.init(updates))
    return inner.update(clipped, state, params)

  return optax.GradientTransformation(inner.init, update)


def make_optimizer(optim_config, params, denoiser: str, num_steps: int, backend: str | None = None,
                   split_over_devices: bool = False) -> optax.GradientTransformation:
  """AdamW = (optional clipping and) adam moments, then decoupled weight decay per group, then the scheduled
  learning rate. `backend` is where it will run (default: JAX's) and `split_over_devices` whether its state is
  split over several devices, for `resolve_flat_moments`."""
  main_mask, encoder_mask = weight_decay_masks(params, denoiser)
  moments = clip_then(optax.scale_by_adam(b1=optim_config.b1, b2=optim_config.b2, eps=optim_config.eps),
                      float(optim_config.grad_clip_norm))
  return optax.chain(
      optax.flatten(moments) if resolve_flat_moments(optim_config, params, denoiser, backend, split_over_devices)
      else moments,
      optax.add_decayed_weights(optim_config.weight_decay, mask=main_mask),
      optax.add_decayed_weights(optim_config.encoder_weight_decay, mask=encoder_mask),
      optax.scale_by_learning_rate(learning_rate_schedule(optim_config, num_steps)),
  )


def moments_are_flat(opt_state) -> bool:
  """Whether `opt_state` (from `make_optimizer`) keeps Adam's moments as one vector each (flat_moments)."""
  is_adam = lambda node: isinstance(node, optax.ScaleByAdamState)
  adam = [node for node in jax.tree.leaves(opt_state, is_leaf=is_adam) if is_adam(node)]
  return bool(adam) and len(jax.tree.leaves(adam[0].mu)) == 1
