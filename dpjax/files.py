"""Atomic file writes: a crash or kill mid-write leaves the previous file, never a truncated one."""
import os
import pathlib
import tempfile


def write_text_atomic(path, text: str) -> pathlib.Path:
  """`write_bytes_atomic` of `text` in UTF-8."""
  return write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path, data: bytes) -> pathlib.Path:
  """Writes `data` to a uniquely named sibling temporary file, flushes it to disk, then renames it over `path`
  (atomic on POSIX). Concurrent writers of one path never share a temporary file; the last rename wins."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    os.fchmod(fd, 0o666 & ~_umask())   # mkstemp's 0600 -> what open() would have given
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise
  return path


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask
