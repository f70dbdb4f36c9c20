"""PyTorch state dict -> dpjax parameter tree, through two tables.

`LAYOUTS` is the one place that says how a torch parameter becomes flax leaves (every transpose and split);
`MODULES` names, per denoiser, which torch module becomes which dpjax module and of what kind. `fill_params` walks
the state dict once, fills every leaf of the dpjax tree (shapes from the policy spec) and fails naming the keys when
a torch tensor is left unused, a dpjax leaf is left empty or a shape differs.
"""
import re
from typing import Callable

import numpy as np
from flax import traverse_util

from dpjax.convert.payload import UnsupportedCheckpointError
from dpjax.nets import transformer

Transform = Callable[[np.ndarray, int], np.ndarray]  # (torch array, num_heads) -> flax array


def _same(w, heads):
  return w


def _dense_kernel(w, heads):
  """Linear weight [out, in] -> Dense kernel [in, out]."""
  return w.T


def _conv_kernel(w, heads):
  """Conv1d weight [out, in, k] -> [k, in, out]; ConvTranspose1d weight [in, out, k] -> [k, out, in], which is what
  flax's ConvTranspose(transpose_kernel=True) holds (nets/unet1d.py, Upsample1d)."""
  return w.transpose(2, 1, 0)


def _split_qkv(index: int, bias: bool) -> Transform:
  """nn.MultiheadAttention in_proj [3w, w] (rows q, k, v) -> DenseGeneral kernel [w, heads, w / heads] or bias
  [heads, w / heads] of the q (0), k (1) or v (2) projection."""
  def transform(w, heads):
    part = np.split(w, 3, axis=0)[index]
    width = part.shape[0]
    return part.reshape(heads, width // heads) if bias else part.T.reshape(-1, heads, width // heads)
  return transform


def _out_proj_kernel(w, heads):
  """out_proj weight [w, w] ([out, in]) -> DenseGeneral kernel [heads, w / heads, w]."""
  return w.T.reshape(heads, -1, w.shape[0])


# Module kind -> {torch parameter name: [(flax leaf path below the module, transform), ...]}.
LAYOUTS: dict[str, dict[str, list[tuple[str, Transform]]]] = {
    "linear": {"weight": [("kernel", _dense_kernel)], "bias": [("bias", _same)]},
    "conv1d": {"weight": [("kernel", _conv_kernel)], "bias": [("bias", _same)]},
    "conv_transpose1d": {"weight": [("kernel", _conv_kernel)], "bias": [("bias", _same)]},
    "norm": {"weight": [("scale", _same)], "bias": [("bias", _same)]},  # GroupNorm and LayerNorm
    "attention": {
        "in_proj_weight": [("query/kernel", _split_qkv(0, False)), ("key/kernel", _split_qkv(1, False)),
                           ("value/kernel", _split_qkv(2, False))],
        "in_proj_bias": [("query/bias", _split_qkv(0, True)), ("key/bias", _split_qkv(1, True)),
                         ("value/bias", _split_qkv(2, True))],
        "out_proj.weight": [("out/kernel", _out_proj_kernel)],
        "out_proj.bias": [("out/bias", _same)],
    },
    "tensor": {"": [("", _same)]},  # a bare nn.Parameter, e.g. positional embeddings
}

_RES = r"(?P<block>(?:down|up)_modules\.\d+\.[01]|mid_modules\.\d+)"  # a ConditionalResidualBlock1D


def _res_name(match: re.Match) -> str:
  """down_modules.1.0 -> down_1_res_0; mid_modules.1 -> mid_1 (dpjax's names, nets/unet1d.py)."""
  level, index, *block = match["block"].split(".")
  level = level.removesuffix("_modules")
  return f"mid_{index}" if level == "mid" else f"{level}_{index}_res_{block[0]}"


# Denoiser -> [(torch module regex below "model.", dpjax module path (str or fn of the match), kind)].
MODULES = {
    "unet1d": [
        (r"diffusion_step_encoder\.1", "step_encoder_0", "linear"),
        (r"diffusion_step_encoder\.3", "step_encoder_1", "linear"),
        (_RES + r"\.blocks\.(?P<i>[01])\.block\.0", lambda m: f"{_res_name(m)}/block_{m['i']}/conv", "conv1d"),
        (_RES + r"\.blocks\.(?P<i>[01])\.block\.1", lambda m: f"{_res_name(m)}/block_{m['i']}/norm", "norm"),
        (_RES + r"\.cond_encoder\.1", lambda m: f"{_res_name(m)}/cond_encoder", "linear"),
        (_RES + r"\.residual_conv", lambda m: f"{_res_name(m)}/residual_conv", "conv1d"),
        (r"down_modules\.(?P<l>\d+)\.2\.conv", lambda m: f"down_{m['l']}_downsample/conv", "conv1d"),
        (r"up_modules\.(?P<l>\d+)\.2\.conv", lambda m: f"up_{m['l']}_upsample/conv", "conv_transpose1d"),
        (r"final_conv\.0\.block\.0", "final_block/conv", "conv1d"),
        (r"final_conv\.0\.block\.1", "final_block/norm", "norm"),
        (r"final_conv\.1", "final_conv", "conv1d"),
    ],
    "transformer": [
        (r"pos_emb", "pos_emb", "tensor"),
        (r"cond_pos_emb", "cond_pos_emb", "tensor"),
        (r"input_emb", "input_emb", "linear"),
        (r"cond_obs_emb", "cond_obs_emb", "linear"),
        (r"encoder\.0", "cond_mlp1", "linear"),
        (r"encoder\.2", "cond_mlp2", "linear"),
        (r"decoder\.layers\.(?P<i>\d+)\.self_attn", lambda m: f"layer{m['i']}/self_attn", "attention"),
        (r"decoder\.layers\.(?P<i>\d+)\.multihead_attn", lambda m: f"layer{m['i']}/cross_attn", "attention"),
        (r"decoder\.layers\.(?P<i>\d+)\.linear(?P<j>[12])", lambda m: f"layer{m['i']}/ff/linear{m['j']}", "linear"),
        (r"decoder\.layers\.(?P<i>\d+)\.norm(?P<j>[123])", lambda m: f"layer{m['i']}/norm{m['j']}", "norm"),
        (r"ln_f", "ln_f", "norm"),
        (r"head", "head", "linear"),
    ],
}
NETWORK_PREFIX = "model."
# Buffers the original recomputes from the architecture; checked against dpjax's (`check_buffers`), not copied.
BUFFERS = ("model.mask", "model.memory_mask")
# Read by `normalizer_from_state_dict`.
NORMALIZER = re.compile(r"normalizer\.params_dict\.\w+\.(scale|offset)")
# Placeholders and statistics with no role at inference.
IGNORED = re.compile(r"(.*\.)?_dummy_variable|normalizer\.params_dict\.\w+\.input_stats\.\w+")


def _match(denoiser: str, name: str) -> tuple[str, list[tuple[str, Transform]]] | None:
  """torch network key (without "model.") -> (dpjax module path, layout rows of that parameter), or None."""
  for pattern, path, kind in MODULES[denoiser]:
    suffix = r"" if kind == "tensor" else r"\.(?P<param>.+)"
    match = re.fullmatch(pattern + suffix, name)
    if match is None:
      continue
    param = match.groupdict().get("param") or ""
    if param not in LAYOUTS[kind]:
      return None
    return (path(match) if callable(path) else path), LAYOUTS[kind][param]
  return None


def fill_params(state_dict: dict[str, np.ndarray], denoiser: str, num_heads: int, abstract_params) -> dict:
  """Maps a policy state dict onto the dpjax tree `abstract_params` (arrays or ShapeDtypeStructs).

  Returns a nested dict of float32 numpy arrays with the structure of `abstract_params`; the normaliser, buffers
  and placeholders are left to their own readers.
  """
  wanted = traverse_util.flatten_dict(abstract_params, sep="/")
  filled, unused, shape_errors = {}, [], []
  for key, value in state_dict.items():
    if key in BUFFERS or IGNORED.fullmatch(key) or NORMALIZER.fullmatch(key):
      continue
    found = _match(denoiser, key[len(NETWORK_PREFIX):]) if key.startswith(NETWORK_PREFIX) else None
    if found is None:
      unused.append(key)
      continue
    module, rows = found
    for leaf, transform in rows:
      path = "/".join(p for p in ("denoiser", module, leaf) if p)
      array = np.asarray(transform(value, num_heads), np.float32)
      if path in wanted and tuple(wanted[path].shape) != array.shape:
        shape_errors.append(f"{key} {tuple(value.shape)} -> {path} {array.shape}, dpjax expects "
                            f"{tuple(wanted[path].shape)}")
      filled[path] = array
  extra = sorted(set(filled) - set(wanted))
  missing = sorted(set(wanted) - set(filled))
  problems = [f"{what}: {items}" for what, items in (
      ("torch keys with no dpjax parameter", unused), ("mapped to no dpjax parameter", extra),
      ("dpjax parameters no torch key filled", missing), ("shape mismatches", shape_errors)) if items]
  if problems:
    raise UnsupportedCheckpointError(f"The {denoiser} state dict does not map one-to-one onto dpjax's network ("
                                     + "; ".join(problems) + "). Was it trained with a modified architecture?")
  return traverse_util.unflatten_dict(filled, sep="/")


def check_buffers(state_dict: dict[str, np.ndarray], spec_kwargs: dict) -> None:
  """The transformer's attention masks (additive: 0 allowed, -inf blocked) must be the ones dpjax builds."""
  if "model.mask" not in state_dict and "model.memory_mask" not in state_dict:
    if spec_kwargs.get("causal_attn"):
      raise UnsupportedCheckpointError("The cfg says causal_attn=True but the state dict has no model.mask.")
    return
  horizon = spec_kwargs["horizon"]
  expected = {"model.mask": transformer.causal_mask(horizon),
              "model.memory_mask": transformer.memory_mask(horizon, spec_kwargs["n_obs_steps"] + 1)}
  for key, allowed in expected.items():
    got = state_dict.get(key)
    if got is None or got.shape != allowed.shape or not np.array_equal(got == 0, np.asarray(allowed)):
      raise UnsupportedCheckpointError(f"{key} ({None if got is None else got.shape}) is not the causal mask dpjax "
                                       f"uses for horizon {horizon}; the checkpoint's attention pattern differs.")


def normalizer_from_state_dict(state_dict: dict[str, np.ndarray]) -> dict:
  """LinearNormalizer params_dict {obs, action} -> dpjax {"obs": {"low_dim": stats}, "action": stats} (same
  x * scale + offset convention)."""
  prefix = "normalizer.params_dict."
  fields = {key[len(prefix):].split(".")[0] for key in state_dict if key.startswith(prefix)}
  if fields != {"obs", "action"}:
    raise UnsupportedCheckpointError(f"The normaliser has fields {sorted(fields)}; dpjax.convert supports the "
                                     "low-dim policies' ['action', 'obs'].")
  stats = {f: {p: np.asarray(state_dict[f"{prefix}{f}.{p}"], np.float32) for p in ("scale", "offset")}
           for f in fields}
  return {"obs": {"low_dim": stats["obs"]}, "action": stats["action"]}
