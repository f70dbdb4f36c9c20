"""How long a checkpoint save blocks the training loop: `checkpoint.save` (orbax's asynchronous save, called in the
training thread) against `checkpoint.BackgroundSaver` (what `dpjax.train` uses), for the full-size low-dim CNN's
train state (weights, EMA, Adam moments: 1.05 GB) with random values.

    PYTHONPATH=. python experiments/bench/checkpoint_blocking.py            # 6 saves each, 6 s apart

Session 5, 2-core CPU: 0.26-0.45 s per save -> 0.07-0.18 s (BUILD_NOTES.md, "Session 5 on the 2-core CPU").
"""
import json
import sys
import tempfile
import time

import jax
import numpy as np

from dpjax import bench, checkpoint, data, optim, policy, train_step
from dpjax.data import pusht

SAVES, PAUSE_S = 6, 6.0


def blocking_times(threaded: bool) -> list[float]:
  config = bench.load_config("lowdim")
  spec = policy.spec_from_config(config, pusht.OBS_SHAPES["lowdim"], bench.ACTION_DIM)
  params = bench.random_params(spec, np.random.default_rng(0))
  optimizer = optim.make_optimizer(config.optim, params, spec.denoiser, 1000)
  state = train_step.init_train_state(params, optimizer, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  bundle = data.build_data(config)
  iterator = data.make_train_iterator(bundle, config, config.train.batch_size)
  next(iterator)
  times = []
  with tempfile.TemporaryDirectory() as run_dir:
    manager = checkpoint.make_manager(run_dir, keep=2)
    saver = checkpoint.BackgroundSaver(manager, like=state, threaded=True) if threaded else None
    for _ in range(SAVES):
      state = state.replace(step=state.step + 100)
      start = time.perf_counter()
      if threaded:
        saver.save(state, iterator, bundle.normalizer, spec, config)
      else:
        checkpoint.save(manager, state, iterator, bundle.normalizer, spec, config)
      times.append(time.perf_counter() - start)
      time.sleep(PAUSE_S)   # training goes on; the files are written meanwhile
    saver.close() if threaded else manager.close()
  return times


if __name__ == "__main__":
  result = {"device": jax.devices()[0].device_kind, "checkpoint.save": blocking_times(False),
            "BackgroundSaver": blocking_times(True)}
  json.dump(result, sys.stdout, indent=2)
  print()
