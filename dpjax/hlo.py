"""Counting the kernels of a compiled XLA program from its optimised HLO text (no dpjax imports, so scripts can load
this file by path to measure older checkouts too: experiments/bench/kernels_per_call.py)."""
import re

# Top-level HLO instructions that launch no kernel.
NON_KERNEL_OPS = ("parameter", "constant", "tuple", "get-tuple-element", "bitcast")


def kernel_count(hlo_text: str, computation: str | None = None) -> int:
  """Instructions of the ENTRY computation (or of the computation named `computation`, e.g. a while loop's body)
  that run as kernels (fusions, dots, custom calls, copies, ...), i.e. all but parameters, constants, tuples and
  bitcasts. On a GPU each is about one kernel launch."""
  count, in_entry = 0, False
  for line in hlo_text.splitlines():
    header = line.startswith("ENTRY") if computation is None else re.match(rf"%?{re.escape(computation)} ", line)
    if header:
      in_entry = True
    elif in_entry and line.startswith("}"):
      break
    elif in_entry and "=" in line:
      op = re.search(r"\s([a-z][\w-]*)\(", line.split("=", 1)[1])   # after the result shape: "f32[2]{0} dot("
      count += bool(op) and op.group(1) not in NON_KERNEL_OPS
  return count


def while_bodies(hlo_text: str) -> list[str]:
  """Names of the computations that `while` instructions run as their body (a `lax.scan`'s step, ...)."""
  return re.findall(r"while\(.*?body=%?([\w.\-]+)", hlo_text)
