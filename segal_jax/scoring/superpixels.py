"""Watershed superpixels, their on-disk cache, and jitted per-superpixel means.

Superpixel maps are int32 `[H, W]` with labels 0..S-1. They are computed once
per image on the host (scikit-image, parallel worker processes) and cached on
disk; scoring is a single `jax.ops.segment_sum` on the device, so uncertainty
maps never leave the accelerator.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import io
import json
import multiprocessing
import os
import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import skimage.color
import skimage.filters
import skimage.segmentation
import skimage.util
import tqdm

from segal_jax import errors
from segal_jax.formats import files as _files


def watershed(image: np.ndarray, *, n_segments: int = 100,
              compactness: float = 0.001) -> np.ndarray:
  """Compact watershed superpixels on the Sobel gradient of the grey image.

  Args:
    image: [H, W, 3] uint8 RGB (or [H, W] grey).
    n_segments: number of markers (scikit-image places them on a grid); the
      result has about this many segments.
    compactness: compact-watershed weight (0 = classic watershed).

  Returns:
    [H, W] int32 labels 0..S-1, consecutive.
  """
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 3:
    grey = skimage.color.rgb2gray(image)
  elif image.ndim == 2:
    grey = skimage.util.img_as_float(image)
  else:
    raise errors.UserError(
        f'cannot segment an image of shape {image.shape}',
        'pass [H, W, 3] RGB or [H, W] grey images')
  gradient = skimage.filters.sobel(grey)
  labels = skimage.segmentation.watershed(
      gradient, markers=n_segments, compactness=compactness)
  labels, _, _ = skimage.segmentation.relabel_sequential(labels)
  return (labels - labels.min()).astype(np.int32)


def _watershed_one(image, n_segments, compactness):
  return watershed(image, n_segments=n_segments, compactness=compactness)


def watershed_batch(images: Sequence[np.ndarray] | np.ndarray, *,
                    n_segments: int = 100, compactness: float = 0.001,
                    workers: int | None = None,
                    progress: bool = True) -> np.ndarray:
  """Watershed superpixels for many images in parallel worker processes.

  Workers are spawned (not forked: the parent may hold JAX threads). With one
  worker, or one image, everything runs in this process.

  Args:
    images: N images [H, W, 3] uint8, all the same size.
    n_segments: see `watershed`.
    compactness: see `watershed`.
    workers: process count; None = all cores.
    progress: show a tqdm progress bar.

  Returns:
    [N, H, W] int32.
  """
  n = len(images)
  if n == 0:
    return np.zeros((0, 0, 0), np.int32)
  workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
  workers = min(workers, n)
  fn = functools.partial(_watershed_one, n_segments=n_segments,
                         compactness=compactness)
  bar = functools.partial(tqdm.tqdm, total=n, desc='superpixels', unit='img',
                          disable=not progress)
  if workers == 1:
    out = [fn(image) for image in bar(images)]
  else:
    context = multiprocessing.get_context('spawn')
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
      chunk = max(1, min(16, n // (4 * workers)))
      out = list(bar(pool.map(fn, images, chunksize=chunk)))
  return np.stack(out)


def safe_name(name: Any) -> str:
  """A file-name-safe form of `name`; a hash keeps rewritten names distinct."""
  text = str(name)
  safe = re.sub(r'[^A-Za-z0-9_.-]', '_', text)
  if safe != text or safe in ('', '.', '..'):
    safe += '-' + hashlib.sha1(text.encode()).hexdigest()[:8]
  return safe


class SuperpixelCache:
  """On-disk superpixel cache keyed by (data set, image id, parameters).

  Layout: `<root>/<dataset>/watershed_n<n_segments>_c<compactness>/<id>.npz`,
  one compressed file per image (labels stored as uint16 when they fit). Files
  are written to a temporary name and moved into place with `os.replace`, so a
  crash never leaves a truncated entry and concurrent writers do not clash.
  """

  def __init__(self, root: str | os.PathLike[str]):
    self.root = os.fspath(root)

  def path(self, dataset: str, image_id: Any, *, n_segments: int = 100,
           compactness: float = 0.001) -> str:
    params = f'watershed_n{int(n_segments)}_c{float(compactness)!r}'
    return os.path.join(self.root, safe_name(dataset), safe_name(params),
                        safe_name(image_id) + '.npz')

  def _load(self, path: str) -> np.ndarray | None:
    try:
      with np.load(path) as data:
        return data['segments'].astype(np.int32)
    except FileNotFoundError:
      return None
    except Exception as e:  # pylint: disable=broad-except
      raise errors.UserError(
          f'the superpixel cache file {path} is unreadable ({e})',
          'delete it and run again to recompute it') from e

  def _store(self, path: str, segments: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    small = segments.astype(np.uint16 if segments.max() < 2**16 else np.int32)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, segments=small)
    with _files.atomic_open(path, 'wb') as f:
      f.write(buffer.getvalue())

  def segment_counts(self, dataset: str, ids: Sequence[Any], segments, *,
                     n_segments: int = 100, compactness: float = 0.001) -> np.ndarray:
    """[N] superpixels of each image (max id + 1), kept in `counts.json` beside the cache.

    Only images missing from that index are read from `segments` ([N, H, W]),
    so the pool is scanned once, not every cycle.
    """
    directory = os.path.dirname(self.path(dataset, 'x', n_segments=n_segments,
                                          compactness=compactness))
    index_path = os.path.join(directory, 'counts.json')
    try:
      with open(index_path) as f:
        index = json.load(f)
    except (OSError, ValueError):
      index = {}
    missing = [k for k, i in enumerate(ids) if str(i) not in index]
    for k in missing:
      index[str(ids[k])] = int(np.asarray(segments[k]).max()) + 1
    if missing:
      with _files.atomic_open(index_path, 'w') as f:
        json.dump(index, f, sort_keys=True)
    return np.array([index[str(i)] for i in ids], np.int64)

  def get_or_compute(
      self, dataset: str, ids: Sequence[Any],
      images: Sequence[np.ndarray] | Callable[[int], np.ndarray], *,
      n_segments: int = 100, compactness: float = 0.001,
      workers: int | None = None, progress: bool = True) -> np.ndarray:
    """Superpixels of the images `ids`, computing only those not cached.

    Args:
      dataset: data set name (part of the key).
      ids: N image ids, unique within the data set (str or int).
      images: the N images [H, W, 3] uint8, as a sequence indexed by position
        or a callable `position -> image`; only uncached positions are read.
      n_segments: see `watershed`.
      compactness: see `watershed`.
      workers: process count for the missing images; None = all cores.
      progress: progress bar while computing.

    Returns:
      [N, H, W] int32 superpixel maps.
    """
    params = dict(n_segments=n_segments, compactness=compactness)
    paths = [self.path(dataset, i, **params) for i in ids]
    out = [self._load(p) for p in paths]
    missing = [k for k, seg in enumerate(out) if seg is None]
    if missing:
      read = images if callable(images) else images.__getitem__
      computed = watershed_batch([read(k) for k in missing], workers=workers,
                                 progress=progress, **params)
      for k, seg in zip(missing, computed):
        self._store(paths[k], seg)
        out[k] = seg
    shapes = {seg.shape for seg in out}
    if len(shapes) > 1:
      raise errors.UserError(
          f'images of {dataset} have different sizes {sorted(shapes)}',
          'resize them to one size before computing superpixels')
    return np.stack(out) if out else np.zeros((0, 0, 0), np.int32)


def segment_sums(values: jax.Array, segments: jax.Array, num_segments: int) -> jax.Array:
  """Sums of per-pixel vectors inside every superpixel, for a batch of images.

  One `segment_sum` over the whole batch (image b's segment s is row
  b * S + s), accumulated in float32.

  Args:
    values: [B, H, W, K] per-pixel vectors.
    segments: [B, H, W] int superpixel ids; ids outside [0, num_segments)
      (e.g. -1 for pixels to ignore) are dropped.
    num_segments: S, static padding; at least the largest id + 1.

  Returns:
    [B, S, K] float32 sums (0 for empty segments).
  """
  batch, k = values.shape[0], values.shape[-1]
  segments = segments.astype(jnp.int32)
  inside = (segments >= 0) & (segments < num_segments)
  offset = jnp.arange(batch, dtype=jnp.int32)[:, None, None] * num_segments
  # Out-of-range rows get id B * S, which segment_sum drops.
  ids = jnp.where(inside, segments + offset, batch * num_segments)
  sums = jax.ops.segment_sum(values.astype(jnp.float32).reshape(-1, k), ids.reshape(-1),
                             num_segments=batch * num_segments)
  return sums.reshape(batch, num_segments, k)


@functools.partial(jax.jit, static_argnames='num_segments')
def segment_means(maps: jax.Array, segments: jax.Array,
                  num_segments: int) -> tuple[jax.Array, jax.Array]:
  """Mean of a per-pixel map inside every superpixel, for a batch of images.

  Value sums and pixel counts accumulate together in one `segment_sums`.

  Args:
    maps: [B, H, W] float per-pixel scores (accumulated in float32).
    segments: [B, H, W] int superpixel ids; ids outside [0, num_segments)
      (e.g. -1 for pixels to ignore) are dropped.
    num_segments: S, static padding; at least the largest id + 1.

  Returns:
    means: [B, S] float32 (0 for empty segments).
    counts: [B, S] int32 pixels per segment.
  """
  data = jnp.stack([maps.astype(jnp.float32), jnp.ones(maps.shape, jnp.float32)], axis=-1)
  sums = segment_sums(data, segments, num_segments)
  # Float counts are exact below 2^24 pixels per segment.
  counts = sums[..., 1]
  means = jnp.where(counts > 0, sums[..., 0] / jnp.maximum(counts, 1.0), 0.0)
  return means, counts.astype(jnp.int32)
