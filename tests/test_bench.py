"""dpjax.bench: the --quick benchmark runs end to end and writes every number, positive and finite."""
import json

import pytest

from dpjax import bench

TRAIN_FIELDS = ("compile_s", "lower_s", "time_s", "steps_per_s", "samples_per_s", "step_ms", "batch_size", "steps")
SAMPLING_FIELDS = ("first_call_s", "median_ms", "min_ms", "max_ms", "per_step_ms", "batch_size",
                   "num_inference_steps", "repeats")


def test_quick_bench_writes_positive_finite_numbers(tmp_path):
  out = tmp_path / "bench.json"
  records = bench.run(["lowdim", "transformer"], out=out, log=lambda *_: None, quick=True)
  written = json.loads(out.read_text())
  assert written["records"] == json.loads(json.dumps(records))
  assert written["device"]["device_count"] >= 1 and written["device"]["host_cpu_count"] >= 1
  assert [r["variant"] for r in written["records"]] == ["lowdim", "transformer"]
  for record in written["records"]:
    assert record["quick"] and record["config"].endswith(",smoke")
    assert bench.is_positive_finite(record["num_params"])
    assert record["num_params"] == record["num_params_encoder"] + record["num_params_denoiser"]
    train = record["train"]
    for field in TRAIN_FIELDS:
      assert bench.is_positive_finite(train[field]), (record["variant"], field, train[field])
    assert train["batch_size"] == 8   # the smoke variant's global batch, split over conftest's 8 devices
    # Every sampler x batch size; the smoke schedule caps DDPM's 100 steps at its 10 training steps.
    assert sorted(record["sampling"]) == ["ddim10_b1", "ddim10_b50", "ddpm10_b1", "ddpm10_b50"]
    for name, result in record["sampling"].items():
      for field in SAMPLING_FIELDS:
        assert bench.is_positive_finite(result[field]), (record["variant"], name, field, result[field])
      assert result["compile_s"] >= 0.0
    device = record["device"]
    assert device["platform"] and device["device_kind"] and device["jax_version"] and device["date"]
  table = bench.markdown_table(records)
  assert table.count("\n") == 3 and "lowdim (quick)" in table and "ddpm10_b50" in table


def test_parse_samplers_and_unknown_variant():
  assert bench.parse_samplers(["ddpm:100", "ddim:10"]) == [("ddpm", 100), ("ddim", 10)]
  with pytest.raises(ValueError, match="method:num_inference_steps"):
    bench.parse_samplers(["ddpm"])
  with pytest.raises(ValueError, match="Unknown bench variant"):
    bench.run(["lowdim", "imgae"], quick=True)
