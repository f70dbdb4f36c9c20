"""What experiments/bench/tpu_compile.py reads from a compiled program (the collectives of its loop body,
`hlo.collectives`, and its memory plan), on a data-parallel program compiled for the 8 CPU devices: the TPU
check's numbers come from the same parsing, and CI has no libtpu to compile for a TPU."""
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpjax import config_files, hlo, sharding

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tpu_compile():
  return config_files.load_module(ROOT / "experiments/bench/tpu_compile.py")


def _data_parallel_sums():
  """A scan of 3 steps, each summing a batch-sharded [8, 1000] float32 array over its batch axis (one all-reduce of
  f32[1000] per step, inside the loop), compiled for the 8 CPU devices."""
  mesh = sharding.make_mesh(jax.devices()[:8])

  def steps(total, xs):
    def body(total, x):
      return total + jnp.sin(x).sum(0), None
    return jax.lax.scan(body, total, xs)[0]

  fn = jax.jit(steps, in_shardings=(sharding.replicated(mesh), sharding.stacked_batch_sharding(mesh)),
               out_shardings=sharding.replicated(mesh))
  return fn.lower(np.zeros(1000, np.float32), np.ones((3, 8, 1000), np.float32)).compile()


def test_collectives_of_the_loop_body_and_the_memory_plan(tpu_compile):
  compiled = _data_parallel_sums()
  text = compiled.as_text()
  found = tpu_compile.loop_body_collectives(text)
  assert set(found) == {"all-reduce"} and found["all-reduce"]["count"] >= 1
  assert found["all-reduce"]["bytes"] == 4000 * found["all-reduce"]["count"]   # f32[1000] each
  assert hlo.collectives(text) == {}                                          # none outside the loop
  assert hlo.collectives("ENTRY %main () -> f32[4] {\n  ROOT %x = f32[4]{0} add(%a, %b)\n}") == {}
  record = tpu_compile.program_record(compiled, 1.23)
  memory = record["memory_per_chip_bytes"]
  assert record["compile_s"] == 1.2 and set(memory) == {"argument", "output", "alias", "temp", "generated_code"}
  assert memory["argument"] >= 3 * 1000 * 4 and memory["output"] >= 1000 * 4   # per device: its shard and the sum
  assert record["peak_per_chip_bytes"] == tpu_compile.peak_bytes(record) == (
      memory["argument"] + memory["output"] - memory["alias"] + memory["temp"] + memory["generated_code"])


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is not None, reason="libtpu is installed here")
def test_without_libtpu_the_check_says_how_to_get_it(tpu_compile):
  with pytest.raises(SystemExit, match=r"No libtpu in this environment .*: run `make tpu-aot`"):
    tpu_compile.compile_only_devices("v5e:2x4")


def test_compiling_for_gpus_names_a_known_card_and_says_how_to_get_the_compiler(tpu_compile):
  for spec in ("a100:8", "h100:x", "h100:0"):
    with pytest.raises(SystemExit, match=r"name a GPU and a count, e.g. h100:8 \(\['h100', 'h200'\]\)"):
      tpu_compile.compile_only_gpus(spec)
  with pytest.raises(SystemExit, match=r"No CUDA compiler in this environment .*: run `make gpu-aot`"):
    tpu_compile.compile_only_gpus("h100:8")   # this venv's jaxlib has no CUDA plugin


def test_the_reflow_student_s_teacher_runs_the_chain_distillation_gives_it(tpu_compile):
  """`--reflow_student` compiles the student's step with an abstract DDPM teacher set up as `distill.load_teacher`
  sets a real one by default: DDIM, config.distill.teacher_steps steps, the variant's network and compute dtype."""
  config, _, student_spec = tpu_compile.bfloat16_setup("lowdim", ",flow")
  placement = sharding.replicated(sharding.make_mesh(jax.devices()[:1]))
  distillation = tpu_compile.reflow_distillation("lowdim", config, placement)
  teacher = distillation.teacher.spec
  assert student_spec.objective == "flow" and teacher.objective == "ddpm"
  assert (teacher.sampler, teacher.num_inference_steps) == ("ddim", config.distill.teacher_steps)
  same_network = lambda spec: {k: v for k, v in spec.network_fields().items() if k != "objective"}
  assert same_network(teacher) == same_network(student_spec) and teacher.compute_dtype == "bfloat16"
  assert distillation.fraction_at_noise == config.distill.fraction_at_noise
  leaves = jax.tree.leaves(distillation)
  assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) and x.sharding == placement for x in leaves)


@pytest.mark.parametrize("error, message", [
    ("INVALID_ARGUMENT: Invalid TPU external name: TPU v9z", r"cannot compile for topology 'v9z:2x2' .*: name a slice"),
    ("ABORTED: Internal error when accessing libtpu multi-process lockfile.",
     r"libtpu could not start .*: it compiles for one process at a time; .* /tmp/libtpu_lockfile")])
def test_a_topology_libtpu_cannot_open_stops_with_one_line_saying_why(tpu_compile, monkeypatch, error, message):
  def fail(*args, **kwargs):
    raise RuntimeError(error + "\n=== Source Location Trace: ===")
  monkeypatch.setattr(tpu_compile.topologies, "get_topology_desc", fail)
  with pytest.raises(SystemExit, match=message):
    tpu_compile.compile_only_devices("v9z:2x2")
