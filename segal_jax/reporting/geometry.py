"""How big superpixels are next to the objects they buy: sizes, shapes, counts.

Pure NumPy / scikit-image on the maps of one image at a time: instance areas
(things and stuff apart), superpixel areas and compactness, and how many
instances a superpixel touches (what a superpixel costs under the study's
protocol). `summarize` pools them over a data set. Instance ids follow the
convention of the data sets (`segal_jax.data`): a thing instance is
`class * 1000 + k` (>= 1000), a stuff region its class id (< 1000), void 0
after `oracle.instance_ids`.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import skimage.measure

from segal_jax.annotation import oracle

THING_ID_MIN = 1000  # instance ids at or above this are things (the data sets' convention)


def is_thing(ids: np.ndarray) -> np.ndarray:
  """[...] bool: True for thing instance ids."""
  return np.asarray(ids) >= THING_ID_MIN


def instance_areas(instance: np.ndarray, label: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
  """(ids, areas): the image's non-void instance ids, sorted, and their pixel counts.

  Args:
    instance: [H, W] int instance ids; label: [H, W] uint8 train ids or None
      (`oracle.instance_ids`).
  """
  ids, areas = np.unique(oracle.instance_ids(instance, label), return_counts=True)
  keep = ids > 0
  return ids[keep].astype(np.int64), areas[keep].astype(np.int64)


def segment_shapes(segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(areas, compactness) of every superpixel of one image, in id order.

  Compactness is the isoperimetric quotient 4 pi area / perimeter^2 (1 for a
  disc, lower for elongated or ragged regions), with scikit-image's perimeter
  (4-connected contour); a one-pixel region gets 1.

  Args:
    segments: [H, W] int superpixel ids (>= 0).
  """
  props = skimage.measure.regionprops(np.asarray(segments, np.int64) + 1)
  areas = np.array([p.area for p in props], np.int64)
  perimeters = np.array([p.perimeter for p in props], np.float64)
  compact = np.where(perimeters > 0, 4 * np.pi * areas / np.maximum(perimeters, 1e-9) ** 2, 1.0)
  return areas, np.minimum(compact, 1.0)


def touched_per_segment(instance: np.ndarray, label: np.ndarray | None,
                        segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(things, stuff): [S] instances of each kind every superpixel touches, the ids
  it pays for under the `instances` cost rule (`oracle.superpixel_ids`)."""
  segments = np.asarray(segments)
  count = int(segments.max(initial=-1)) + 1
  things, stuff = np.zeros(count, np.int64), np.zeros(count, np.int64)
  for sp, ids in oracle.superpixel_ids(instance, label, segments, 'instances').items():
    thing = is_thing(ids)
    things[sp], stuff[sp] = int(thing.sum()), int((~thing).sum())
  return things, stuff


def image_geometry(label: np.ndarray, instance: np.ndarray,
                   segments: np.ndarray) -> dict[str, np.ndarray]:
  """Every measure of one image, as arrays to pool over a data set.

  Returns:
    {'thing_areas', 'stuff_areas': [n] pixels of each instance,
     'segment_areas', 'segment_compactness': [S],
     'segment_things', 'segment_stuff': [S] instances each superpixel touches,
     'counts': [3] (things, stuff, superpixels) of the image}.
  """
  ids, areas = instance_areas(instance, label)
  thing = is_thing(ids)
  seg_areas, compact = segment_shapes(segments)
  things, stuff = touched_per_segment(instance, label, segments)
  return {'thing_areas': areas[thing], 'stuff_areas': areas[~thing],
          'segment_areas': seg_areas, 'segment_compactness': compact,
          'segment_things': things, 'segment_stuff': stuff,
          'counts': np.array([thing.sum(), (~thing).sum(), seg_areas.size], np.int64)}


def _describe(values: np.ndarray) -> dict[str, float]:
  values = np.asarray(values, np.float64)
  if not values.size:
    return {'n': 0}
  q = np.percentile(values, [10, 25, 50, 75, 90])
  return {'n': int(values.size), 'mean': float(values.mean()),
          **{f'p{p}': float(v) for p, v in zip((10, 25, 50, 75, 90), q)}}


def summarize(per_image: Iterable[dict[str, np.ndarray]], image_pixels: int) -> dict[str, Any]:
  """Pooled statistics of `image_geometry` results over a data set.

  Areas are in pixels and as a share of the image (`image_pixels` = H x W),
  which is what compares with Cityscapes at another resolution.
  """
  parts = list(per_image)
  pooled = {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0)
            for k in ('thing_areas', 'stuff_areas', 'segment_areas', 'segment_compactness',
                      'segment_things', 'segment_stuff')}
  counts = np.stack([p['counts'] for p in parts]) if parts else np.zeros((0, 3), np.int64)
  touched = pooled['segment_things'] + pooled['segment_stuff']
  out: dict[str, Any] = {
      'images': len(parts), 'image_pixels': int(image_pixels),
      'instances_per_image': _describe(counts[:, 0] + counts[:, 1]),
      'things_per_image': _describe(counts[:, 0]),
      'stuff_per_image': _describe(counts[:, 1]),
      'superpixels_per_image': _describe(counts[:, 2]),
      'segment_compactness': _describe(pooled['segment_compactness']),
      'instances_per_superpixel': _describe(touched),
      'superpixels_touching_a_thing': float(np.mean(pooled['segment_things'] > 0))
                                      if touched.size else 0.0,
  }
  for name in ('thing_areas', 'stuff_areas', 'segment_areas'):
    out[name] = _describe(pooled[name])
    out[name + '_share'] = _describe(pooled[name] / float(image_pixels))
  return out
