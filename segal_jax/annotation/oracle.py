"""The simulated annotator: partial labels and annotation cost from ground truth.

Protocol (DESIGN §1): an annotator shown a superpixel labels, completely, every
object instance that overlaps it. For "stuff" classes the instance is the whole
region of that class in the image, which falls out of the instance map
(Cityscapes: stuff pixels hold their label id, things `label_id * 1000 + k`;
another class table: `class_index + 1` and `(class_index + 1) * 1000 + k`,
`image_folder.derive_instances`). Cost is
the number of ids newly paid for under a cost rule (below).

Void pixels (instance id <= 0, or train id 255) belong to no instance: they are
never labelled by a superpixel annotation.

Cost rules (`COST_RULES`) say which ids a unit pays for; the labels do not
depend on the rule. `study` (the study's count): every distinct id of the
instance map, void (id 0) and ignore regions included (94,372 over the 2,975
Cityscapes training images). `instances`: only the instances the annotator
labels (void excluded). `clicks`: the same ids as `instances`, each priced at
the polygon clicks of its outline (`clicks.region_clicks`). One rule serves
both units: an image pays for every id it holds, a superpixel for every id it
newly touches.

Everything is vectorised with lookup tables over instance ids; no per-pixel
Python. Inputs are NumPy arrays on the host.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from segal_jax.annotation import clicks as clicks_lib
from segal_jax.data import labels as labels_lib

COST_RULES = ('study', 'instances', 'clicks')
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
  """Number of (non-void) instances in an image: its cost under rule `instances`.

  Args:
    instance: [H, W] int Cityscapes instance ids.
    label: optional [H, W] uint8 train ids (else derived from the instance ids
      with the Cityscapes label table).
  """
  ids = instance_ids(instance, label)
  dense, _ = _dense(ids)
  counts = np.bincount(dense.ravel())
  return int(np.count_nonzero(counts[1:]))


def cost_ids(instance: np.ndarray, label: np.ndarray | None, rule: str) -> np.ndarray:
  """The id each pixel's annotation pays for under cost rule `rule`.

  Args:
    instance: [H, W] int Cityscapes instance ids.
    label: [H, W] uint8 train ids, or None (see `instance_ids`).
    rule: 'study' (every id of the instance map, void included), 'instances'
      (only annotated instances) or 'clicks' (the same ids as 'instances').

  Returns:
    [H, W] int64, -1 where the pixel pays for nothing.
  """
  if rule not in _COST_IDS:
    raise ValueError(f'unknown cost rule {rule!r}; known: {COST_RULES}')
  return _COST_IDS[rule](instance, label)


def _study_ids(instance, label):
  del label  # the study counts the instance map's values, void included
  return np.asarray(instance).astype(np.int64)


def _instance_rule_ids(instance, label):
  ids = instance_ids(instance, label)
  return np.where(ids > 0, ids, -1)


# Cost rule -> (instance, label) -> [H, W] int64 paid ids (-1: nothing).
_COST_IDS = {'study': _study_ids, 'instances': _instance_rule_ids, 'clicks': _instance_rule_ids}


def id_clicks(instance: np.ndarray, label: np.ndarray | None = None) -> dict[int, int]:
  """{instance id: polygon clicks of its outline} for the image's (non-void) instances."""
  return clicks_lib.region_clicks(instance_ids(instance, label))


def image_costs(instance: np.ndarray, label: np.ndarray | None = None) -> dict[str, int]:
  """The cost of annotating a whole image under every rule: {rule: distinct ids}
  ('clicks': the polygon clicks of every instance)."""
  out = {}
  for rule in COST_RULES:
    if rule == 'clicks':
      out[rule] = int(sum(id_clicks(instance, label).values()))
      continue
    ids = cost_ids(instance, label, rule)
    out[rule] = int(np.unique(ids[ids >= 0]).size)
  return out


def touched_ids(instance: np.ndarray, label: np.ndarray | None, segments: np.ndarray,
                chosen, rule: str) -> np.ndarray:
  """1-D int64 sorted ids the `chosen` superpixels touch under cost rule `rule`."""
  ids = cost_ids(instance, label, rule)
  inside = np.isin(np.asarray(segments), np.asarray(chosen, np.int64)) & (ids >= 0)
  return np.unique(ids[inside])


def superpixel_ids(instance: np.ndarray, label: np.ndarray | None, segments: np.ndarray,
                   rule: str) -> dict[int, np.ndarray]:
  """Superpixel id -> 1-D int64 sorted ids it touches under cost rule `rule`.

  Args:
    instance: [H, W] int instance ids; label: [H, W] uint8 train ids or None.
    segments: [H, W] int superpixel ids (>= 0).
  """
  ids = cost_ids(instance, label, rule)
  keep = ids >= 0
  seg, ids = np.asarray(segments, np.int64)[keep], ids[keep]
  span = int(ids.max(initial=0)) + 1
  pairs = np.unique(seg * span + ids)  # sorted by superpixel, then id
  sp, inst = np.divmod(pairs, span)
  cuts = np.flatnonzero(np.diff(sp)) + 1
  return {int(group[0]): ids_ for group, ids_ in zip(np.split(sp, cuts), np.split(inst, cuts))
          if len(group)}


def addable_superpixels(label: np.ndarray, instance: np.ndarray, segments: np.ndarray,
                        annotated, num_segments: int) -> np.ndarray:
  """[num_segments] bool: True for superpixels whose annotation could add a label.

  A superpixel adds a label when one of its pixels belongs to an instance
  (not void) that is not annotated yet; one whose pixels are all void or
  inside instances annotated before adds nothing. Ids absent from `segments`
  are False.

  Args:
    label: [H, W] uint8 train ids; instance: [H, W] int instance ids.
    segments: [H, W] int superpixel ids (>= 0).
    annotated: 1-D int instance ids annotated before (or empty).
  """
  ids = instance_ids(instance, label)
  open_ = (ids > 0) & ~np.isin(ids, np.asarray(annotated, np.int64))
  hits = np.bincount(np.asarray(segments)[open_].ravel(), minlength=num_segments)
  return hits[:num_segments] > 0


def priced(prices: dict[int, int] | None, ids) -> int:
  """The cost of `ids` at `prices` (id -> cost; None: 1 each; an id not listed: 0)."""
  if prices is None:
    return len(ids)
  return int(sum(prices.get(int(i), 0) for i in ids))


def fill_budget(units, budget: int, paid=None, *, overshoot: bool = False, price=None,
                floor: int = 1) -> tuple[list[int], list[int]]:
  """Takes ranked units greedily until their cost spends `budget`.

  A unit costs the ids of its group (its image) that are not paid yet, by an
  earlier cycle (`paid`) or by a unit taken before it. By default a unit that
  does not fit in what is left is skipped (its ids are not paid) and the walk
  goes on down the ranking, so smaller units fill the rest and the cost never
  exceeds `budget`. `overshoot=True` is the study's way: take units in rank
  order until the cost reaches `budget`, buying the unit that crosses it.
  `price(group, ids)` prices new ids (e.g. in clicks); by default each costs 1.
  The walk stops once less than `floor` is left, the least a unit that adds
  an id can cost (e.g. a polygon's 3 clicks), instead of walking every unit.

  Args:
    units: iterable, in rank order, of (group, ids): a hashable group and the
      1-D int ids the unit touches. Consumed lazily, only as far as needed.
    budget: the cost to spend (> 0).
    paid: group -> ids paid before (not modified).
    overshoot: the study's rule (see above).

  Returns:
    (positions in `units` of the units taken, the cost of each).
  """
  paid = {} if paid is None else paid
  own: dict = {}
  taken, costs, spent = [], [], 0
  for position, (group, ids) in enumerate(units):
    if spent >= budget or (not overshoot and budget - spent < floor):
      break
    if group not in own:
      own[group] = set(np.asarray(paid.get(group, ()), np.int64).tolist())
    new = set(np.asarray(ids, np.int64).tolist()) - own[group]
    cost = len(new) if price is None else int(price(group, np.array(sorted(new), np.int64)))
    if not overshoot and spent + cost > budget:
      continue
    own[group] |= new
    spent += cost
    taken.append(position)
    costs.append(cost)
  return taken, costs


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
