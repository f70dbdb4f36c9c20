"""Downloads and unzips the official Push-T training data.

    python -m dpjax.data.download --dest ~/data            # then export DPJAX_PUSHT_ZARR=...
    python -m dpjax.data.download --dest ~/data --sha256 HEX

The zip is written to a temporary file first and renamed only when complete (every announced byte received, a zip
archive, and the checksum matched when one is given), so an interrupted download never leaves a truncated
`pusht.zip` behind.
"""
import argparse
import hashlib
import os
import pathlib
import sys
import tempfile
import urllib.request
import zipfile
from typing import BinaryIO, Callable, Sequence

import tqdm

from dpjax import cli
from dpjax.data import locate

FetchFn = Callable[[str, BinaryIO], None]
_CHUNK_BYTES = 1 << 20


def fetch_url(url: str, out: BinaryIO) -> None:
  """Streams `url` into the open binary file `out`, with a progress bar."""
  with urllib.request.urlopen(url) as response:  # noqa: S310 (https URL from our constant or the user)
    total = int(response.headers.get("Content-Length") or 0) or None
    received = 0
    with tqdm.tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1]) as bar:
      while chunk := response.read(_CHUNK_BYTES):
        out.write(chunk)
        received += len(chunk)
        bar.update(len(chunk))
  if total is not None and received != total:   # a dropped connection ends the stream without an error
    raise OSError(f"the download of {url} stopped after {received:,} of {total:,} bytes; run the same command again.")


def sha256_of(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK_BYTES):
      digest.update(chunk)
  return digest.hexdigest()


def _check_sha256(path: pathlib.Path, expected: str) -> None:
  actual = sha256_of(path)
  if actual != expected.lower():
    raise ValueError(f"sha256 mismatch for {path}: expected {expected.lower()}, got {actual}. "
                     "The download is corrupt or the file changed upstream; delete it and retry.")


def download(dest: pathlib.Path, url: str = locate.DOWNLOAD_URL, sha256: str = "",
             fetch: FetchFn = fetch_url) -> pathlib.Path:
  """Downloads (unless already present) and unzips pusht.zip into `dest`.

  Args:
    dest: directory that will hold `pusht.zip` and the unzipped `pusht/` folder.
    url: where to fetch the zip from.
    sha256: optional expected hex digest of the zip.
    fetch: `fetch(url, binary_file)`; injectable so tests run without network.

  Returns:
    Path of the replay buffer, `dest/pusht/pusht_cchi_v7_replay.zarr`.
  """
  dest = pathlib.Path(dest).expanduser().resolve()
  dest.mkdir(parents=True, exist_ok=True)
  zip_path = dest / "pusht.zip"
  if zip_path.exists():
    print(f"Using existing {zip_path}")
  else:
    # Same directory as the target so the final os.replace is an atomic rename.
    fd, tmp_name = tempfile.mkstemp(prefix=".pusht.zip.", suffix=".part", dir=dest)
    tmp_path = pathlib.Path(tmp_name)
    try:
      with os.fdopen(fd, "wb") as out:
        fetch(url, out)
      if sha256:
        _check_sha256(tmp_path, sha256)
      if not zipfile.is_zipfile(tmp_path):   # kept out of pusht.zip, so a rerun downloads again
        raise ValueError(f"{url} did not send a zip file; check --url (the Push-T zip: {locate.DOWNLOAD_URL}).")
      os.replace(tmp_path, zip_path)
    finally:
      tmp_path.unlink(missing_ok=True)
  if sha256:
    _check_sha256(zip_path, sha256)
  if not zipfile.is_zipfile(zip_path):
    raise ValueError(f"{zip_path} is not a zip file; delete it and run the download again.")
  with zipfile.ZipFile(zip_path) as archive:
    # extractall strips absolute paths and '..' components, so a hostile archive stays inside dest.
    archive.extractall(dest)
  zarr_path = dest / locate.ZARR_IN_ZIP
  if not zarr_path.is_dir():
    raise FileNotFoundError(f"{zip_path} unzipped, but {zarr_path} is not in it; is it the Push-T zip "
                            f"from {locate.DOWNLOAD_URL}?")
  return zarr_path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m dpjax.data.download", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--dest", required=True, type=pathlib.Path, help="directory to download into")
  parser.add_argument("--url", default=locate.DOWNLOAD_URL, help="zip to download")
  parser.add_argument("--sha256", default="", help="expected sha256 hex digest of the zip (optional)")
  args = parser.parse_args(argv)
  if args.sha256 and (len(args.sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in args.sha256)):
    parser.error(f"--sha256 must be 64 hex digits, got {args.sha256!r}")
  return args


def main(argv: Sequence[str] | None = None, fetch: FetchFn = fetch_url) -> pathlib.Path:
  args = parse_args(argv)
  # A refused connection (URLError is an OSError), a taken --dest, a bad checksum or archive: one line.
  with cli.errors_as_one_line("dpjax.data.download", (ValueError, OSError)):
    zarr_path = download(args.dest, url=args.url, sha256=args.sha256, fetch=fetch)
  print(f"Push-T replay buffer ready at {zarr_path}\nexport {locate.ENV_VAR}={zarr_path}")
  return zarr_path


if __name__ == "__main__":
  main(sys.argv[1:])
