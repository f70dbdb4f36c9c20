"""Where the training state lives on a mesh: replicated, or the EMA weights and optimiser state split over the
devices (config.train.shard_ema_and_moments; 8 virtual CPU devices, conftest)."""
import json
import re

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from dpjax import config_files, optim, sharding, train_step
from tests import smoke


def test_an_array_is_split_along_its_largest_axis_the_device_count_divides():
  mesh = sharding.make_mesh()
  assert mesh.devices.size == 8, "conftest sets 8 host devices"
  split = lambda shape: sharding.split_over_data_axis(shape, mesh).spec   # noqa: E731
  assert split((5, 32, 64)) == P(None, None, "data")
  assert split((64, 5, 32)) == P("data", None, None)
  assert split((16, 16)) == P("data", None)      # a tie: the first
  assert split((256,)) == P("data")
  assert split((3, 5)) == P() and split(()) == P()   # nothing divides: replicated
  one = sharding.make_mesh(jax.devices()[:1])
  assert sharding.split_over_data_axis((64, 64), one).is_fully_replicated
  # config.train.shard_ema_and_moments applies where there is more than one device
  assert train_step.resolve_split(True, mesh) and not train_step.resolve_split(True, one)
  assert not train_step.resolve_split(False, mesh)


def _state_after_steps(split: bool, batches, pol, optimizer, ema_config, mesh):
  shardings = train_step.state_sharding(pol.params, optimizer, mesh, split)
  state = train_step.init_train_state(pol.params, optimizer, shardings)
  steps_fn = train_step.jit_train_steps(pol.spec, optimizer, ema_config, shardings,
                                        sharding.stacked_batch_sharding(mesh), sharding.replicated(mesh))
  normalizer, key = sharding.put_replicated(pol.normalizer, mesh), jax.random.key(3)
  compiled = steps_fn.lower(state, batches[0], key, normalizer, None, None).compile()   # once: also run below
  losses = []
  for stack in batches:
    state, step_metrics = compiled(state, stack, key, normalizer, None, None)
    losses.extend(np.asarray(step_metrics["loss"]))
  return state, np.asarray(losses), compiled.memory_analysis().argument_size_in_bytes


def test_split_ema_and_moments_train_like_replicated_with_an_eighth_of_them_per_device():
  """Two dispatches of 2 steps (the scan path): the same losses, weights, EMA and moments to float rounding, the
  weights still replicated, every EMA and moment array that 8 divides split, and the step's arguments per device
  (weights, EMA, two moments, a batch) shrink from 4x to 1 + 3/8 x the weights."""
  pol = smoke.random_policy()
  config = config_files.get_config("smoke")
  config.optim.flat_moments = False
  optimizer = optim.make_optimizer(config.optim, pol.params, pol.spec.denoiser, 100)
  mesh = sharding.make_mesh()
  batches = [sharding.put_global_stack([smoke.random_batch(pol.spec, 16, 2 * i + j) for j in range(2)], mesh)
             for i in range(2)]
  replicated, losses, replicated_bytes = _state_after_steps(False, batches, pol, optimizer, config.ema, mesh)
  split, split_losses, split_bytes = _state_after_steps(True, batches, pol, optimizer, config.ema, mesh)

  np.testing.assert_allclose(split_losses, losses, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(split), jax.tree.leaves(replicated)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
  assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(split.params))
  for x in jax.tree.leaves((split.ema_params, split.opt_state)):
    assert x.sharding.is_fully_replicated == (not any(size % 8 == 0 for size in x.shape)), (x.shape, x.sharding)
  weights = sum(x.nbytes for x in jax.tree.leaves(pol.params))
  assert replicated_bytes > 3.99 * weights                    # measured 4.004
  assert split_bytes < (1 + 3 / 8 + 0.02) * weights, (split_bytes, weights)   # measured 1.379


@pytest.mark.parametrize("split, flat", [(True, False), (False, True)])
def test_split_moments_default_to_per_array(split, flat):
  """A flat moment vector's length rarely divides by the device count, so splitting leaves the layout per array
  where the config does not set it; a set value is kept."""
  from dpjax import bench, policy
  from dpjax.data import pusht
  config = config_files.get_config("smoke")
  spec = policy.spec_from_config(config, pusht.OBS_SHAPES["lowdim"], bench.ACTION_DIM)
  params = jax.eval_shape(lambda key: policy.init_params(spec, key), jax.random.key(0))
  assert optim.resolve_flat_moments(config.optim, params, spec.denoiser, "gpu", split_over_devices=split) is flat
  config.optim.flat_moments = True
  assert optim.resolve_flat_moments(config.optim, params, spec.denoiser, "gpu", split_over_devices=split) is True


@pytest.mark.parametrize("flat", [True, False])
def test_the_start_line_says_how_much_each_device_holds_and_why_flat_moments_stay_whole(flat):
  """The smoke network's flat moment vector (81,346 values) divides by no 8: it stays whole, and the line says why
  and how to get moments that split."""
  from dpjax import train
  pol = smoke.random_policy()
  config = config_files.get_config("smoke")
  config.optim.flat_moments = flat
  optimizer = optim.make_optimizer(config.optim, pol.params, pol.spec.denoiser, 100)
  mesh = sharding.make_mesh()
  abstract_state = train_step.abstract_train_state(pol.params, optimizer,
                                                   train_step.state_sharding(pol.params, optimizer, mesh, True))
  line = train._state_memory_line(abstract_state, mesh, flat)
  held, total = map(float, re.search(r"([\d.]+) MiB per device of ([\d.]+) MiB", line).groups())
  assert held < (0.8 if flat else 0.2) * total, line
  assert ("stay whole" in line) == flat, line


class _Iterator:
  """What grain's checkpoint handler reads and writes of a data iterator."""

  def __init__(self, position: int = 0):
    self.position = position

  def get_state(self):
    return {"position": self.position}

  def set_state(self, state):   # grain hands back the JSON bytes `checkpoint.IteratorPosition` wrote
    self.position = json.loads(state)["position"]

  def start_prefetch(self):   # grain's restore calls it
    pass


def test_a_split_checkpoint_restores_whole_on_one_device_and_split_on_another_count(tmp_path):
  """Orbax saves each device's slices; a resume places them as its own run asks (`restore_train_state` into the
  target's shardings): replicated on one device, split over four, and back, the same values."""
  from dpjax import checkpoint
  pol = smoke.random_policy()
  config = config_files.get_config("smoke")
  config.optim.flat_moments = False
  optimizer = optim.make_optimizer(config.optim, pol.params, pol.spec.denoiser, 100)
  eight, one, four = (sharding.make_mesh(jax.devices()[:n]) for n in (8, 1, 4))
  split = train_step.state_sharding(pol.params, optimizer, eight, True)
  distinct = lambda x: x + jax.numpy.arange(x.size, dtype=x.dtype).reshape(x.shape) / 7   # noqa: E731
  state = jax.jit(lambda s: jax.tree.map(distinct, s), out_shardings=split)(
      train_step.init_train_state(pol.params, optimizer, split)).replace(step=jax.numpy.int32(5))
  manager = checkpoint.make_manager(tmp_path, keep=2)
  checkpoint.save(manager, state, _Iterator(11), pol.normalizer, pol.spec, config)
  manager.wait_until_finished()
  for mesh, split_there in ((one, False), (four, True)):
    target = train_step.abstract_train_state(pol.params, optimizer,
                                             train_step.state_sharding(pol.params, optimizer, mesh, split_there))
    restored, iterator = checkpoint.restore_train_state(manager, target, _Iterator())
    assert int(restored.step) == 5 and iterator.position == 11
    for got, want, placed in zip(jax.tree.leaves(restored), jax.tree.leaves(state), jax.tree.leaves(target)):
      assert got.sharding == placed.sharding
      np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  manager.close()
