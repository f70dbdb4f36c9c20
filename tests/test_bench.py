"""dpjax.bench: the --quick benchmark runs end to end and writes every number, positive and finite."""
import json
import math
import os

import pytest

from dpjax import bench, hlo

TRAIN_FIELDS = ("compile_s", "lower_s", "time_s", "steps_per_s", "samples_per_s", "step_ms", "batch_size", "steps")
SAMPLING_FIELDS = ("first_call_s", "median_ms", "min_ms", "max_ms", "per_step_ms", "batch_size",
                   "num_inference_steps", "repeats")


def is_positive_finite(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def test_quick_bench_writes_positive_finite_numbers(tmp_path):
  out = tmp_path / "bench.json"
  # One variant: the others run the same code on another network (~25 s more on the 2-core CI for nothing new).
  records = bench.run(["lowdim"], out=out, log=lambda *_: None, quick=True, steps=1, repeats=1, flat_moments=False,
                      shard_ema_and_moments=True)
  written = json.loads(out.read_text())
  assert written["records"] == json.loads(json.dumps(records))
  assert written["device"]["device_count"] >= 1 and written["device"]["host_cpu_count"] >= 1
  assert [r["variant"] for r in written["records"]] == ["lowdim"]
  for record in written["records"]:
    assert record["quick"] and record["config"] == "configs/pusht.py:lowdim,smoke"
    assert record["overrides"] == {"optim.flat_moments": False,   # per-array moments (a CPU's default: flat)
                                   "train.shard_ema_and_moments": True}
    assert is_positive_finite(record["num_params"])
    assert record["num_params"] == record["num_params_encoder"] + record["num_params_denoiser"]
    assert sorted(record["kernels_per_denoiser_call"]) == ["b1", "b50"]
    assert all(is_positive_finite(n) for n in record["kernels_per_denoiser_call"].values())
    train = record["train"]
    for field in TRAIN_FIELDS:
      assert is_positive_finite(train[field]), (record["variant"], field, train[field])
    assert train["batch_size"] == 8   # the smoke variant's global batch, split over conftest's 8 devices
    assert train["flat_moments"] is False   # the layout the benchmarked step ran
    assert train["shard_ema_and_moments"] is True and is_positive_finite(train["argument_bytes_per_device"])
    # Every sampler x batch size; the smoke schedule caps DDPM's 100 steps at its 10 training steps.
    assert sorted(record["sampling"]) == ["ddim10_b1", "ddim10_b50", "ddpm10_b1", "ddpm10_b50"]
    for name, result in record["sampling"].items():
      for field in SAMPLING_FIELDS:
        assert is_positive_finite(result[field]), (record["variant"], name, field, result[field])
      assert result["compile_s"] >= 0.0
    device = record["device"]
    assert device["platform"] and device["device_kind"] and device["jax_version"] and device["date"]
    assert device["xla_flags"] == os.environ["XLA_FLAGS"]   # conftest's, which the numbers depend on
  table = bench.markdown_table(records)
  assert table.count("\n") == 2 and "lowdim (quick)" in table and "ddpm10_b50" in table


def test_parse_samplers_and_unknown_variant():
  assert bench.parse_samplers(["ddpm:100", "ddim:10"]) == [("ddpm", 100), ("ddim", 10)]
  with pytest.raises(ValueError, match="method:num_inference_steps"):
    bench.parse_samplers(["ddpm"])
  with pytest.raises(ValueError, match="method:num_inference_steps"):   # found before minutes of train benchmark
    bench.parse_samplers(["ddim:0"])
  with pytest.raises(ValueError, match="Unknown bench variant"):
    bench.run(["lowdim", "imgae"], quick=True)


def test_flow_policies_bench_with_their_samplers():
  record = bench.bench_variant("lowdim", quick=True, objective="flow", samplers=[("euler", 1), ("heun", 2)],
                               sample_batch_sizes=[1], steps=1, repeats=1, log=lambda *_: None)
  assert record["policy_spec"]["objective"] == "flow"
  assert sorted(record["sampling"]) == ["euler1_b1", "heun2_b1"]
  with pytest.raises(ValueError, match="does not apply to a 'flow' model"):
    bench.bench_variant("lowdim", quick=True, objective="flow", samplers=[("ddim", 10)])


def test_kernel_count_counts_the_entry_computation_only():
  text = """HloModule m
%fused (p: f32[2]) -> f32[2] {
  %p = f32[2]{0} parameter(0)
  ROOT %n = f32[2]{0} negate(f32[2]{0} %p)
}
ENTRY %main (a: f32[2], b: f32[2,2]) -> (f32[2], f32[2]) {
  %a = f32[2]{0} parameter(0)
  %b = f32[2,2]{1,0} parameter(1)
  %fusion = f32[2]{0} fusion(f32[2]{0} %a), kind=kLoop, calls=%fused
  %dot = f32[2]{0} dot(f32[2,2]{1,0} %b, f32[2]{0} %fusion), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  ROOT %t = (f32[2]{0}, f32[2]{0}) tuple(f32[2]{0} %fusion, f32[2]{0} %dot)
}
"""
  assert hlo.kernel_count(text) == 2
  assert hlo.kernel_count(text, "fused") == 1   # a named computation (e.g. a while body) instead of ENTRY


def test_while_bodies_names_each_loop_body():
  text = "  %w = (s32[], f32[2]) while((s32[], f32[2]) %t), condition=%cond.3, body=%region_4.102.clone\n"
  assert hlo.while_bodies(text) == ["region_4.102.clone"]


def test_bytes_moved_reads_what_a_fusion_slices_and_all_that_it_reduces():
  text = """HloModule m
%sliced (p0: f32[1000], p1: f32[10]) -> f32[10] {
  %p0 = f32[1000]{0} parameter(0)
  %p1 = f32[10]{0} parameter(1)
  %e = f32[1000]{0} exponential(%p0)
  %s = f32[10]{0} slice(%e), slice={[5:15]}
  ROOT %sum = f32[10]{0} add(%s, %p1)
}
%summed (q0: f32[1000]) -> f32[] {
  %q0 = f32[1000]{0} parameter(0)
  %zero = f32[] constant(0)
  ROOT %r = f32[] reduce(%q0, %zero), dimensions={0}, to_apply=%add
}
ENTRY %main (a: f32[1000], b: f32[10]) -> (f32[10], f32[]) {
  %a = f32[1000]{0} parameter(0)
  %b = f32[10]{0} parameter(1)
  %fusion = f32[10]{0} fusion(%a, %b), kind=kLoop, calls=%sliced
  %fusion.2 = f32[] fusion(%a), kind=kInput, calls=%summed
  ROOT %t = (f32[10]{0}, f32[]) tuple(%fusion, %fusion.2)
}
"""
  # The slice reads 10 of a's 1000 elements (through the element-wise exp); the reduction reads all of them.
  assert hlo.kernel_bytes(text) == [("fusion", 40 + 40, 40), ("fusion.2", 4000, 4)]
  assert hlo.bytes_moved(text) == 120 + 4004
  assert len(hlo.kernel_bytes(text)) == hlo.kernel_count(text)
