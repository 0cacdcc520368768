"""Host input pipeline: training batches read ahead in background threads, in order.

Training knows its whole schedule before the first step: every epoch's `[steps, B]`
image ids derive from the run key (`train.fit`). The pipeline turns that schedule into
a grain `MapDataset` whose element t is `source(ids[t, rows])` and reads it through
grain's thread-pool prefetch (`to_iter_dataset` with `ReadOptions`): while the device
trains on batch t, batches t+1 .. t+prefetch are being read, decoded (lazy records)
and masked (partial labels) on other threads. Elements come back in schedule order
whatever the number of threads, so the batches, and everything trained on them, are
exactly those of a synchronous loop over the schedule.

Each process reads only its rows of every global batch (`rows`, from
`parallel.local_rows`). Augmentation is not done here: it runs on the device in the
train step, keyed per image.

    stream = pipeline.batches(get_batch, schedule, rows=rows, prefetch=2)
    with contextlib.closing(stream):
      for batch in stream:
        ...
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import grain
import numpy as np

Batch = dict[str, Any]
Source = Callable[[np.ndarray], Batch]


def read_batch(source: Source, ids: np.ndarray) -> Batch:
  """`source(ids)` as host arrays, checked to hold one row per id.

  Args:
    source: get_batch(ids [b] int) -> {'image': [b, H, W, 3], 'label': [b, H, W], ...}.
    ids: [b] int image ids.

  Returns:
    {'image': [b, H, W, 3], 'label': [b, H, W]} NumPy arrays (other keys dropped).

  Raises:
    ValueError: the source returned another number of rows than ids.
  """
  batch = source(ids)
  out = {k: np.asarray(batch[k]) for k in ('image', 'label')}
  for k, v in out.items():
    if v.shape[:1] != (len(ids),):
      raise ValueError(f'the batch source returned {k} of shape {v.shape} for '
                       f'{len(ids)} image ids {np.asarray(ids).tolist()}')
  return out


def prefetch_map(fn: Callable[[Any], Any], items, *, threads: int, ahead: int) -> Iterator[Any]:
  """`fn(item)` for each of `items`, in order, computed on `threads` background
  threads up to `ahead` items ahead of the consumer (grain's thread prefetch).

  An exception raised by `fn` is raised again by the `next` call that would
  have returned its result. Close the generator when stopping early.
  """
  if threads < 1:
    raise ValueError(f'threads must be >= 1, got {threads}')
  dataset = grain.MapDataset.source(items).map(fn)
  iterator = iter(dataset.to_iter_dataset(
      grain.ReadOptions(num_threads=int(threads), prefetch_buffer_size=max(1, int(ahead))),
      allow_nones=True))  # keep every item, whatever `fn` returns
  try:
    yield from iterator
  finally:
    iterator.close()  # stops the threads, cancels items not yet started


def default_threads(prefetch: int) -> int:
  """Reader threads for `prefetch` batches ahead: one per batch, at most one per core."""
  return max(1, min(int(prefetch), os.cpu_count() or 1))


def batches(source: Source, schedule: np.ndarray, *, rows: slice = slice(None),
            prefetch: int = 2, num_threads: int | None = None,
            place: Callable[[Batch], Any] | None = None) -> Iterator[Any]:
  """Yields `place(read_batch(source, schedule[t, rows]))` for t = 0, 1, ... in order.

  With `prefetch > 0` the batches are produced by `num_threads` background threads up
  to `prefetch` batches ahead of the consumer; with `prefetch == 0` each is read when
  asked for, on the calling thread. The sequence is the same in both cases, so
  `source` and `place` must be pure functions of their input and safe to call from
  several threads (NumPy indexing, `LazyArray`, `PoolLabels.label_batch` and
  `parallel.shard_batch` are).

  An exception raised by `source` or `place` is raised again, unchanged, by the
  `next` call that would have returned that batch. Close the generator
  (`contextlib.closing`) when stopping early: it stops the reader threads and
  drops what they read ahead.

  Args:
    source: get_batch(ids [b] int) -> {'image': [b, H, W, 3], 'label': [b, H, W]}.
    schedule: [T, B] int global batches of image ids, in training order.
    rows: this process's rows of every global batch (`parallel.local_rows`).
    prefetch: batches read ahead (0: none, synchronous).
    num_threads: reader threads (default: `default_threads(prefetch)`).
    place: applied to each host batch on the reader thread (e.g. the transfer to
      the devices); default: none.

  Yields:
    T batches, `place` of {'image': [b, H, W, 3], 'label': [b, H, W]}, b = len(rows).
  """
  schedule = np.asarray(schedule, np.int64)
  if schedule.ndim != 2:
    raise ValueError(f'schedule must be [steps, batch], got shape {schedule.shape}')
  if prefetch < 0:
    raise ValueError(f'prefetch must be >= 0, got {prefetch}')
  local = np.ascontiguousarray(schedule[:, rows])

  def load(ids: np.ndarray) -> Any:
    batch = read_batch(source, ids)
    return batch if place is None else place(batch)

  if prefetch == 0 or len(local) == 0:
    for ids in local:
      yield load(ids)
    return
  threads = default_threads(prefetch) if num_threads is None else int(num_threads)
  if threads < 1:
    raise ValueError(f'num_threads must be >= 1, got {threads}')
  yield from prefetch_map(load, local, threads=threads, ahead=prefetch)
