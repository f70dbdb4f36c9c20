"""Grain training pipeline: shuffled, repeated, per-process sharded, batched, prefetched, resumable.

The grain dataset runs over window *indices*; each batch of indices is gathered with one vectorised
numpy call (`SequenceSource.gather_batch`), far faster than stacking per-sample dicts.

Order: range(W) -> seed -> shuffle (reshuffled every epoch) -> repeat forever -> take every
process_count-th element starting at process_index -> batch -> prefetch. Because the shard is taken
from the one global shuffled stream, batch b of all processes together is the same global batch
whatever the process count, and a run is reproducible from its seed alone.
"""
from typing import Iterator

import grain
import numpy as np

from dpjax.data import windows


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
                       process_index: int | None = None,
                       process_count: int | None = None) -> grain.IterDataset:
  """Infinite dataset of this process's batches {"obs": {k: [B/P, To, ...]}, "action": [B/P, T, Da]}.

  Args:
    source: windows to sample from.
    global_batch_size: B, over all processes; must be divisible by P = process_count.
    seed: shuffle seed in [0, 2**32).
    prefetch: batches read ahead (per process).
    worker_count: grain worker processes (0: gather in this process's threads).
    num_threads: reader threads when worker_count == 0; numpy gathers release the GIL.
    process_index / process_count: default to jax.process_index() / jax.process_count().
  """
  process_index, process_count = _process_index_and_count(process_index, process_count)
  batch_size = per_process_batch_size(global_batch_size, process_count)
  if len(source) == 0:
    raise ValueError("the training source has no windows (no episodes long enough?)")
  if not 0 <= seed < 2**32:
    raise ValueError(f"seed must be in [0, 2**32), got {seed}")
  dataset = (grain.MapDataset.range(len(source))
             .seed(seed)
             .shuffle()
             .repeat()
             [process_index::process_count]
             .batch(batch_size, drop_remainder=True,
                    batch_fn=lambda ids: source.gather_batch(np.asarray(ids, dtype=np.int64))))
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
                       *, process_index: int | None = None,
                       process_count: int | None = None) -> Iterator[dict]:
  """Fixed, unshuffled validation batches (the same every call, so losses are comparable).

  Windows are taken in order; the last partial batch is DROPPED so every batch has the same shape (no
  recompilation, no padding mask). When the source holds fewer windows than `batch_size`, the batch
  size shrinks to the largest multiple of process_count that fits, so small validation sets still
  yield one batch.

  Args:
    source: validation windows.
    batch_size: global batch size; each process yields its [process_index::process_count] part.
    max_batches: stop after this many batches (None: all full batches).
  """
  process_index, process_count = _process_index_and_count(process_index, process_count)
  per_process_batch_size(batch_size, process_count)
  batch_size = min(batch_size, len(source) // process_count * process_count)
  if batch_size == 0:
    return
  num_batches = len(source) // batch_size
  if max_batches is not None:
    num_batches = min(num_batches, max_batches)
  for b in range(num_batches):
    ids = np.arange(b * batch_size, (b + 1) * batch_size, dtype=np.int64)
    yield source.gather_batch(ids[process_index::process_count])
