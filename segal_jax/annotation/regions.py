"""Region protocols of the simulated annotator, charged in clicks.

Each labels what a chosen superpixel shows the way a person with that tool
would, from the ground truth, and charges clicks (docs/protocols.md):

* `DominantLabel` (Cai et al. CVPR 2021): one click per superpixel, which
  gets its majority class (over its non-void pixels) entirely; the pixels of
  other classes inside it are labeled wrongly (`annotators.label_error`).
* `MultiClass` (Hwang et al. NeurIPS 2023): one click per class present in
  the superpixel; its pixels get the partial-label mask of those classes
  ([H, W, C] bool, `losses.pixel_cross_entropy`: any of them).
* `Points` (PixelPick-like, Shin et al. 2021): one click per chosen
  superpixel, on its innermost pixel (farthest from its boundary and the
  image edge, `scipy.ndimage.distance_transform_edt`; the first in raster
  order on ties), which gets that pixel's class. Superpixels are ranked by the
  strategy's mean score like every region unit.

Images labeled whole (the initial set) are drawn with polygons and cost their
polygon clicks (`clicks`). What is labeled is the pool's state: the chosen
superpixels (`pool.chosen`) and the unit ids paid (`pool.paid`, one per
click); the labels are rebuilt from it, the ground truth and the pool's
superpixels (`segments`, bound per run by `bind`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage
from skimage import segmentation as sk_segmentation

from segal_jax.annotation import clicks as clicks_lib
from segal_jax.annotation import noise as noise_lib
from segal_jax.annotation import oracle
from segal_jax.data import labels as labels_lib
from segal_jax.state import pool as pool_lib

IGNORE = labels_lib.IGNORE


def num_classes(split) -> int:
  return int(getattr(split, 'num_classes', labels_lib.NUM_CLASSES))


def image_clicks(split, image: int, cache: dict[int, int] | None = None) -> int:
  """Polygon clicks of every instance of a whole pool image (memoised in `cache`)."""
  if cache is not None and image in cache:
    return cache[image]
  out = int(sum(oracle.id_clicks(split.instances[image], split.labels[image]).values()))
  if cache is not None:
    cache[image] = out
  return out


def class_counts(truth: np.ndarray, segments: np.ndarray, classes: int) -> np.ndarray:
  """[S, classes] int64 pixels of each class (void left out) in each superpixel."""
  truth, segments = np.asarray(truth, np.int64), np.asarray(segments, np.int64)
  valid = truth != IGNORE
  size = (int(segments.max(initial=0)) + 1) * classes
  return np.bincount(segments[valid] * classes + truth[valid], minlength=size
                     ).reshape(-1, classes)


def click_pixels(segments: np.ndarray) -> np.ndarray:
  """[S] int64 flat index of each superpixel's innermost pixel (see module doc)."""
  segments = np.asarray(segments, np.int64)
  # The image edge bounds a superpixel too: pad with an id no superpixel has
  # (ids shifted by one: find_boundaries takes 0 for background).
  edges = sk_segmentation.find_boundaries(np.pad(segments + 1, 1), mode='inner')[1:-1, 1:-1]
  inner = ndimage.distance_transform_edt(~edges)
  ids = np.arange(int(segments.max(initial=0)) + 1)
  where = ndimage.maximum_position(inner, segments, index=ids)
  return np.ravel_multi_index(np.array(where, np.int64).T, segments.shape)


@dataclasses.dataclass(frozen=True)
class _Regions:
  """What the region protocols share; subclasses say what a superpixel's
  click(s) are (`_unit_ids`) and what they label (`_partial`)."""
  noise: noise_lib.Noise = noise_lib.Noise()
  segments: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)
  mask = False  # labels are partial-label masks
  waits = False  # simulated: labels come at once

  cost_rule = 'clicks'
  min_price = 1

  def bind(self, *, seed: int, segments: np.ndarray | None) -> _Regions:
    """This protocol for one run: noise seeded by `seed`, labels from `segments`."""
    return dataclasses.replace(self, segments=segments,
                               noise=dataclasses.replace(self.noise, seed=int(seed)))

  def image_costs(self, split) -> np.ndarray:
    return np.array([image_clicks(split, i) for i in range(len(split.instances))], np.int64)

  def cost(self, pool: pool_lib.PoolLabels, image_costs: np.ndarray, split=None) -> int:
    del split
    full = set(pool.full)
    return (int(np.asarray(image_costs)[np.asarray(pool.full, np.int64)].sum())
            + sum(len(v) for i, v in pool.paid.items() if i not in full))

  def clicks(self, pool: pool_lib.PoolLabels, split, cache=None) -> int:
    full = set(pool.full)
    return (sum(image_clicks(split, i, cache) for i in full)
            + sum(len(v) for i, v in pool.paid.items() if i not in full))

  def prices(self, split, image: int):
    return None

  def expected_clicks(self, prediction, segments, num_segments=0):
    if segments is None:
      return clicks_lib.expected_image_clicks(prediction)
    return np.ones(num_segments)

  def annotate_images(self, pool: pool_lib.PoolLabels, split, indices) -> None:
    del split
    pool.full = sorted(set(pool.full) | {int(i) for i in indices})

  def annotate_superpixels(self, pool: pool_lib.PoolLabels, split, segments, picks) -> int:
    cost = 0
    for i, sps in sorted(picks.items()):
      table = self.superpixel_ids(split, segments, i)
      new = [table.get(int(s), np.zeros(0, np.int64)) for s in sps]
      before = pool.paid.get(i, [])
      paid = np.union1d(before, np.concatenate([before, *new])).astype(np.int64)
      cost += 0 if i in pool.full else len(paid) - len(before)
      pool.paid[i] = paid.tolist()
      pool.chosen[i] = sorted(set(pool.chosen.get(i, [])) | {int(s) for s in sps})
    return cost

  def superpixel_ids(self, split, segments, image: int) -> dict[int, np.ndarray]:
    return self._unit_ids(np.asarray(split.labels[image]), np.asarray(segments[image]),
                          num_classes(split))

  def addable_superpixels(self, pool: pool_lib.PoolLabels, split, segments, image: int,
                          num_segments: int) -> np.ndarray:
    out = np.zeros(num_segments, bool)
    table = self.superpixel_ids(split, segments, image)
    out[[s for s in table if s < num_segments]] = True
    out[[s for s in pool.chosen.get(int(image), []) if s < num_segments]] = False
    return out

  def labels(self, pool: pool_lib.PoolLabels, split, indices: np.ndarray) -> np.ndarray:
    classes, full = num_classes(split), set(pool.full)
    out = []
    for i in np.asarray(indices, np.int64).tolist():
      truth = np.asarray(split.labels[i])
      if i in full:  # drawn with polygons: instance by instance
        given = noise_lib.noisy_label(self.noise, truth, truth,
                                      oracle.instance_ids(split.instances[i], truth), i, classes)
        if self.mask:
          given = np.arange(classes) == np.where(given == IGNORE, -1, given)[..., None]
      else:
        if self.segments is None:
          raise ValueError(f'{type(self).__name__} needs the pool superpixels '
                           '(its bind) to build labels')
        given = self._partial(truth, np.asarray(self.segments[i]),
                              np.asarray(pool.chosen.get(i, []), np.int64), i, classes)
      out.append(given)
    shape = (0, *np.shape(split.labels)[1:]) + ((classes,) if self.mask else ())
    return np.stack(out) if out else np.zeros(shape, bool if self.mask else np.uint8)

  def labeled_counts(self, pool: pool_lib.PoolLabels, split, indices) -> tuple[int, int]:
    pixels = instances = 0
    for i in np.asarray(indices, np.int64).tolist():
      given = self.labels(pool, split, np.array([i]))[0]
      has = labels_lib.has_label(given)
      ids = oracle.instance_ids(split.instances[i], split.labels[i])[has]
      pixels += int(has.sum())
      instances += int(np.unique(ids[ids > 0]).size)
    return pixels, instances

  def _unit_ids(self, truth, segments, classes) -> dict[int, np.ndarray]:
    raise NotImplementedError

  def _partial(self, truth, segments, chosen, image, classes) -> np.ndarray:
    raise NotImplementedError


def _one_per_superpixel(sps: np.ndarray) -> dict[int, np.ndarray]:
  return {int(s): np.array([s], np.int64) for s in sps}


@dataclasses.dataclass(frozen=True)
class DominantLabel(_Regions):
  """One click per superpixel; the whole superpixel gets its majority class."""

  def _unit_ids(self, truth, segments, classes):
    return _one_per_superpixel(np.flatnonzero(class_counts(truth, segments, classes).sum(1)))

  def _partial(self, truth, segments, chosen, image, classes):
    counts = class_counts(truth, segments, classes)
    major = counts.argmax(1)  # ties: the lower class
    chosen = chosen[(chosen < len(counts))]
    pick = np.zeros(len(counts), bool)
    pick[chosen[counts[chosen].sum(1) > 0]] = True
    label = np.where(pick[segments], major[segments], IGNORE).astype(np.uint8)
    return noise_lib.noisy_label(self.noise, label, truth, segments, image, classes)


@dataclasses.dataclass(frozen=True)
class MultiClass(_Regions):
  """One click per class present in the superpixel; partial-label masks."""
  mask = True

  def expected_clicks(self, prediction, segments, num_segments=0):
    if segments is None:
      return clicks_lib.expected_image_clicks(prediction)
    return clicks_lib.expected_class_clicks(prediction, segments, num_segments)

  def _unit_ids(self, truth, segments, classes):
    counts = class_counts(truth, segments, classes)
    return {int(s): s * classes + np.flatnonzero(counts[s]) for s in np.flatnonzero(counts.sum(1))}

  def _partial(self, truth, segments, chosen, image, classes):
    present = class_counts(truth, segments, classes) > 0
    chosen = chosen[chosen < len(present)]
    answer = np.zeros_like(present)
    sp, cls = np.nonzero(present[chosen])
    sp = chosen[sp]
    # Each class named is one decision, keyed by (superpixel, class).
    answer[sp, noise_lib.flipped_classes(self.noise, image, sp * classes + cls, cls,
                                         classes)] = True
    out = answer[segments]
    out[~noise_lib.kept_pixels(self.noise, truth)] = False
    return out


@dataclasses.dataclass(frozen=True)
class Points(_Regions):
  """One click per superpixel, on its innermost pixel, which gets its class."""

  def _unit_ids(self, truth, segments, classes):
    at = click_pixels(segments)
    return _one_per_superpixel(np.flatnonzero(truth.ravel()[at] != IGNORE))

  def _partial(self, truth, segments, chosen, image, classes):
    at = click_pixels(segments)
    chosen = chosen[chosen < len(at)]
    label = np.full(truth.size, IGNORE, np.uint8)
    label[at[chosen]] = truth.ravel()[at[chosen]]
    label = label.reshape(truth.shape)
    return noise_lib.noisy_label(self.noise, label, truth, segments, image, classes)
