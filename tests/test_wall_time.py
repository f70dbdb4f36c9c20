"""RUN/wall_time.json: phases add up, the loop's rest is training, the file is whole after every write."""
import json

from dpjax import wall_time


class FakeClock:

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_phases_split_the_loop_and_training_is_what_is_left(tmp_path):
  clock = FakeClock()
  spent = wall_time.WallTime(tmp_path, clock=clock)
  clock.now += 3.0
  spent.end_setup(start_step=40)
  clock.now += 20.0
  spent.end_first_dispatch()
  clock.now += 5.0                      # training
  with spent.phase("validation"):
    clock.now += 2.0
  spent.add("checkpoint_blocking", 0.5)
  clock.now += 0.5
  spent.write(end_step=80)
  halfway = json.loads((tmp_path / wall_time.FILE_NAME).read_text())
  assert halfway["training_s"] == 5.0 and halfway["end_step"] == 80
  clock.now += 4.0                      # training
  spent.end_loop()
  with spent.phase("final_save_wait"):
    clock.now += 7.0
  spent.write(end_step=100)
  record = wall_time.read(tmp_path)
  assert {k: record[k] for k in ("start_step", "end_step", "setup_s", "first_dispatch_s", "training_s",
                                 "validation_s", "checkpoint_blocking_s", "final_save_wait_s", "rollouts_s")} == {
      "start_step": 40, "end_step": 100, "setup_s": 3.0, "first_dispatch_s": 20.0, "training_s": 9.0,
      "validation_s": 2.0, "checkpoint_blocking_s": 0.5, "final_save_wait_s": 7.0, "rollouts_s": 0.0}
  before = record["before_train_s"] or 0.0
  assert record["total_s"] == round(before + 3.0 + 20.0 + 9.0 + 2.0 + 0.5 + 7.0, 3)


def test_process_age_is_positive_and_below_the_machine_uptime():
  age = wall_time.seconds_since_process_start()
  uptime = float(open("/proc/uptime").read().split()[0])
  assert age is not None and 0.0 < age <= uptime


def test_a_run_without_the_file_reads_none(tmp_path):
  assert wall_time.read(tmp_path) is None


def test_compile_time_is_counted_inside_the_first_dispatch(tmp_path):
  import jax
  import jax.numpy as jnp
  spent = wall_time.WallTime(tmp_path)
  spent.end_setup(start_step=0)
  jax.jit(lambda x: jnp.tanh(x) * 3.0 + x.sum())(jnp.ones((7, 5))).block_until_ready()   # a program not seen before
  spent.end_first_dispatch()
  record = spent.as_dict(end_step=1)
  assert 0.0 < record["first_dispatch_compile_s"] <= record["compile_s"]
  assert record["first_dispatch_compile_s"] <= record["first_dispatch_s"] + 1e-3
