"""Demonstrations resident on the accelerators: windows are gathered inside the jitted train step.

The host then only sends each step's window ids (grain still decides the order, the per-process share and the
resumable position; `pipeline.make_train_dataset(..., yield_window_ids=True)`), so the accelerator never waits
for a host gather or a host-to-device copy of a batch. Push-T is ~2 MB low-dim and ~0.7 GB as uint8 images, far
below one GPU's memory; `fits_on_devices` decides, and training falls back to the host pipeline when it does not.

`gather(data, ids)` returns exactly `SequenceSource.gather_batch(ids)` (same windows, same edge padding, same
dtypes), so both placements train on identical batches for the same seed.
"""
import math
import os
from typing import Any, Sequence

import chex
import jax
import numpy as np
from flax import struct

from dpjax import sharding
from dpjax.data import windows

# Device memory the resident demonstrations may take, as a fraction of what each device has: the rest is for
# weights, optimiser state, activations and XLA's scratch space.
MEMORY_FRACTION = 0.25
PLACEMENTS = ("auto", "device", "host")


@struct.dataclass
class DeviceWindows:
  """Per-step arrays and the window table of one `SequenceSource`, as (replicated) device arrays.

  Attributes:
    obs: {key: [N, ...]} per-step observations (float32, images uint8).
    action: float32 [N, Da].
    steps: int32 [W, T] buffer step read at each window position (`windows.window_steps`).
    n_obs_steps: To (static).
  """
  obs: dict[str, jax.Array]
  action: jax.Array
  steps: jax.Array
  n_obs_steps: int = struct.field(pytree_node=False)


def nbytes(source: windows.SequenceSource) -> int:
  """Bytes one device copy of `source` takes."""
  return (sum(v.nbytes for v in source.obs.values()) + source.action.nbytes
          + math.prod(source.steps_table.shape) * np.dtype(np.int32).itemsize)


def _device_memory_bytes(device: jax.Device) -> int:
  """Memory of one device: its allocator's limit, or, for CPU devices (which share the host's RAM), the host's
  physical memory divided among the local devices."""
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  return host // max(jax.local_device_count(), 1)


def fits_on_devices(source: windows.SequenceSource, devices: Sequence[jax.Device],
                    fraction: float = MEMORY_FRACTION) -> bool:
  """True when one copy of `source` takes at most `fraction` of every local device's memory."""
  local = [d for d in devices if d.process_index == jax.process_index()] or list(devices)
  return all(nbytes(source) <= fraction * _device_memory_bytes(d) for d in local)


def choose_placement(placement: str, source: windows.SequenceSource, devices: Sequence[jax.Device]) -> str:
  """Resolves config.data.placement ("auto" | "device" | "host") to "device" or "host"."""
  if placement not in PLACEMENTS:
    raise ValueError(f"config.data.placement={placement!r} is not one of {PLACEMENTS}.")
  if placement == "auto":
    # Each process measures its own devices; all must take the same jitted step, so one that lacks room decides.
    (too_big_somewhere,) = sharding.any_process((not fits_on_devices(source, devices),))
    return "host" if too_big_somewhere else "device"
  return placement


def put_replicated(source: windows.SequenceSource, sharding: jax.sharding.Sharding) -> DeviceWindows:
  """One full copy of `source`'s arrays on every device of `sharding` (every process passes the same data)."""
  def put(array: np.ndarray) -> jax.Array:
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])

  return DeviceWindows(obs={k: put(v) for k, v in source.obs.items()}, action=put(source.action),
                       steps=put(source.steps_table.astype(np.int32)), n_obs_steps=source.n_obs_steps)


def gather(data: DeviceWindows, window_ids: jax.Array) -> dict[str, Any]:
  """Batch of windows, inside jit: {"obs": {key: [B, To, ...]}, "action": float32 [B, T, Da]}.

  Args:
    data: the resident arrays.
    window_ids: int [B] window indices.
  """
  chex.assert_rank(window_ids, 1)
  return windows.gather_windows(data.obs, data.action, data.steps[window_ids], data.n_obs_steps)
