"""Reads a `.ckpt` written by the original Diffusion Policy's training workspace into numpy and an OmegaConf cfg.

The file is `torch.save(payload, f, pickle_module=dill)` with payload = {"cfg": DictConfig, "state_dicts": {"model",
"ema_model", "optimizer"}, "pickles": {...}}. It is read with torch's restricted (`weights_only`) unpickler, allowing
only OmegaConf's containers and the one dill helper such files reference (`dill._dill._load_type`, for builtin types
such as `dict`), so neither dill nor arbitrary code runs. `${eval:...}` interpolations in the cfg are resolved by a
small arithmetic evaluator (`safe_eval`), never by Python's `eval`.
"""
import ast
import dataclasses
import io
import operator
import pathlib
import pickle
from typing import Any

import numpy as np

INSTALL_HINT = "pip install -e '.[torch]' (torch and omegaconf; README.md, 'Coming from PyTorch')"
# Builtin types dill pickles by name; the cfg's OmegaConf metadata refers to them.
_BUILTIN_TYPES = {t.__name__: t for t in (dict, list, tuple, set, int, float, str, bool, bytes, type(None))}


class UnsupportedCheckpointError(ValueError):
  """The file is not a Diffusion Policy checkpoint dpjax can import; the message says what was found."""


@dataclasses.dataclass(frozen=True)
class TorchPayload:
  """What a workspace checkpoint holds, as numpy.

  Attributes:
    cfg: the run's OmegaConf DictConfig (interpolations unresolved until read).
    model: the raw policy's state dict, {torch key: float32 array}.
    ema_model: the EMA policy's state dict, same keys.
    pickles: the workspace's pickled extras (e.g. global_step, epoch), as stored.
  """
  cfg: Any
  model: dict[str, np.ndarray]
  ema_model: dict[str, np.ndarray]
  pickles: dict[str, Any]


def _load_type(name: str) -> type:
  """dill's `_load_type`, limited to builtin types."""
  if name not in _BUILTIN_TYPES:
    raise UnsupportedCheckpointError(f"The checkpoint's pickle asks for type {name!r}; dpjax.convert only allows "
                                     f"builtin types {sorted(_BUILTIN_TYPES)}.")
  return _BUILTIN_TYPES[name]


def safe_globals() -> list:
  """What torch's weights_only unpickler may construct besides tensors: OmegaConf's cfg and dill's type lookup."""
  import collections
  import typing

  from omegaconf import DictConfig, ListConfig, base, nodes
  return [DictConfig, ListConfig, base.ContainerMetadata, base.Metadata, nodes.AnyNode, nodes.StringNode,
          nodes.IntegerNode, nodes.FloatNode, nodes.BooleanNode, typing.Any, collections.defaultdict,
          *_BUILTIN_TYPES.values(), (_load_type, "dill._dill._load_type")]


def _to_numpy(tensor) -> np.ndarray:
  array = tensor.detach().cpu()
  if array.is_floating_point():
    array = array.float()
  return array.numpy()


def read_payload(path) -> TorchPayload:
  """Loads `path` (a workspace `.ckpt`) on the CPU. Needs torch and omegaconf (the `torch` extra)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"No checkpoint at {path}: pass the .ckpt written by the original Diffusion Policy "
                            "(e.g. data/outputs/<run>/checkpoints/latest.ckpt).")
  try:
    import omegaconf  # noqa: F401
    import torch
  except ImportError as e:
    raise ImportError(f"Reading a PyTorch checkpoint needs torch and omegaconf ({e}); {INSTALL_HINT}.") from e
  register_eval_resolver()
  try:
    with torch.serialization.safe_globals(safe_globals()):
      raw = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises UnpicklingError, RuntimeError or zip errors for foreign files
    lines = str(e).splitlines() or [""]
    reason = next((line.strip() for line in lines if "Unsupported global" in line), lines[0])
    raise UnsupportedCheckpointError(f"{path} is not a Diffusion Policy workspace checkpoint torch can read "
                                     f"safely ({type(e).__name__}: {reason}).") from e
  return _payload_from_raw(raw, path)


def _payload_from_raw(raw, path) -> TorchPayload:
  if not isinstance(raw, dict) or "cfg" not in raw or "state_dicts" not in raw:
    found = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
    raise UnsupportedCheckpointError(f"{path} holds {found}, not a workspace payload with 'cfg' and 'state_dicts' "
                                     "(a bare state dict cannot be imported: its architecture is in the cfg).")
  state_dicts = raw["state_dicts"]
  for name in ("ema_model", "model"):
    if name not in state_dicts:
      raise UnsupportedCheckpointError(
          f"{path} has no state_dicts[{name!r}] (it has {sorted(state_dicts)}); dpjax.convert needs both the raw "
          "('model') and the EMA ('ema_model') weights, as the original writes with training.use_ema=True.")
  convert = lambda sd: {key: _to_numpy(value) for key, value in sd.items()}
  return TorchPayload(cfg=raw["cfg"], model=convert(state_dicts["model"]), ema_model=convert(state_dicts["ema_model"]),
                      pickles=dict(raw.get("pickles", {})))


class _NoGlobalsUnpickler(pickle.Unpickler):
  def find_class(self, module, name):
    raise pickle.UnpicklingError(f"refusing {module}.{name}")


def plain_pickles(pickles: dict[str, Any]) -> dict[str, Any]:
  """The workspace extras that are plain values (global_step, epoch, _output_dir), unpickled without importing
  anything; the others are left out."""
  plain = {}
  for key, value in pickles.items():
    try:
      decoded = _NoGlobalsUnpickler(io.BytesIO(value)).load() if isinstance(value, bytes) else value
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError):
      continue
    if isinstance(decoded, (int, float, str, bool)):
      plain[key] = decoded
  return plain


def register_eval_resolver() -> None:
  """Registers `safe_eval` as OmegaConf's `eval` resolver, unless the process already has one."""
  from omegaconf import OmegaConf
  if not OmegaConf.has_resolver("eval"):
    # omegaconf 2.4 renamed register_new_resolver (now deprecated) to register_resolver.
    register = getattr(OmegaConf, "register_resolver", None) or OmegaConf.register_new_resolver
    register("eval", safe_eval)


_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}


def safe_eval(expression):
  """Evaluates the arithmetic the original configs put in `${eval:...}`: literals, + - * / // % **, comparisons,
  and/or/not and `a if cond else b`, e.g. "2 if False or True else 20 + 2" -> 2. Anything else is an error."""
  try:
    tree = ast.parse(str(expression).strip(), mode="eval")
  except SyntaxError as e:
    raise ValueError(f"Cannot parse ${{eval:{expression}}} ({e.msg}).") from e
  return _eval_node(tree.body, expression)


def _eval_node(node, expression):
  recurse = lambda n: _eval_node(n, expression)
  if isinstance(node, ast.Constant):
    return node.value
  if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
    return _BINARY[type(node.op)](recurse(node.left), recurse(node.right))
  if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
    return _UNARY[type(node.op)](recurse(node.operand))
  if isinstance(node, ast.BoolOp):  # Python's semantics: the deciding operand, short-circuited
    is_and = isinstance(node.op, ast.And)
    for value_node in node.values:
      value = recurse(value_node)
      if bool(value) != is_and:
        return value
    return value
  if isinstance(node, ast.IfExp):
    return recurse(node.body) if recurse(node.test) else recurse(node.orelse)
  if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
    left = recurse(node.left)
    for op, right_node in zip(node.ops, node.comparators):
      right = recurse(right_node)
      if not _COMPARE[type(op)](left, right):
        return False
      left = right
    return True
  if isinstance(node, (ast.Tuple, ast.List)):
    return [recurse(e) for e in node.elts]
  raise ValueError(f"${{eval:{expression}}} uses {type(node).__name__}, which dpjax.convert does not evaluate "
                   "(only literals, arithmetic, comparisons, and/or/not and if-else).")
