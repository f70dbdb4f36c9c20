"""Device-resident demonstrations: the same batches as the host pipeline, the same resumable order, the fallback."""
import jax
import numpy as np
import pytest

from dpjax import sharding
from dpjax.data import device_data, pipeline, synthetic, windows

LENGTHS = (20, 12, 30, 9, 25, 17)
T, TO, TA = 16, 2, 8


def _source(image: bool) -> windows.SequenceSource:
  data, ends = synthetic.synthetic_pusht_arrays(LENGTHS, image=image, values="random_walk")
  if image:
    obs = {"image": data["img"], "agent_pos": data["state"][:, :2]}
  else:
    obs = {"low_dim": np.concatenate([data["keypoint"].reshape(-1, 18), data["state"][:, :2]], axis=1)}
  return windows.SequenceSource.from_episodes(obs, data["action"], ends, np.arange(len(LENGTHS)), T, TO, TA)


def _iterator(source, yield_window_ids):
  return pipeline.make_train_iterator(source, 8, 3, process_index=0, process_count=1,
                                      yield_window_ids=yield_window_ids)


@pytest.mark.parametrize("image", [False, True])
def test_device_gather_equals_host_batches_for_the_same_seed(image):
  source = _source(image)
  mesh = sharding.make_mesh()
  resident = device_data.put_replicated(source, sharding.replicated(mesh))
  gather = jax.jit(device_data.gather)
  host, ids = _iterator(source, False), _iterator(source, True)
  for _ in range(2 * len(source) // 8 + 1):   # across an epoch boundary
    expected, window_ids = next(host), next(ids)
    assert window_ids.shape == (8,)
    got = jax.device_get(gather(resident, sharding.put_global_batch(window_ids, mesh)))
    np.testing.assert_array_equal(got["action"], expected["action"])
    assert got["obs"].keys() == expected["obs"].keys()
    for key in expected["obs"]:
      assert got["obs"][key].dtype == expected["obs"][key].dtype
      np.testing.assert_array_equal(got["obs"][key], expected["obs"][key])


def test_window_id_iterator_resumes_like_the_batch_iterator():
  source = _source(False)
  ids, host = _iterator(source, True), _iterator(source, False)
  for _ in range(5):
    next(ids), next(host)
  assert ids.get_state() == host.get_state()
  resumed = _iterator(source, True)
  resumed.set_state(ids.get_state())
  for _ in range(4):
    np.testing.assert_array_equal(next(resumed), next(ids))


def test_placement_auto_falls_back_to_host_when_the_data_does_not_fit(monkeypatch):
  source = _source(True)
  devices = jax.devices()
  assert device_data.choose_placement("auto", source, devices) == "device"
  assert device_data.nbytes(source) == (source.obs["image"].nbytes + source.obs["agent_pos"].nbytes
                                        + source.action.nbytes + source.steps_table.size * 4)
  monkeypatch.setattr(device_data, "_device_memory_bytes", lambda device: 3 * device_data.nbytes(source))
  assert device_data.choose_placement("auto", source, devices) == "host"
  assert device_data.choose_placement("device", source, devices) == "device"
  with pytest.raises(ValueError, match=r"config.data.placement='gpu' is not one of \('auto', 'device', 'host'\)"):
    device_data.choose_placement("gpu", source, devices)


def test_placement_auto_is_host_everywhere_when_any_process_lacks_room(monkeypatch):
  # Every process must run the same jitted step: one process whose devices lack room sends all of them to the host.
  # (tests/test_multiprocess.py runs the real all-gather across two processes.)
  source = _source(True)
  assert sharding.any_process((False, True)) == (False, True)   # one process: its own answers
  monkeypatch.setattr(sharding, "any_process", lambda flags: (True,) * len(flags))   # another process: no room
  assert device_data.choose_placement("auto", source, jax.devices()) == "host"
