"""LazyArray views must index like the stacked NumPy arrays they stand for."""

import pickle

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from segal_jax import data
from segal_jax.data import _lazy

N, H, W = 7, 3, 5


class CountingSource:
  """A list of records that counts how often each one is decoded."""

  def __init__(self, records, batched=True):
    self.records = records
    self.reads = [0] * len(records)
    if not batched:
      self.__getitems__ = None

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    self.reads[i] += 1
    return self.records[i]

  def __getitems__(self, indices):
    return [self[i] for i in indices]


def _records(n=N, seed=0):
  rng = np.random.default_rng(seed)
  return [{'image': rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
           'label': rng.integers(0, 256, (H, W), dtype=np.uint8),
           'instance': rng.integers(0, 40000, (H, W)).astype(np.int32)} for _ in range(n)]


def _dense(records, key):
  return np.stack([r[key] for r in records])


_RECORDS = _records()
_DENSE = _dense(_RECORDS, 'image')

keys = st.one_of(
    st.integers(-N, N - 1),
    st.builds(slice, st.none() | st.integers(-N - 2, N + 2), st.none() | st.integers(-N - 2, N + 2),
              st.none() | st.integers(-3, 3).filter(bool)),
    st.lists(st.integers(-N, N - 1), max_size=9).map(lambda l: np.array(l, np.int64)),
    st.lists(st.integers(-N, N - 1), min_size=1, max_size=6).map(
        lambda l: np.array(l, np.int32).reshape(-1, 1)),
    st.lists(st.booleans(), min_size=N, max_size=N).map(np.array),
)


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(key=keys, batched=st.booleans(),
                  rest=st.sampled_from([(), (1,), (slice(None), 2)]))
def test_indexing_matches_numpy(key, batched, rest):
  view = _lazy.LazyArray(CountingSource(_RECORDS, batched), 'image', _DENSE.shape, np.uint8)
  full_key = (key,) + rest if rest else key
  got = view[full_key]
  want = _DENSE[full_key]
  assert isinstance(got, np.ndarray) and got.dtype == np.uint8
  np.testing.assert_array_equal(got, want)


def test_attributes_iteration_and_conversion():
  view = _lazy.LazyArray(CountingSource(_RECORDS), 'instance', (N, H, W), np.int32)
  dense = _dense(_RECORDS, 'instance')
  assert (view.shape, view.dtype, view.ndim, len(view)) == (dense.shape, dense.dtype, 3, N)
  assert view.nbytes == dense.nbytes
  np.testing.assert_array_equal(np.stack(list(view)), dense)
  np.testing.assert_array_equal(np.asarray(view), dense)
  # Results are copies: writing into one does not change the next read.
  first = view[0]
  first[:] = -1
  np.testing.assert_array_equal(view[0], dense[0])


def test_bad_indices_raise():
  view = _lazy.LazyArray(CountingSource(_RECORDS), 'label', (N, H, W), np.uint8)
  for key in (N, -N - 1, np.array([0, N]), np.array([0.5]), np.ones(N + 1, bool)):
    with pytest.raises(IndexError):
      view[key]
  with pytest.raises(ValueError, match='source has'):
    _lazy.LazyArray(CountingSource(_RECORDS), 'label', (N + 1, H, W), np.uint8)


def test_item_of_another_shape_is_an_error():
  records = _records(3)
  records[2] = dict(records[2], label=np.zeros((H, W + 1), np.uint8))
  view = _lazy.LazyArray(CountingSource(records), 'label', (3, H, W), np.uint8)
  np.testing.assert_array_equal(view[:2], _dense(records[:2], 'label'))
  with pytest.raises(ValueError, match='record 2'):
    view[2]


def test_cached_source_decodes_each_record_once_and_evicts_least_recent():
  source = CountingSource(_RECORDS)
  cached = _lazy.CachedSource(source, capacity=2)
  images = _lazy.LazyArray(cached, 'image', (N, H, W, 3), np.uint8)
  labels = _lazy.LazyArray(cached, 'label', (N, H, W), np.uint8)
  images[3], labels[3], images[[3, 4]], labels[4]
  assert source.reads == [0, 0, 0, 1, 1, 0, 0]
  labels[3]  # now 4 is the least recently used
  images[5]  # evicts 4, keeps 3
  labels[3], labels[5], labels[4]
  assert source.reads == [0, 0, 0, 1, 2, 1, 0]
  copy = pickle.loads(pickle.dumps(images))
  np.testing.assert_array_equal(copy[[1, 2]], _DENSE[[1, 2]])


@pytest.mark.parametrize('limit', [0, 1 << 30])
def test_split_from_source_lazy_or_in_memory(limit):
  source = CountingSource(_RECORDS)
  ids = [f'img{i}' for i in range(N)]
  split = _lazy.split_from_source(source, name='fake', ids=ids, mean=(0.1, 0.2, 0.3),
                                  std=(0.4, 0.5, 0.6), in_memory_limit_bytes=limit)
  assert isinstance(split, data.Split)
  assert split.ids == tuple(ids) and split.mean == (0.1, 0.2, 0.3) and split.num_classes == 19
  kind = _lazy.LazyArray if limit == 0 else np.ndarray
  for got, key in ((split.images, 'image'), (split.labels, 'label'),
                   (split.instances, 'instance')):
    assert isinstance(got, kind)
    np.testing.assert_array_equal(got[np.array([5, 0, 5])], _dense(_RECORDS, key)[[5, 0, 5]])
  if limit:  # read into memory in one pass: each record decoded once
    assert source.reads == [1] * N
