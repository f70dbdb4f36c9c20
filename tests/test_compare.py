"""Paired comparison of evaluations: differences on shared seeds, the table, and clear errors."""
import json

import numpy as np
import pytest

from dpjax import compare


def _write(path, seeds, scores, calls=2):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({"seeds": seeds, "scores": scores, "network_calls_per_chunk": calls}))
  return path


def test_paired_differences_match_seeds_not_positions():
  reference = {"seeds": [1, 2, 3], "scores": [0.5, 1.0, 0.0]}
  record = {"seeds": [3, 1, 9], "scores": [0.25, 0.75, 1.0]}
  np.testing.assert_allclose(compare.paired_differences(record, reference), [0.25, 0.25])
  with pytest.raises(ValueError, match="share no episode seed"):
    compare.paired_differences({"seeds": [7], "scores": [1.0]}, reference)


def test_mean_with_error_is_the_mean_and_its_standard_error():
  assert compare.mean_with_error([0.0, 1.0, 0.5, 0.5]) == "0.500 +- 0.204"
  assert compare.mean_with_error([0.1, 0.3], sign="+") == "+0.200 +- 0.100"


def test_table_and_cli(tmp_path, capsys):
  first = _write(tmp_path / "a" / "eval.json", [1, 2, 3, 4], [1.0, 0.5, 0.0, 0.5], calls=100)
  _write(tmp_path / "b" / "eval.json", [1, 2, 3, 5], [0.5, 0.5, 0.0, 1.0])
  assert compare.main([str(first), str(tmp_path / "b")]) == 0
  rows = capsys.readouterr().out.splitlines()
  assert rows[2].endswith("| 100 | 4 | 0.500 +- 0.204 | - |")
  assert rows[3].endswith("| 2 | 4 | 0.500 +- 0.204 | -0.167 +- 0.167 (3 shared) |")
  assert compare.main([str(first), str(tmp_path / "missing")]) == 1
  assert "missing does not exist" in capsys.readouterr().err
  (tmp_path / "bad.json").write_text("{")
  assert compare.main([str(tmp_path / "bad.json")]) == 1
  assert "bad.json is not JSON" in capsys.readouterr().err
  assert compare.main([]) == 2
