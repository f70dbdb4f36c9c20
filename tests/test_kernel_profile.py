"""The GPU kernel profile's trace summary (experiments/bench/kernel_profile.py) on a synthetic device trace: the
numbers a GPU session brings back must be right the first time it runs."""
import pathlib

import pytest

from dpjax import config_files

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kernel_profile():
  return config_files.load_module(ROOT / "experiments/bench/kernel_profile.py")


def _trace():
  meta = [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
          {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/host:CPU"}},
          {"ph": "M", "name": "thread_name", "pid": 1, "tid": 7, "args": {"name": "Stream #7(Compute)"}},
          {"ph": "M", "name": "thread_name", "pid": 1, "tid": 9, "args": {"name": "XLA Ops"}}]
  kernel = lambda name, ts, dur: {"ph": "X", "pid": 1, "tid": 7, "name": name, "ts": ts, "dur": dur}
  kernels = [kernel("gemm_fusion_dot_3", 0.0, 50.0), kernel("loop_add_fusion_1", 60.0, 2.0),
             kernel("loop_add_fusion_2", 61.0, 4.0),           # overlaps the one before: busy 60 -> 65
             kernel("gemm_fusion_dot_4", 100.0, 200.0)]
  others = [{"ph": "X", "pid": 1, "tid": 9, "name": "fusion.1", "ts": 0.0, "dur": 300.0},   # op lines: not kernels
            {"ph": "X", "pid": 2, "tid": 1, "name": "PjitFunction", "ts": 0.0, "dur": 500.0}]
  return {"traceEvents": meta + others + kernels[::-1]}


def test_device_stream_events_are_the_kernels(kernel_profile):
  kernels, census = kernel_profile.device_kernel_events(_trace())
  assert [e["name"] for e in kernels] == ["gemm_fusion_dot_3", "loop_add_fusion_1", "loop_add_fusion_2",
                                          "gemm_fusion_dot_4"]                       # in time order
  assert census == {"/device:GPU:0 | XLA Ops": 1, "/device:GPU:0 | Stream #7(Compute)": 4}


def test_summary_per_step(kernel_profile):
  kernels, _ = kernel_profile.device_kernel_events(_trace())
  summary = kernel_profile.summarize(kernels, steps=2)
  assert summary["kernels"] == 2.0
  assert summary["busy_ms"] == pytest.approx((50 + 5 + 200) / 2 / 1e3)
  assert summary["gap_ms"] == pytest.approx((300 - 255) / 2 / 1e3)
  assert summary["kernel_ms"] == pytest.approx(256 / 2 / 1e3)
  assert summary["duration_histogram"]["< 3 us"] == {"kernels": 0.5, "ms": 0.001}
  assert summary["duration_histogram"][">= 100 us"] == {"kernels": 0.5, "ms": 0.1}
  assert [(f["name"], f["per_step"]) for f in summary["families"]] == [("gemm_fusion_dot", 1.0),
                                                                        ("loop_add_fusion", 1.0)]
  assert summary["top_kernels"][0] == {"name": "gemm_fusion_dot_4", "per_step": 0.5, "ms_per_step": 0.1,
                                       "mean_us": 200.0}
  assert kernel_profile.summarize([], steps=2)["kernels"] == 0
  assert kernel_profile.family("loop_add_fusion.3") == "loop_add_fusion"
