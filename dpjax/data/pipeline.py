"""Grain training pipeline: shuffled, repeated, per-process sharded, batched, prefetched, resumable.

The stream of windows is an endless sequence of epochs, each a fresh permutation of all W windows
drawn from (seed, epoch). Global batch b is stream positions [b * B, (b + 1) * B); process p of P keeps
the contiguous block [p * B / P, (p + 1) * B / P) of it, which is exactly where
`jax.make_array_from_process_local_data` places process p's rows. So the assembled global batch equals the
one a single process would build, row for row, whatever P, and a run is reproducible from its seed alone.

Why not `MapDataset.range(W).seed(s).shuffle().repeat()[p::P].batch(...)`: that computes the shuffled
index of every element in Python, ~6 ms per 256-window batch on one CPU core (the numpy gather itself
takes 0.05 ms). `ShuffledBatchIndices` computes a whole batch of indices with a few numpy ops and is
wrapped as a grain source, so grain still provides threads, prefetch and a checkpointable
iterator whose state is just the next batch number.
"""
import sys
from typing import Iterator

import grain
import numpy as np

from dpjax.data import windows


class ShuffledBatchIndices:
  """Grain random-access source: item b = int64 [B / P] window ids of this process's part of batch b.

  Endless (len is sys.maxsize); epoch e is `np.random.default_rng((seed, e)).permutation(W)`.
  """

  def __init__(self, num_windows: int, global_batch_size: int, seed: int, process_index: int,
               process_count: int):
    if num_windows < 1:
      raise ValueError("the training source has no windows (no episodes long enough?)")
    if not 0 <= seed < 2**32:
      raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    self.num_windows = num_windows
    self.global_batch_size = global_batch_size
    self.seed = seed
    # Positions of this process's rows inside a global batch: one contiguous block, in process order.
    per_process = global_batch_size // process_count
    self._offsets = np.arange(process_index * per_process, (process_index + 1) * per_process, dtype=np.int64)
    self._permutations = {}   # epoch -> window order, the few most recent (a batch spans at most two epochs)

  def epoch_permutation(self, epoch: int) -> np.ndarray:
    """int64 [W]: window order of one epoch."""
    if epoch not in self._permutations:
      if len(self._permutations) >= 4:
        del self._permutations[min(self._permutations)]
      self._permutations[epoch] = np.random.default_rng((self.seed, epoch)).permutation(self.num_windows)
    return self._permutations[epoch]

  def __len__(self) -> int:
    return sys.maxsize

  def __getitem__(self, batch_index: int) -> np.ndarray:
    positions = int(batch_index) * self.global_batch_size + self._offsets
    epochs, within = np.divmod(positions, self.num_windows)
    ids = np.empty_like(positions)
    for epoch in np.unique(epochs):  # at most two epochs per batch unless B > W
      mask = epochs == epoch
      ids[mask] = self.epoch_permutation(int(epoch))[within[mask]]
    return ids

  def __repr__(self) -> str:
    return (f"ShuffledBatchIndices(num_windows={self.num_windows}, global_batch_size="
            f"{self.global_batch_size}, seed={self.seed}, rows={len(self._offsets)})")


def per_process_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size < 1:
    raise ValueError(f"batch size must be >= 1, got {global_batch_size}")
  if global_batch_size % process_count:
    raise ValueError(f"global batch size {global_batch_size} is not divisible by the {process_count} "
                     f"JAX processes; choose a multiple of {process_count} (--config.train.batch_size).")
  return global_batch_size // process_count


def _process_index_and_count(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # Deferred: only the training process needs JAX here.
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  return process_index, process_count


def make_train_dataset(source: windows.SequenceSource, global_batch_size: int, seed: int, *,
                       prefetch: int = 2, worker_count: int = 0, num_threads: int = 1,
                       process_index: int | None = None, process_count: int | None = None,
                       yield_window_ids: bool = False) -> grain.IterDataset:
  """Infinite dataset of this process's batches {"obs": {k: [B/P, To, ...]}, "action": [B/P, T, Da]}.

  With `yield_window_ids` it yields the int64 [B/P] window ids instead, for the device-resident path
  (`device_data.gather` builds the same batch inside the jitted step); the order and the iterator state are the
  same either way.

  Args:
    source: windows to sample from.
    global_batch_size: B, over all processes; must be divisible by P = process_count.
    seed: shuffle seed in [0, 2**32).
    prefetch: batches read ahead (per process).
    worker_count: grain worker processes (0: gather in this process's threads). Rarely worth it: a
      gather takes well under a millisecond. Workers need absl flags parsed (true under app.run).
    num_threads: reader threads when worker_count == 0; numpy gathers release the GIL.
    process_index / process_count: default to jax.process_index() / jax.process_count().
  """
  process_index, process_count = _process_index_and_count(process_index, process_count)
  per_process_batch_size(global_batch_size, process_count)
  indices = ShuffledBatchIndices(len(source), global_batch_size, seed, process_index, process_count)
  dataset = grain.MapDataset.source(indices)
  if not yield_window_ids:
    dataset = dataset.map(source.gather_batch)
  if worker_count > 0:
    return dataset.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)).mp_prefetch(
        grain.MultiprocessingOptions(num_workers=worker_count, per_worker_buffer_size=max(prefetch, 1)))
  return dataset.to_iter_dataset(grain.ReadOptions(num_threads=num_threads if prefetch > 0 else 0,
                                                   prefetch_buffer_size=prefetch))


def make_train_iterator(source: windows.SequenceSource, global_batch_size: int, seed: int,
                        **kwargs) -> grain.DatasetIterator:
  """Iterator over `make_train_dataset`; `get_state()`/`set_state()` resume it exactly."""
  return iter(make_train_dataset(source, global_batch_size, seed, **kwargs))


def validation_batches(source: windows.SequenceSource, batch_size: int, max_batches: int | None = None,
                       *, multiple_of: int = 1, process_index: int | None = None,
                       process_count: int | None = None) -> Iterator[dict]:
  """Fixed, unshuffled validation batches (the same every call, so losses are comparable).

  Windows are taken in order and every window is covered: full batches of `batch_size`, then one last
  smaller batch of the remaining windows rounded down to a multiple of `multiple_of` (the device count, so
  it still shards evenly; at most multiple_of - 1 windows are left out). So a loop over them compiles at
  most two shapes.

  Args:
    source: validation windows.
    batch_size: global batch size; each process yields its contiguous [p * B / P, (p + 1) * B / P) block.
    max_batches: stop after this many batches (None: all).
    multiple_of: every global batch size is a multiple of this (and of process_count).
  """
  process_index, process_count = _process_index_and_count(process_index, process_count)
  per_process_batch_size(batch_size, process_count)
  multiple = int(np.lcm(max(multiple_of, 1), process_count))
  start, emitted = 0, 0
  while max_batches is None or emitted < max_batches:
    size = min(batch_size, len(source) - start) // multiple * multiple
    if size == 0:
      return
    per_process = size // process_count
    ids = np.arange(start + process_index * per_process, start + (process_index + 1) * per_process, dtype=np.int64)
    yield source.gather_batch(ids)
    start, emitted = start + size, emitted + 1
