"""Data-parallel sharding, expressed once: a 1-D mesh over all devices named "data".

Batches are split along their leading axis over "data"; the weights are replicated, and so are the EMA weights
and optimiser state unless a run asks to split them over the devices (`split_over_data_axis`,
config.train.shard_ema_and_moments). Model code never mentions the mesh.
"""
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over `devices` (default: every device of every process), in the order `jax.make_mesh` picks for
  the hardware's topology (a ring on TPU pods, so the gradient all-reduce takes neighbouring links). Auto axes: the
  shardings are given to `jax.jit`, not carried in the array types."""
  devices = list(jax.devices() if devices is None else devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the mesh."""
  return NamedSharding(mesh, P(DATA_AXIS))


def stacked_batch_sharding(mesh: Mesh) -> NamedSharding:
  """A stack of batches [n, B, ...]: the batch axis (1) split over the mesh."""
  return NamedSharding(mesh, P(None, DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def split_over_data_axis(shape: Sequence[int], mesh: Mesh) -> NamedSharding:
  """An array of `shape` split over the data axis along its largest axis that the device count divides
  (the first such axis on a tie); replicated when none does or the mesh has one device."""
  devices = mesh.devices.size
  axes = [i for i, size in enumerate(shape) if size % devices == 0] if devices > 1 else []
  if not axes:
    return replicated(mesh)
  axis = max(axes, key=lambda i: (shape[i], -i))
  return NamedSharding(mesh, P(*[DATA_AXIS if i == axis else None for i in range(len(shape))]))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
  """Raises ValueError unless the global batch splits evenly over devices and processes."""
  num_devices = mesh.devices.size
  if global_batch_size % num_devices:
    raise ValueError(
        f"Global batch size {global_batch_size} does not divide by the {num_devices} devices in the mesh; "
        f"set --config.train.batch_size to a multiple of {num_devices} "
        f"(e.g. {max(num_devices, global_batch_size // num_devices * num_devices)}).")
  if global_batch_size % jax.process_count():
    raise ValueError(f"Global batch size {global_batch_size} does not divide by the {jax.process_count()} processes.")


def put_global_batch(local_batch: Any, mesh: Mesh) -> Any:
  """Assembles a global, batch-sharded jax.Array pytree from each process's local numpy batch."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def put_global_stack(local_batches: Sequence[Any], mesh: Mesh) -> Any:
  """Stacks n process-local numpy batches into one global [n, B, ...] pytree, batch axis split over the mesh."""
  sharding = stacked_batch_sharding(mesh)
  stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *local_batches)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), stacked)


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  return jax.device_put(tree, replicated(mesh))


def any_process(flags: tuple[bool, ...]) -> tuple[bool, ...]:
  """Each flag, true on any process: the same answer everywhere (one small all-gather between processes), for
  decisions every process must take alike (a stop request, where the demonstrations live)."""
  if jax.process_count() == 1:
    return tuple(bool(f) for f in flags)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  gathered = np.asarray(multihost_utils.process_allgather(np.asarray(flags, np.int32)))
  return tuple(bool(f) for f in gathered.reshape(-1, len(flags)).any(axis=0))
