"""Who labels what the selector chose, and what it costs: one small interface.

An `Annotator` turns a selection into labels in the pool's state and counts
the cost by its own rule; it also gives the training labels of labeled
images, as class ids ([H, W] uint8, `labels.IGNORE` = unlabeled) or as
partial-label masks ([H, W, C] bool, the classes a pixel may have), both of
which the train step accepts. A new annotation protocol, or people returning
labels, is a new entry of `ANNOTATORS`; `loop.run` takes the annotator as an
argument and does not change.

The one annotator today is the simulated study protocol (`InstanceOverlap`,
DESIGN §1): whole images carry their full ground truth; an annotator shown a
superpixel labels, completely, every instance that overlaps it; the cost is
the number of newly annotated instances.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from segal_jax import oracle
from segal_jax import pool as pool_lib


class Annotator(Protocol):
  """The interface `loop` and `selection` use (split: a pool with `labels`,
  `instances`; segments: [N, H, W] superpixel ids or None)."""

  def image_costs(self, split) -> np.ndarray:
    """[N] int64 cost of annotating each whole image of the pool."""

  def cost(self, pool: pool_lib.PoolLabels, image_costs: np.ndarray) -> int:
    """The total cost of everything annotated in `pool` so far."""

  def annotate_images(self, pool: pool_lib.PoolLabels, split, indices) -> None:
    """Labels whole images (updates `pool`)."""

  def annotate_superpixels(self, pool: pool_lib.PoolLabels, split, segments,
                           picks: dict[int, list[int]]) -> None:
    """Labels what the chosen superpixels show (updates `pool`)."""

  def superpixel_costs(self, pool: pool_lib.PoolLabels, split, segments, images: np.ndarray,
                       sps: np.ndarray) -> np.ndarray:
    """[k] cost each ranked (image, superpixel) adds, taking them in order."""

  def labels(self, pool: pool_lib.PoolLabels, split, indices: np.ndarray) -> np.ndarray:
    """Training labels of pool images `indices`: [b, H, W] uint8 or [b, H, W, C] bool."""


class InstanceOverlap:
  """The simulated annotator of the study: instances overlapping a superpixel."""

  def image_costs(self, split) -> np.ndarray:
    return np.array([oracle.count_instances(m) for m in split.instances], np.int64)

  def cost(self, pool: pool_lib.PoolLabels, image_costs: np.ndarray) -> int:
    full = set(pool.full)
    partial = sum(len(v) for i, v in pool.annotated.items() if i not in full)
    return int(np.asarray(image_costs)[np.asarray(pool.full, np.int64)].sum()) + partial

  def annotate_images(self, pool: pool_lib.PoolLabels, split, indices) -> None:
    del split
    pool.full = sorted(set(pool.full) | {int(i) for i in indices})

  def annotate_superpixels(self, pool: pool_lib.PoolLabels, split, segments,
                           picks: dict[int, list[int]]) -> None:
    for i, sps in sorted(picks.items()):
      _, ids, _ = oracle.annotate_superpixels(split.labels[i], split.instances[i], segments[i],
                                              sps, pool.annotated.get(i))
      pool.annotated[i] = ids.tolist()
      pool.chosen[i] = sorted(set(pool.chosen.get(i, [])) | {int(s) for s in sps})

  def superpixel_costs(self, pool: pool_lib.PoolLabels, split, segments, images: np.ndarray,
                       sps: np.ndarray) -> np.ndarray:
    seen: dict[int, set[int]] = {}
    out = np.zeros(len(images), np.int64)
    for n, (i, sp) in enumerate(zip(np.asarray(images).tolist(), np.asarray(sps).tolist())):
      if i not in seen:
        seen[i] = set(pool.annotated.get(i, []))
      inside = segments[i] == sp
      ids = np.unique(oracle.instance_ids(split.instances[i], split.labels[i])[inside])
      new = {int(v) for v in ids if v > 0} - seen[i]
      seen[i] |= new
      out[n] = len(new)
    return out

  def labels(self, pool: pool_lib.PoolLabels, split, indices: np.ndarray) -> np.ndarray:
    labels = np.asarray(split.labels[indices]).copy()
    full = set(pool.full)
    for row, i in enumerate(indices):
      if int(i) not in full:
        labels[row] = oracle.partial_label(labels[row], split.instances[int(i)],
                                           pool.annotated.get(int(i), []))
    return labels


ANNOTATORS: dict[str, Any] = {'instance_overlap': InstanceOverlap()}
DEFAULT = 'instance_overlap'


def get(name: str = DEFAULT) -> Annotator:
  if name not in ANNOTATORS:
    from segal_jax.errors import UserError  # pylint: disable=g-import-not-at-top
    raise UserError(f'unknown annotator {name!r}',
                    f'choose from {", ".join(sorted(ANNOTATORS))}')
  return ANNOTATORS[name]
