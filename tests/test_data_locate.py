"""Finding the dataset, and the download helper (offline: the fetch is injected)."""
import hashlib
import io
import zipfile

import pytest

from dpjax.data import download, locate


def test_explicit_path_wins_and_is_strict(tmp_path):
  present = tmp_path / "a.zarr"
  present.mkdir()
  env = {locate.ENV_VAR: str(present)}
  assert locate.resolve_dataset_path(str(present), environ={}) == present
  # A given path that is missing is an error even when the env var points at real data.
  with pytest.raises(locate.DatasetNotFoundError, match="explicit path"):
    locate.resolve_dataset_path(str(tmp_path / "typo.zarr"), environ=env)


def test_env_var_used_when_no_explicit_path(tmp_path):
  present = tmp_path / "b.zarr"
  present.mkdir()
  assert locate.resolve_dataset_path("", environ={locate.ENV_VAR: str(present)}) == present


def test_missing_message_lists_places_and_how_to_get_data(tmp_path, monkeypatch):
  monkeypatch.setattr(locate, "DEFAULT_PATH", tmp_path / "shared" / "pusht.zarr")
  env = {locate.ENV_VAR: str(tmp_path / "env.zarr")}
  with pytest.raises(locate.DatasetNotFoundError) as info:
    locate.resolve_dataset_path("", environ=env)
  message = str(info.value)
  assert isinstance(info.value, FileNotFoundError)
  assert str(tmp_path / "env.zarr") in message and str(tmp_path / "shared" / "pusht.zarr") in message
  assert "$DPJAX_PUSHT_ZARR" in message
  assert locate.DOWNLOAD_URL in message and "python -m dpjax.data.download --dest" in message
  with pytest.raises(locate.DatasetNotFoundError, match=r"\$DPJAX_PUSHT_ZARR: \(not set\)"):
    locate.resolve_dataset_path("", environ={})


def _zip_bytes():
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w") as archive:
    archive.writestr("pusht/pusht_cchi_v7_replay.zarr/.zgroup", '{"zarr_format": 2}')
    archive.writestr("pusht/pusht_cchi_v7_replay.zarr/data/.zgroup", '{"zarr_format": 2}')
  return buffer.getvalue()


def _fake_fetch(payload, calls):
  def fetch(url, out):
    calls.append(url)
    out.write(payload)
  return fetch


def test_download_extracts_and_prints_export(tmp_path, capsys):
  payload, calls = _zip_bytes(), []
  digest = hashlib.sha256(payload).hexdigest()
  path = download.main(["--dest", str(tmp_path), "--sha256", digest], fetch=_fake_fetch(payload, calls))
  assert calls == [locate.DOWNLOAD_URL]
  assert path == tmp_path.resolve() / "pusht" / "pusht_cchi_v7_replay.zarr" and path.is_dir()
  assert f"export DPJAX_PUSHT_ZARR={path}" in capsys.readouterr().out
  assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left
  # Second run reuses the zip instead of fetching again.
  download.main(["--dest", str(tmp_path)], fetch=_fake_fetch(payload, calls))
  assert len(calls) == 1


def test_download_bad_checksum_leaves_nothing(tmp_path):
  with pytest.raises(ValueError, match="sha256 mismatch"):
    download.download(tmp_path, sha256="0" * 64, fetch=_fake_fetch(_zip_bytes(), []))
  assert list(tmp_path.iterdir()) == []


def test_download_wrong_zip_contents(tmp_path):
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w") as archive:
    archive.writestr("other/file.txt", "x")
  with pytest.raises(FileNotFoundError, match="pusht_cchi_v7_replay.zarr is not in it"):
    download.download(tmp_path, fetch=_fake_fetch(buffer.getvalue(), []))


def test_download_argument_handling():
  with pytest.raises(SystemExit):
    download.parse_args([])  # --dest is required
  with pytest.raises(SystemExit):
    download.parse_args(["--dest", "x", "--sha256", "abc"])
  args = download.parse_args(["--dest", "x"])
  assert args.url == locate.DOWNLOAD_URL and args.sha256 == ""


def test_a_download_cut_short_or_not_a_zip_leaves_nothing_and_is_one_line(tmp_path, monkeypatch):
  payload = _zip_bytes()

  class CutShort(io.BytesIO):   # the server announces the whole zip, the connection drops halfway
    headers = {"Content-Length": str(len(payload))}
    __enter__ = lambda self: self
    __exit__ = lambda self, *exc: None

  monkeypatch.setattr(download.urllib.request, "urlopen", lambda url: CutShort(payload[:len(payload) // 2]))
  with pytest.raises(SystemExit, match=rf"^dpjax.data.download: the download of {locate.DOWNLOAD_URL} stopped after "
                     rf"{len(payload) // 2:,} of {len(payload):,} bytes; run the same command again\.$"):
    download.main(["--dest", str(tmp_path)])
  assert list(tmp_path.iterdir()) == []   # no pusht.zip for a rerun to trust
  with pytest.raises(SystemExit, match=r"did not send a zip file; check --url"):
    download.main(["--dest", str(tmp_path)], fetch=_fake_fetch(b"<html>not found</html>", []))
  assert list(tmp_path.iterdir()) == []
