"""Atomic file writes: a crash or kill mid-write leaves the previous file, never a truncated one."""
import os
import pathlib


def write_text_atomic(path, text: str) -> pathlib.Path:
  """Writes `text` to a sibling temporary file, then renames it over `path` (atomic on POSIX)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  os.replace(tmp, path)
  return path
