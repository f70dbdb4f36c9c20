"""Finds the Push-T replay buffer on disk, or says exactly how to get it.

Search order:
  1. an explicit path (`config.data.path`); when given it is the only candidate, so a typo is an error
     instead of silently training on some other copy of the data;
  2. the environment variable `$DPJAX_PUSHT_ZARR`;
  3. `<repo>/../shared/data/pusht/pusht_cchi_v7_replay.zarr`.
"""
import os
import pathlib
from typing import Mapping

ENV_VAR = "DPJAX_PUSHT_ZARR"
DOWNLOAD_URL = "https://diffusion-policy.cs.columbia.edu/data/training/pusht.zip"
# Where the replay buffer lies inside the unzipped pusht.zip.
ZARR_IN_ZIP = pathlib.PurePosixPath("pusht/pusht_cchi_v7_replay.zarr")
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_PATH = REPO_ROOT.parent / "shared" / "data" / ZARR_IN_ZIP


class DatasetNotFoundError(FileNotFoundError):
  """The replay buffer is not where any configured source points."""


def candidate_paths(path: str = "",
                    environ: Mapping[str, str] | None = None) -> list[tuple[str, pathlib.Path]]:
  """Returns the (source description, path) pairs to try, in order."""
  environ = os.environ if environ is None else environ
  if path:
    return [("explicit path (config.data.path)", pathlib.Path(path).expanduser())]
  candidates = []
  if environ.get(ENV_VAR):
    candidates.append((f"${ENV_VAR}", pathlib.Path(environ[ENV_VAR]).expanduser()))
  candidates.append(("default shared location", DEFAULT_PATH))
  return candidates


def how_to_get_data() -> str:
  """Instructions appended to every 'not found' message."""
  return (f"To get the data, either\n"
          f"  python -m dpjax.data.download --dest DIR\n"
          f"  export {ENV_VAR}=DIR/{ZARR_IN_ZIP}\n"
          f"or download {DOWNLOAD_URL} yourself, unzip it (it contains {ZARR_IN_ZIP}) and point "
          f"--config.data.path or ${ENV_VAR} at that folder.")


def resolve_dataset_path(path: str = "", environ: Mapping[str, str] | None = None) -> pathlib.Path:
  """Returns the first existing replay-buffer path (see the module docstring for the order).

  Args:
    path: explicit path; empty means "search".
    environ: environment to read `$DPJAX_PUSHT_ZARR` from (tests inject one); defaults to os.environ.

  Raises:
    DatasetNotFoundError: nothing found; the message lists every place tried and how to get the data.
  """
  candidates = candidate_paths(path, environ)
  for _, candidate in candidates:
    if candidate.exists():
      return candidate
  looked = "\n".join(f"  - {where}: {candidate}" for where, candidate in candidates)
  environ = os.environ if environ is None else environ
  if not path and not environ.get(ENV_VAR):
    looked += f"\n  - ${ENV_VAR}: (not set)"
  raise DatasetNotFoundError(f"Push-T replay buffer not found. Looked in:\n{looked}\n{how_to_get_data()}")
