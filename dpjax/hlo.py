"""Counting the kernels of a compiled XLA program, and estimating the bytes they move, from its optimised HLO text
(no dpjax imports, so scripts can load this file by path to measure older checkouts too:
experiments/bench/kernels_per_call.py). On a GPU a small step costs about a launch per kernel and a large one its
bytes over the memory bandwidth (BUILD_NOTES.md, "Session 14"), so both are counted."""
import re

# Top-level HLO instructions that launch no kernel.
NON_KERNEL_OPS = ("parameter", "constant", "tuple", "get-tuple-element", "bitcast")


def kernel_count(hlo_text: str, computation: str | None = None) -> int:
  """Instructions of the ENTRY computation (or of the computation named `computation`, e.g. a while loop's body)
  that run as kernels (fusions, dots, custom calls, copies, ...), i.e. all but parameters, constants, tuples and
  bitcasts. On a GPU each is about one kernel launch."""
  return sum(1 for line in _lines(hlo_text, computation)
             if (parsed := _parse(line)) and parsed[1] is not None and parsed[1] not in NON_KERNEL_OPS)


# Instructions that move data between devices.
COLLECTIVE_OPS = ("all-reduce", "reduce-scatter", "all-gather", "all-to-all", "collective-permute")


def collectives(hlo_text: str, computation: str | None = None) -> dict[str, dict[str, int]]:
  """{op: {"count": n, "bytes": b}} of the cross-device collectives among the instructions of the ENTRY computation
  (or of `computation`): how many, and the bytes of their results (an asynchronous one counted at its start, whose
  result may hold its operand too)."""
  found = {}
  for line in _lines(hlo_text, computation):
    parsed = _parse(line)
    op = parsed[1].removesuffix("-start") if parsed and parsed[1] else None
    if op in COLLECTIVE_OPS:
      entry = found.setdefault(op, {"count": 0, "bytes": 0})
      entry["count"] += 1
      entry["bytes"] += _shape_bytes(parsed[2])
  return found


def while_bodies(hlo_text: str) -> list[str]:
  """Names of the computations that `while` instructions run as their body (a `lax.scan`'s step, ...)."""
  return re.findall(r"while\(.*?body=%?([\w.\-]+)", hlo_text)


# Bytes per element of the HLO element types that occur in dpjax's programs.
ELEMENT_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
                 "s64": 8, "u64": 8, "f64": 8}
# Ops through which a fusion reads only the elements its result needs (element for element, or a window of them).
_ELEMENTWISE_OPS = {"add", "subtract", "multiply", "divide", "maximum", "minimum", "select", "compare", "convert",
                    "negate", "abs", "sqrt", "rsqrt", "exponential", "log", "log-plus-one", "tanh", "logistic",
                    "power", "and", "or", "not", "xor", "clamp", "sign", "copy", "is-finite", "floor", "ceil",
                    "sine", "cosine", "exponential-minus-one", "bitcast", "reshape", "transpose"}
# Ops that run in the computations they call (their bytes are their bodies').
_CONTROL_OPS = ("while", "conditional", "call")
_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%?([\w.\-]+) = (.*)")
_ARRAY = re.compile(r"\b([a-z]+[0-9]*)\[([0-9,]*)\]")


def _elements(dims: str) -> int:
  count = 1
  for dim in filter(None, dims.split(",")):
    count *= int(dim)
  return count


def _shape_bytes(shape: str) -> int:
  """Bytes of every array in an HLO shape (a tuple's arrays summed)."""
  return sum(_elements(dims) * ELEMENT_BYTES.get(dtype, 4) for dtype, dims in _ARRAY.findall(shape))


def _parse(line: str):
  """(name, op, result shape, operand names, text inside the op's parentheses, attributes after them, is root) of
  an HLO instruction line, or None."""
  match = _INSTRUCTION.match(line)
  if not match:
    return None
  name, rest = match.groups()
  root = line.lstrip().startswith("ROOT ")
  op = re.search(r"\s([a-z][\w-]*)\(", rest)
  if not op:
    return name, None, rest, [], "", "", root
  depth, end = 1, op.end()
  while depth and end < len(rest):
    depth += {"(": 1, ")": -1}.get(rest[end], 0)
    end += 1
  inside = rest[op.end():end - 1]
  return name, op.group(1), rest[:op.start()], re.findall(r"%([\w.\-]+)", inside), inside, rest[end:], root


def _computations(hlo_text: str) -> dict[str, list[str]]:
  """Instruction lines per computation; the entry computation is also under "ENTRY"."""
  computations, lines = {}, None
  for line in hlo_text.splitlines():
    header = re.match(r"(ENTRY )?%?([\w.\-]+) \(.*\{\s*$", line)
    if header:
      lines = computations[header.group(2)] = []
      if header.group(1):
        computations["ENTRY"] = lines
    elif line.startswith("}"):
      lines = None
    elif lines is not None:
      lines.append(line)
  return computations


def _lines(hlo_text: str, computation: str | None) -> list[str]:
  """The instruction lines of the entry computation, or of the one named `computation` (none if it is absent)."""
  return _computations(hlo_text).get(computation or "ENTRY", [])


def _first_array(shape: str) -> tuple[int, int]:
  """(elements, bytes per element) of the first array in an HLO shape; (0, 0) if none."""
  match = _ARRAY.search(shape)
  return (_elements(match.group(2)), ELEMENT_BYTES.get(match.group(1), 4)) if match else (0, 0)


def _parameter_reads(lines: list[str]) -> dict[int, int]:
  """Bytes a fused computation reads of each parameter: all of it, unless it reaches the result only through
  element-for-element ops and slices, which read just the elements they pass on."""
  instructions = [parsed for parsed in map(_parse, lines) if parsed]
  everything = object()
  needed = {}                                  # name -> elements of it the result needs (or `everything`)
  for name, op, shape, operands, _, _, root in reversed(instructions):
    elements, _ = _first_array(shape)
    want = needed.get(name, everything if root else 0)
    want = elements if want is everything or shape.startswith("(") else min(want, elements)
    for position, operand in enumerate(operands):
      if op in _ELEMENTWISE_OPS or (op in ("slice", "dynamic-slice") and position == 0):
        passed = want
      elif op == "dynamic-slice":
        passed = 1                               # a start index
      else:
        passed = everything
      if needed.get(operand) is not everything:
        needed[operand] = everything if passed is everything else needed.get(operand, 0) + passed
  reads = {}
  for name, op, shape, _, inside, _, _ in instructions:
    if op == "parameter":
      full = _shape_bytes(shape)
      want = needed.get(name, 0)
      reads[int(inside)] = full if want is everything else min(full, want * _first_array(shape)[1])
  return reads


def kernel_bytes(hlo_text: str, computation: str | None = None) -> list[tuple[str, int, int]]:
  """(name, bytes read, bytes written) of each kernel of the entry computation (or of `computation`), estimated
  from the optimised HLO: a kernel writes its whole result and reads its operands whole, except a fusion's
  operands that it only slices (e.g. one array's share of a raveled vector), which count at the slices' sizes.
  Control flow (while, call, conditional) moves nothing itself: its bodies' kernels do."""
  computations = _computations(hlo_text)
  result_bytes, kernels = {}, []
  for line in computations.get(computation or "ENTRY", []):
    parsed = _parse(line)
    if not parsed:
      continue
    name, op, shape, operands, _, attributes, _ = parsed
    result_bytes[name] = _shape_bytes(shape)
    if op is None or op in NON_KERNEL_OPS or op in _CONTROL_OPS:
      continue
    reads = [result_bytes.get(operand, 0) for operand in operands]
    called = re.search(r"calls=%?([\w.\-]+)", attributes)
    if op == "fusion" and called and called.group(1) in computations:
      parameter_reads = _parameter_reads(computations[called.group(1)])
      reads = [min(full, parameter_reads.get(number, full)) for number, full in enumerate(reads)]
    kernels.append((name, sum(reads), result_bytes[name]))
  return kernels


def bytes_moved(hlo_text: str, computation: str | None = None) -> int:
  """Estimated memory traffic (bytes read + written) of the entry computation's kernels (or `computation`'s):
  `kernel_bytes` summed. A bound the accelerator's memory bandwidth sets, not a measurement."""
  return sum(read + written for _, read, written in kernel_bytes(hlo_text, computation))
