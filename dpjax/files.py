"""Atomic writes: a crash or kill mid-write leaves the previous file, never a truncated one, and a folder written
through `staged_folder` appears complete or not at all."""
import contextlib
import os
import pathlib
import shutil
import tempfile
from typing import Iterator


def write_text_atomic(path, text: str) -> pathlib.Path:
  """`write_bytes_atomic` of `text` in UTF-8."""
  return write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path, data: bytes) -> pathlib.Path:
  """Writes `data` to a uniquely named sibling temporary file, flushes it to disk, then renames it over `path`
  (`replaced_when_written`; atomic on POSIX). Concurrent writers of one path never share a temporary file; the last
  rename wins."""
  with replaced_when_written(path) as tmp, open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  return pathlib.Path(path)


@contextlib.contextmanager
def replaced_when_written(path) -> Iterator[pathlib.Path]:
  """A temporary sibling of `path` (same suffix), for writers that want a file name (ffmpeg), renamed over `path`
  when the block completes and removed if it fails: a kill mid-write leaves the previous file whole."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
  os.close(fd)
  try:
    yield pathlib.Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())   # mkstemp's 0600 -> what open() would have given
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


def new_folder(out) -> pathlib.Path:
  """`out` as a path (~ expanded), or a FileExistsError if something is there already (NotADirectoryError if a
  file stands where one of its parent folders would go)."""
  out = pathlib.Path(out).expanduser()
  if out.exists():
    raise FileExistsError(f"{out} already exists; delete it or choose another --out.")
  blocking = next((p for p in out.parents if p.exists()), None)
  if blocking is not None and not blocking.is_dir():
    raise NotADirectoryError(f"{blocking} is a file, so {out} cannot be made there; choose another --out.")
  return out


@contextlib.contextmanager
def staged_folder(out) -> Iterator[pathlib.Path]:
  """An empty folder to fill, renamed to `out` (which must not exist) when the block completes. It is built beside
  `out` under a hidden temporary name, removed if the block fails, so an interrupted writer leaves nothing at `out`
  (a kill -9 leaves the hidden `.<name>.*` folder, never a partial `out`)."""
  out = new_folder(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
  try:
    folder = staging / out.name   # made with the usual permissions (mkdtemp's are the owner's only)
    folder.mkdir()
    yield folder
    folder.rename(out)
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask
