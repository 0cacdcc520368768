"""The simulated annotator: partial labels and annotation cost from ground truth.

Protocol (DESIGN §1): an annotator shown a superpixel labels, completely, every
object instance that overlaps it. For "stuff" classes the instance is the whole
region of that class in the image, which falls out of the Cityscapes instance
map (stuff pixels hold their label id, things `label_id * 1000 + k`). Cost is
the number of newly annotated instances.

Void pixels (instance id <= 0, or train id 255) belong to no instance: they are
never labelled by a superpixel annotation and never cost anything.

Everything is vectorised with lookup tables over instance ids; no per-pixel
Python. Inputs are NumPy arrays on the host.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from segal_jax.data import labels as labels_lib

# Above this id a lookup table indexed by id gets large; compact the ids first.
_MAX_TABLE_ID = 1 << 22


def _label_from_instance(instance: np.ndarray) -> np.ndarray:
  """Train ids implied by Cityscapes instance ids (void for unknown ids)."""
  label_id = np.where(instance >= 1000, instance // 1000, instance)
  known = (label_id >= 0) & (label_id < labels_lib.ID_TO_TRAIN_ID.size)
  return np.where(known, labels_lib.ID_TO_TRAIN_ID[np.where(known, label_id, 0)],
                  labels_lib.IGNORE).astype(np.uint8)


def instance_ids(instance: np.ndarray, label: np.ndarray | None = None) -> np.ndarray:
  """Instance ids with void pixels set to 0.

  Args:
    instance: [H, W] int Cityscapes instance ids.
    label: [H, W] uint8 train ids; None = derive them from the instance ids
      with the Cityscapes label table.

  Returns:
    [H, W] int64, 0 where the pixel belongs to no instance.
  """
  instance = np.asarray(instance).astype(np.int64)
  if label is None:
    label = _label_from_instance(instance)
  valid = (instance > 0) & (np.asarray(label) != labels_lib.IGNORE)
  return np.where(valid, instance, 0)


def _dense(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
  """(ids usable as table indices, the id of each index or None if identity)."""
  if ids.max(initial=0) < _MAX_TABLE_ID:
    return ids, None
  table, inverse = np.unique(ids, return_inverse=True)  # table[0] == 0 (void)
  if table[0] != 0:
    table = np.concatenate([[0], table])
    inverse = inverse + 1
  return inverse.reshape(ids.shape), table


def annotate_superpixels(
    label: np.ndarray, instance: np.ndarray, segments: np.ndarray,
    chosen: np.ndarray | Sequence[int], annotated: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
  """Annotates every instance that overlaps one of the chosen superpixels.

  Args:
    label: [H, W] uint8 ground-truth train ids (255 = void).
    instance: [H, W] int Cityscapes instance ids.
    segments: [H, W] int superpixel ids.
    chosen: 1-D int, the superpixel ids chosen this cycle (ids not present in
      `segments` select nothing).
    annotated: 1-D int, instance ids annotated in earlier cycles, or None.

  Returns:
    partial_label: [H, W] uint8, the ground truth on every pixel of every
      annotated instance (earlier ones included), 255 elsewhere.
    annotated_instances: 1-D int64 sorted ids of all annotated instances.
    cost: number of instances annotated for the first time now.
  """
  label = np.asarray(label)
  segments = np.asarray(segments)
  if not label.shape == np.shape(instance) == segments.shape:
    raise ValueError(f'label {label.shape}, instance {np.shape(instance)} and '
                     f'segments {segments.shape} must have one shape')
  ids = instance_ids(instance, label)
  dense, table = _dense(ids)
  size = int(dense.max(initial=0)) + 1

  chosen = np.asarray(chosen, np.int64).ravel()
  num_segments = int(segments.max(initial=-1)) + 1
  chosen = chosen[(chosen >= 0) & (chosen < num_segments)]
  pick = np.zeros(max(num_segments, 1), bool)
  pick[chosen] = True
  hit = np.zeros(size, bool)
  if segments.min(initial=0) < 0:  # negative ids are no superpixel
    in_chosen = pick[np.maximum(segments, 0)] & (segments >= 0)
  else:
    in_chosen = pick[segments]
  hit[dense[in_chosen]] = True
  hit[0] = False  # void

  before = np.zeros(size, bool)
  earlier = np.zeros(0, np.int64) if annotated is None else (
      np.asarray(annotated, np.int64).ravel())
  if table is None:
    inside = earlier[(earlier > 0) & (earlier < size)]
    before[inside] = True
  else:
    before[np.searchsorted(table, earlier[np.isin(earlier, table[1:])])] = True

  cost = int(np.count_nonzero(hit & ~before))
  keep = hit | before
  partial = np.where(keep[dense], label, labels_lib.IGNORE).astype(np.uint8)
  new_ids = np.flatnonzero(hit)
  if table is not None:
    new_ids = table[new_ids]
  return partial, np.union1d(earlier, new_ids).astype(np.int64), cost


def annotate_image(label: np.ndarray, instance: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, int]:
  """Annotates a whole image.

  Args:
    label: [H, W] uint8 ground-truth train ids.
    instance: [H, W] int Cityscapes instance ids.

  Returns:
    label: [H, W] uint8, a copy of the ground truth.
    annotated_instances: 1-D int64 sorted ids of the image's instances.
    cost: the number of instances in the image (void excluded).
  """
  label = np.asarray(label)
  present = np.unique(instance_ids(instance, label))
  present = present[present > 0]
  return label.astype(np.uint8, copy=True), present, int(present.size)


def count_instances(instance: np.ndarray, label: np.ndarray | None = None) -> int:
  """Number of (non-void) instances in an image: the cost of annotating it all.

  Args:
    instance: [H, W] int Cityscapes instance ids.
    label: optional [H, W] uint8 train ids (else derived from the instance ids
      with the Cityscapes label table).
  """
  ids = instance_ids(instance, label)
  dense, _ = _dense(ids)
  counts = np.bincount(dense.ravel())
  return int(np.count_nonzero(counts[1:]))


def annotate_batch(
    labels: np.ndarray, instances: np.ndarray, segments: np.ndarray,
    chosen: Sequence[np.ndarray], annotated: Sequence[np.ndarray | None] | None = None,
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
  """`annotate_superpixels` over N images.

  Args:
    labels: [N, H, W] uint8; instances: [N, H, W] int; segments: [N, H, W] int.
    chosen: N 1-D int arrays of chosen superpixel ids.
    annotated: N arrays (or None) of earlier annotated instance ids, or None.

  Returns:
    partial labels [N, H, W] uint8, N arrays of annotated ids, costs [N] int64.
  """
  n = len(labels)
  annotated = [None] * n if annotated is None else annotated
  out = [annotate_superpixels(labels[i], instances[i], segments[i], chosen[i],
                              annotated[i]) for i in range(n)]
  partial = np.stack([o[0] for o in out]) if out else np.zeros((0,), np.uint8)
  return partial, [o[1] for o in out], np.array([o[2] for o in out], np.int64)


def partial_label(label: np.ndarray, instance: np.ndarray, annotated: np.ndarray) -> np.ndarray:
  """The ground truth on the pixels of the `annotated` instances, 255 elsewhere.

  Args:
    label: [H, W] uint8 train ids.
    instance: [H, W] int Cityscapes instance ids.
    annotated: 1-D int instance ids (as returned by `annotate_superpixels`).

  Returns:
    [H, W] uint8.
  """
  ids = instance_ids(instance, label)
  keep = np.isin(ids, np.asarray(annotated, np.int64)) & (ids > 0)
  return np.where(keep, label, labels_lib.IGNORE).astype(np.uint8)
