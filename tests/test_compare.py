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


def _summary(path, mean_scores, **settings):
  from dpjax import rollout
  record = {**rollout.score_summary(mean_scores), "settings": {"seeds": [1, 2], "sampler": "ddpm", **settings}}
  path.mkdir(parents=True, exist_ok=True)
  (path / "summary.json").write_text(json.dumps(record))
  return path


def test_runs_scored_at_every_checkpoint_are_averaged_as_papers_report_them(tmp_path, capsys):
  runs = [_summary(tmp_path / f"seed{i}", {1000: 0.5, 2000: 0.7 + 0.1 * i, 3000: 0.8, 4000: 0.6 + 0.1 * i})
          for i in range(3)]
  assert compare.is_summary(runs[0]) and compare.is_summary(runs[0] / "summary.json")
  assert compare.main([str(r) for r in runs]) == 0
  rows = capsys.readouterr().out.splitlines()
  assert rows[0] == "| run | checkpoints | best (step) | mean of last 3 | mean of last 10 |"
  assert rows[2].endswith("| 4 | 0.800 (3000) | 0.700 | - |")      # last 3: (0.7 + 0.8 + 0.6) / 3
  assert rows[4].endswith("| 4 | 0.900 (2000) | 0.833 | - |")
  best = compare.mean_with_error([0.8, 0.8, 0.9])
  last_3 = compare.mean_with_error([0.7, 0.7 + 0.2 / 3, 0.7 + 0.4 / 3])
  assert rows[5] == f"| mean over 3 runs | | {best} | {last_3} | - |"
  other = _summary(tmp_path / "trailing", {1000: 0.9}, timestep_spacing="trailing")
  assert compare.main([str(runs[0]), str(other)]) == 0
  assert capsys.readouterr().out.splitlines()[-2] == "No mean over the runs: they were scored under different " \
                                                     "timestep_spacing."
  # A best over 8 checkpoints is not a best over 4: said, and the mean still printed.
  longer = _summary(tmp_path / "longer", {step: 0.7 for step in range(500, 4500, 500)})
  assert compare.main([str(runs[0]), str(longer)]) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[-2].startswith("| mean over 2 runs |") and out[-1].startswith("The bests are over 4 to 8 checkpoints")
  _write(tmp_path / "one" / "eval.json", [1, 2], [0.5, 1.0])
  assert compare.main([str(runs[0]), str(tmp_path / "one")]) == 1
  assert "not both" in capsys.readouterr().err
