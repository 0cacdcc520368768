"""Read-only array views over a random-access data source, for data sets too big for memory.

A tfds data source (`builder.as_data_source(split)`) is a sequence of decoded examples
(`dict` of NumPy arrays). `LazyArray` exposes one feature of it as if it were a stacked
`[N, ...]` array: `view[i]`, `view[a:b]`, `view[index_array]` and iteration return NumPy
arrays decoded on demand, so code written against an in-memory `Split` (for example
`split.images[batch_ids]`) runs unchanged on full-resolution Cityscapes (~50 GB decoded).

Every feature of a record is decoded together, so the image, label and instance views of
one split share a `CachedSource`: reading `images[i]` then `labels[i]` decodes record `i`
once.

`ArrayRecordBuilder` and `record_features` are the writing side: the base class and the
record schema of the builders (`cityscapes`, `image_folder`) that `split_from_builder` reads.
"""

from __future__ import annotations

import collections
import inspect
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from segal_jax.data import _split
from segal_jax.data import classes as classes_lib

# Splits whose decoded arrays take less than this many bytes are loaded into memory.
IN_MEMORY_LIMIT_BYTES = 2 << 30
_CHUNK = 16  # records read per `__getitems__` call when iterating or materialising


def _read(source: Any, indices: Sequence[int]) -> list[Mapping[str, Any]]:
  """Records `indices` of `source`, batched when the source supports it."""
  indices = [int(i) for i in indices]
  if not indices:
    return []
  getitems = getattr(source, '__getitems__', None)
  if getitems is not None:
    return list(getitems(indices))
  return [source[i] for i in indices]


class CachedSource:
  """A data source with a least-recently-used cache of decoded records.

  Thread-safe (the lock only guards the cache; decoding runs outside it). Pickling drops
  the cache, so worker processes start with an empty one.
  """

  def __init__(self, source: Any, capacity: int = 32):
    self.source = source
    self.capacity = capacity
    self._cache: collections.OrderedDict[int, Mapping[str, Any]] = collections.OrderedDict()
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> Mapping[str, Any]:
    return self.__getitems__([index])[0]

  def __getitems__(self, indices: Sequence[int]) -> list[Mapping[str, Any]]:
    indices = [int(i) for i in indices]
    found = {}
    with self._lock:
      for i in indices:
        if i in self._cache:
          self._cache.move_to_end(i)
          found[i] = self._cache[i]
    missing = sorted({i for i in indices if i not in found})
    for i, record in zip(missing, _read(self.source, missing)):
      found[i] = record
    if self.capacity > 0:
      with self._lock:
        for i in missing[-self.capacity:]:
          self._cache[i] = found[i]
        while len(self._cache) > self.capacity:
          self._cache.popitem(last=False)
    return [found[i] for i in indices]

  def __getstate__(self):
    return {'source': self.source, 'capacity': self.capacity}

  def __setstate__(self, state):
    self.__init__(state['source'], state['capacity'])


class LazyArray:
  """A read-only `[N, ...]` array whose item `i` is `source[i][feature]`, decoded on demand.

  Indexing follows NumPy for the first axis: an int gives one item `shape[1:]`; a slice,
  an int array (any shape) or a boolean mask of length N gives the stacked items. Further
  indices in a tuple apply to the result (`view[ids, :, ::2]`). Results are fresh arrays.
  """

  def __init__(self, source: Any, feature: str, shape: Sequence[int], dtype: Any):
    """Args:
      source: random-access sequence of records (`len`, `__getitem__`, optionally
        `__getitems__`), e.g. a tfds data source or a `CachedSource`.
      feature: key of the feature in each record.
      shape: full shape, `shape[0] == len(source)`; every item must have `shape[1:]`.
      dtype: NumPy dtype the items are cast to (without loss: items must fit).
    """
    self.source = source
    self.feature = feature
    self.shape = tuple(int(d) for d in shape)
    self.dtype = np.dtype(dtype)
    if self.shape[0] != len(source):
      raise ValueError(f'shape[0]={self.shape[0]} but the source has {len(source)} records')

  @property
  def ndim(self) -> int:
    return len(self.shape)

  @property
  def size(self) -> int:
    return math.prod(self.shape)

  @property
  def nbytes(self) -> int:
    return self.size * self.dtype.itemsize

  def __len__(self) -> int:
    return self.shape[0]

  def __repr__(self) -> str:
    return f'LazyArray({self.feature!r}, shape={self.shape}, dtype={self.dtype})'

  def _item(self, record: Mapping[str, Any], index: int) -> np.ndarray:
    value = np.asarray(record[self.feature])
    if value.shape != self.shape[1:]:
      raise ValueError(f'record {index}: {self.feature!r} has shape {value.shape}, '
                       f'expected {self.shape[1:]} like every other record')
    return value.astype(self.dtype, copy=True)

  def _gather(self, indices: np.ndarray) -> np.ndarray:
    """[*indices.shape, *shape[1:]] items at the (already bounds-checked) indices."""
    flat = indices.reshape(-1)
    out = np.empty((flat.size,) + self.shape[1:], self.dtype)
    for start in range(0, flat.size, _CHUNK):
      chunk = flat[start:start + _CHUNK]
      for j, (i, record) in enumerate(zip(chunk, _read(self.source, chunk))):
        out[start + j] = self._item(record, int(i))
    return out.reshape(indices.shape + self.shape[1:])

  def _indices(self, key: Any) -> np.ndarray | int:
    """Normalises a first-axis key to an int or an int array of valid indices."""
    n = self.shape[0]
    if isinstance(key, (int, np.integer)):
      i = int(key)
      if not -n <= i < n:
        raise IndexError(f'index {i} is out of bounds for axis 0 with size {n}')
      return i % n
    if isinstance(key, slice):
      return np.arange(*key.indices(n), dtype=np.int64)
    idx = np.asarray(key)
    if idx.dtype == bool:
      if idx.shape != (n,):
        raise IndexError(f'boolean index of shape {idx.shape} does not match ({n},)')
      return np.flatnonzero(idx)
    if idx.size == 0:
      return idx.astype(np.int64)
    if not np.issubdtype(idx.dtype, np.integer):
      raise IndexError(f'only integers, slices and integer or boolean arrays are valid '
                       f'indices, got {idx.dtype}')
    if idx.min() < -n or idx.max() >= n:
      raise IndexError(f'an index is out of bounds for axis 0 with size {n}')
    return idx.astype(np.int64) % n

  def __getitem__(self, key: Any) -> np.ndarray:
    rest = ()
    if isinstance(key, tuple):
      key, rest = (key[0], key[1:]) if key else (slice(None), ())
    idx = self._indices(key)
    if isinstance(idx, int):
      out = self._item(self.source[idx], idx)
      return out[rest] if rest else out
    out = self._gather(idx)
    return out[(slice(None),) * idx.ndim + rest] if rest else out

  def __iter__(self) -> Iterator[np.ndarray]:
    for start in range(0, len(self), _CHUNK):
      yield from self._gather(np.arange(start, min(start + _CHUNK, len(self))))

  def __array__(self, dtype=None, copy=None) -> np.ndarray:
    del copy  # always a fresh array
    out = self[:]
    return out if dtype is None else out.astype(dtype)


class ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of builders read by `split_from_builder`: array_record files, no TensorFlow."""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # The inherited lookup goes through `importlib_resources`, an optional dependency of
    # tfds; the subclass's own file is all it needs.
    return epath.Path(inspect.getfile(cls))

  def __init__(self, *, file_format=None, **kwargs):
    super().__init__(file_format=file_format or 'array_record', **kwargs)


def record_features(**extra: tfds.features.FeatureConnector) -> tfds.features.FeaturesDict:
  """The features `split_from_builder` reads (zlib tensors of any size), plus `extra`.

  image_id: text; image: [H, W, 3] uint8; label: [H, W] uint8 train ids (255 = ignore);
  instance: [H, W] int32 Cityscapes instance ids.
  """
  tensor = lambda shape, dtype: tfds.features.Tensor(shape=shape, dtype=dtype, encoding='zlib')
  return tfds.features.FeaturesDict({
      'image_id': tfds.features.Text(), 'image': tensor((None, None, 3), np.uint8),
      'label': tensor((None, None), np.uint8), 'instance': tensor((None, None), np.int32),
      **extra})


def split_from_builder(builder: Any, split: str, *, name: str, mean: Sequence[float],
                       std: Sequence[float],
                       classes: classes_lib.ClassTable = classes_lib.CITYSCAPES,
                       labeled: Sequence[bool] | None = None,
                       in_memory_limit_bytes: int | None = None, cache_size: int = 32):
  """`split_from_source` over split `split` of a prepared tfds builder.

  The builder's records hold `image_id` (text), `image`, `label` and `instance`. Ids are
  read without decoding the pixel features.
  """
  skip = tfds.decode.SkipDecoding()
  light = builder.as_data_source(split, decoders={'image': skip, 'label': skip,
                                                  'instance': skip})
  ids = []
  for start in range(0, len(light), 256):
    for record in _read(light, range(start, min(start + 256, len(light)))):
      value = record['image_id']
      ids.append(value.decode() if isinstance(value, bytes) else str(value))
  limit = IN_MEMORY_LIMIT_BYTES if in_memory_limit_bytes is None else in_memory_limit_bytes
  return split_from_source(builder.as_data_source(split), name=name, ids=ids, mean=mean,
                           std=std, classes=classes, labeled=labeled,
                           in_memory_limit_bytes=limit,
                           cache_size=cache_size)


def split_from_source(source: Any, *, name: str, ids: Sequence[str], mean: Sequence[float],
                      std: Sequence[float],
                      classes: classes_lib.ClassTable = classes_lib.CITYSCAPES,
                      labeled: Sequence[bool] | None = None,
                      in_memory_limit_bytes: int = IN_MEMORY_LIMIT_BYTES,
                      cache_size: int = 32):
  """A `Split` over a source of `{'image', 'label', 'instance'}` records of one size.

  Args:
    source: random-access records; `image` [H, W, 3] uint8, `label` [H, W] uint8,
      `instance` [H, W] int32 (one image size for the whole split).
    name: data set name.
    ids: [N] image ids, in source order.
    mean, std: [3] per-channel image statistics of the data set (images scaled to 0..1).
    classes: the class table the labels index.
    labeled: [N] which images have labels; None = all.
    in_memory_limit_bytes: below this many decoded bytes the arrays are read into memory
      once; above it they are `LazyArray` views sharing one `CachedSource`.
    cache_size: records kept decoded by the lazy views (at least `_CHUNK`).

  Returns:
    `segal_jax.data.Split`.
  """
  n = len(source)
  if len(ids) != n:
    raise ValueError(f'{len(ids)} ids for {n} records')
  # One cache for the probe of record 0 and the reads after it (at least a chunk, so that
  # reading a chunk of images, then of labels, then of instances decodes each record once).
  shared = CachedSource(source, max(cache_size, _CHUNK))
  h, w = np.asarray(shared[0]['label']).shape if n else (0, 0)
  specs = {'image': ((n, h, w, 3), np.uint8), 'label': ((n, h, w), np.uint8),
           'instance': ((n, h, w), np.int32)}
  views = {k: LazyArray(shared, k, s, t) for k, (s, t) in specs.items()}
  total = sum(v.nbytes for v in views.values())
  arrays = _materialise(views) if total <= in_memory_limit_bytes else views
  return _split.Split(name=name, ids=tuple(ids), images=arrays['image'], labels=arrays['label'],
                    instances=arrays['instance'], mean=tuple(float(m) for m in mean),
                    std=tuple(float(s) for s in std), classes=classes, labeled=labeled)


def _materialise(views: Mapping[str, LazyArray]) -> dict[str, np.ndarray]:
  """Reads views over one `CachedSource` into memory, a chunk of records at a time."""
  arrays = {k: np.empty(v.shape, v.dtype) for k, v in views.items()}
  n = len(next(iter(views.values())))
  for start in range(0, n, _CHUNK):
    chunk = slice(start, min(start + _CHUNK, n))
    for k, view in views.items():
      arrays[k][chunk] = view[chunk]
  return arrays
