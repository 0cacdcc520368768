"""The input pipeline: exactly the synchronous batches, in order, read ahead on threads."""

import contextlib
import threading
import time

import flax.linen as nn
import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest

from segal_jax.data import pipeline
from segal_jax.training import optim
from segal_jax.training import train

H, W, C = 8, 12, 3


def _pool(n=20, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8),
          'label': rng.integers(0, C, (n, H, W), dtype=np.uint8)}


def _source(pool, calls=None, delay=0.0):
  """Indexes the pool; batches whose first id is even take longer, so threads finish
  out of order."""
  def get_batch(ids):
    if calls is not None:
      calls.append(tuple(int(i) for i in ids))
    if delay:
      time.sleep(delay * (2 if len(ids) and ids[0] % 2 == 0 else 0.2))
    return {'image': pool['image'][ids], 'label': pool['label'][ids], 'id': ids}
  return get_batch


def _schedule(steps, batch, n=20, seed=0):
  return np.random.default_rng(seed).integers(0, n, (steps, batch))


def _reader_threads():
  return [t for t in threading.enumerate() if t.name.startswith('grain-prefetch')]


def _wait_for_no_readers(timeout=5.0):
  end = time.time() + timeout
  while _reader_threads() and time.time() < end:
    time.sleep(0.01)
  return not _reader_threads()


@pytest.mark.parametrize('prefetch,threads,rows', [
    (0, None, slice(None)), (1, 1, slice(None)), (2, 2, slice(None)),
    (4, 3, slice(2, 4)), (3, 8, slice(0, 1)), (16, 2, slice(None))])
def test_batches_are_the_direct_loop_in_order(prefetch, threads, rows):
  pool, schedule = _pool(), _schedule(9, 4)
  got = list(pipeline.batches(_source(pool, delay=0.002), schedule, rows=rows,
                              prefetch=prefetch, num_threads=threads))
  assert len(got) == len(schedule)
  for t, batch in enumerate(got):
    ids = schedule[t, rows]
    assert sorted(batch) == ['image', 'label']
    np.testing.assert_array_equal(batch['image'], pool['image'][ids])
    np.testing.assert_array_equal(batch['label'], pool['label'][ids])


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(steps=st.integers(0, 7), batch=st.integers(1, 5),
                  prefetch=st.integers(0, 6), threads=st.integers(1, 4),
                  seed=st.integers(0, 1000))
def test_any_schedule_and_thread_count_gives_the_same_sequence(steps, batch, prefetch,
                                                               threads, seed):
  pool, schedule = _pool(), _schedule(steps, batch, seed=seed)
  calls = []
  got = list(pipeline.batches(_source(pool, calls), schedule, prefetch=prefetch,
                              num_threads=threads, place=lambda b: b['image']))
  np.testing.assert_array_equal(np.reshape(got, (steps, batch, H, W, 3)),
                                pool['image'][schedule])
  assert sorted(calls) == sorted(tuple(r) for r in schedule.tolist())  # each read once


def test_reads_ahead_at_most_prefetch_batches():
  pool, schedule, calls = _pool(), _schedule(12, 2), []
  stream = pipeline.batches(_source(pool, calls), schedule, prefetch=3, num_threads=2)
  with contextlib.closing(stream):
    next(stream)
    end = time.time() + 10
    while len(calls) < 4 and time.time() < end:  # the readers fill the buffer...
      time.sleep(0.01)
    time.sleep(0.2)  # ... and would go on here if they were not bounded
    # Batch 0 was consumed; 1..3 are read ahead; nothing beyond.
    assert sorted(calls) == sorted(tuple(r) for r in schedule[:4].tolist())


def test_place_runs_on_reader_threads_when_prefetching():
  pool, schedule, where = _pool(), _schedule(4, 2), set()

  def place(batch):
    where.add(threading.current_thread().name)
    return batch
  list(pipeline.batches(_source(pool), schedule, prefetch=2, place=place))
  assert where and all(n.startswith('grain-prefetch') for n in where)
  where.clear()
  list(pipeline.batches(_source(pool), schedule, prefetch=0, place=place))
  assert where == {threading.current_thread().name}


@pytest.mark.parametrize('prefetch', [0, 1, 3])
def test_a_failing_source_raises_its_error_at_that_batch(prefetch):
  pool, schedule = _pool(), _schedule(8, 2)

  def source(ids):
    if np.array_equal(ids, schedule[3]):
      raise KeyError(f'cannot read {ids.tolist()}')
    return _source(pool)(ids)
  stream = pipeline.batches(source, schedule, prefetch=prefetch, num_threads=2)
  with contextlib.closing(stream):
    for t in range(3):
      np.testing.assert_array_equal(next(stream)['label'], pool['label'][schedule[t]])
    with pytest.raises(KeyError, match='cannot read'):
      next(stream)
  assert _wait_for_no_readers()


def test_closing_early_stops_the_readers():
  stream = pipeline.batches(_source(_pool(), delay=0.01), _schedule(50, 2), prefetch=4,
                            num_threads=4)
  next(stream)
  stream.close()
  assert _wait_for_no_readers()


def test_a_source_returning_the_wrong_number_of_rows_is_named():
  pool = _pool()
  bad = lambda ids: {'image': pool['image'][ids][:1], 'label': pool['label'][ids]}
  with pytest.raises(ValueError, match=r'image of shape \(1, 8, 12, 3\) for 2 image ids'):
    list(pipeline.batches(bad, _schedule(3, 2), prefetch=2))


def test_rejects_bad_arguments():
  with pytest.raises(ValueError, match='schedule'):
    next(pipeline.batches(_source(_pool()), np.arange(4), prefetch=1))
  with pytest.raises(ValueError, match='prefetch'):
    next(pipeline.batches(_source(_pool()), _schedule(2, 2), prefetch=-1))
  with pytest.raises(ValueError, match='num_threads'):
    next(pipeline.batches(_source(_pool()), _schedule(2, 2), prefetch=1, num_threads=0))


# fit reads through the pipeline: prefetching must not change a single bit.

class _Tiny(nn.Module):
  @nn.compact
  def __call__(self, x, *, train: bool, mc: bool = False):
    x = nn.Conv(4, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.Dropout(0.2, deterministic=not (train or mc))(nn.relu(x))
    return nn.Conv(C, (1, 1))(x), {}


_INPUTS = train.InputSpec((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), (6, 10))


def _fit(state, source, indices, *, epochs, key, prefetch, start_epoch=0, on_epoch_end=None):
  """`train.fit` in batches of 2, without a bar."""
  return train.fit(state, source, indices, schedule=train.Schedule(epochs, 2, start_epoch),
                   key=key, inputs=_INPUTS,
                   runtime=train.Runtime(progress=False, on_epoch_end=on_epoch_end,
                                         prefetch=prefetch))


def _state():
  tx = optim.make_optimizer(lr=0.05, total_steps=20, schedule='constant')
  return train.create_train_state(_Tiny(), jax.random.key(0), image_shape=(H, W, 3), tx=tx)


def _assert_same(a, b):
  jax.tree.map(np.testing.assert_array_equal, (a.params, a.batch_stats),
               (b.params, b.batch_stats))


def test_fit_with_prefetch_is_bit_identical_to_synchronous_reading():
  pool, calls = _pool(12), {0: [], 3: []}
  results = {p: _fit(_state(), _source(pool, calls[p], delay=0.001), np.arange(1, 12),
                     epochs=3, key=jax.random.key(4), prefetch=p)
             for p in (0, 3)}
  _assert_same(results[0][0], results[3][0])
  assert results[0][1] == results[3][1]
  assert sorted(calls[0]) == sorted(calls[3]) and len(calls[0]) == 3 * 5  # the same reads


def test_fit_resumed_with_prefetch_equals_an_uninterrupted_run():
  pool = _pool(8)
  kw = dict(key=jax.random.key(2), prefetch=2)
  full, _ = _fit(_state(), _source(pool), np.arange(8), epochs=3, **kw)
  part, _ = _fit(_state(), _source(pool), np.arange(8), epochs=1, **kw)
  resumed, hist = _fit(part, _source(pool), np.arange(8), epochs=3, start_epoch=1, **kw)
  _assert_same(full, resumed)
  assert len(hist['loss']) == 2


def test_fit_reports_a_failing_source_and_stops_its_readers():
  pool, seen = _pool(8), []

  def source(ids):
    seen.append(1)
    if len(seen) == 6:
      raise OSError('record 5 is corrupt')
    return _source(pool)(ids)
  with pytest.raises(OSError, match='record 5 is corrupt'):
    _fit(_state(), source, np.arange(8), epochs=3, key=jax.random.key(0), prefetch=2)
  assert _wait_for_no_readers()


def test_fit_stopped_by_on_epoch_end_stops_its_readers():
  def stop(epoch, state):
    del state
    raise RuntimeError(f'stop after epoch {epoch}')
  with pytest.raises(RuntimeError, match='stop after epoch 0'):
    _fit(_state(), _source(_pool(8), delay=0.005), np.arange(8), epochs=5,
         key=jax.random.key(0), prefetch=4, on_epoch_end=stop)
  assert _wait_for_no_readers()
