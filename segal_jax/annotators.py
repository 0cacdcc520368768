"""Who labels what the selector chose, and what it costs: one small interface.

An `Annotator` turns a selection into labels in the pool's state and counts
the cost by its own rule; it also gives the training labels of labeled
images, as class ids ([H, W] uint8, `labels.IGNORE` = unlabeled) or as
partial-label masks ([H, W, C] bool, the classes a pixel may have), both of
which the train step accepts. A new annotation protocol, or people returning
labels, is a new entry of `ANNOTATORS`; `loop.run` takes the annotator as an
argument and does not change.

The simulated study protocol (`InstanceOverlap`,
DESIGN §1): whole images carry their full ground truth; an annotator shown a
superpixel labels, completely, every instance that overlaps it. Its cost rule
(`oracle.COST_RULES`, `--al_cost_rule`) says which ids a unit pays for: an
image every id it holds, a superpixel every id it newly touches; the labels do
not depend on the rule.

`People` (`--al_annotator=human`) is a team labelling an image folder between
runs: the folder's labels are the truth, a chosen unit is requested
(`label_requests`) and counts as labeled once its labels came back
(`label_returns`), and a unit costs one (the time it took is measured).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Protocol

import numpy as np

from segal_jax import oracle
from segal_jax import pool as pool_lib
from segal_jax.data import labels as labels_lib
from segal_jax.errors import UserError


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
                           picks: dict[int, list[int]]) -> int:
    """Labels what the chosen superpixels show (updates `pool`); returns the cost added."""

  def superpixel_ids(self, split, segments, image: int) -> dict[int, np.ndarray]:
    """Superpixel id -> 1-D int64 ids its annotation pays for in pool image `image`."""

  def addable_superpixels(self, pool: pool_lib.PoolLabels, split, segments, image: int,
                          num_segments: int) -> np.ndarray:
    """[num_segments] bool: superpixels of `image` whose annotation could add a label."""

  def labels(self, pool: pool_lib.PoolLabels, split, indices: np.ndarray) -> np.ndarray:
    """Training labels of pool images `indices`: [b, H, W] uint8 or [b, H, W, C] bool."""

  def labeled_counts(self, pool: pool_lib.PoolLabels, split, indices) -> tuple[int, int]:
    """(labeled pixels, annotated instances) of pool images `indices` now."""


@dataclasses.dataclass(frozen=True)
class InstanceOverlap:
  """The simulated annotator of the study: instances overlapping a superpixel.

  rule: the cost rule, a name of `oracle.COST_RULES` ('study': every id of
    the instance map, void included; 'instances': the instances labeled).
  """
  rule: str = 'study'

  def __post_init__(self):
    if self.rule not in oracle.COST_RULES:
      raise UserError(f'unknown cost rule {self.rule!r}',
                      f'choose from {", ".join(oracle.COST_RULES)}')

  def image_costs(self, split) -> np.ndarray:
    return np.array([oracle.image_costs(split.instances[i], split.labels[i])[self.rule]
                     for i in range(len(split.instances))], np.int64)

  def cost(self, pool: pool_lib.PoolLabels, image_costs: np.ndarray) -> int:
    full = set(pool.full)
    partial = sum(len(v) for i, v in pool.paid.items() if i not in full)
    return int(np.asarray(image_costs)[np.asarray(pool.full, np.int64)].sum()) + partial

  def annotate_images(self, pool: pool_lib.PoolLabels, split, indices) -> None:
    del split
    pool.full = sorted(set(pool.full) | {int(i) for i in indices})

  def annotate_superpixels(self, pool: pool_lib.PoolLabels, split, segments,
                           picks: dict[int, list[int]]) -> int:
    cost = 0
    for i, sps in sorted(picks.items()):
      label, instance = split.labels[i], split.instances[i]
      _, ids, _ = oracle.annotate_superpixels(label, instance, segments[i], sps,
                                              pool.annotated.get(i))
      pool.annotated[i] = ids.tolist()
      pool.chosen[i] = sorted(set(pool.chosen.get(i, [])) | {int(s) for s in sps})
      before = pool.paid.get(i, [])
      paid = np.union1d(before, oracle.touched_ids(instance, label, segments[i], sps,
                                                   self.rule)).astype(np.int64)
      cost += 0 if i in pool.full else len(paid) - len(before)
      pool.paid[i] = paid.tolist()
    return cost

  def superpixel_ids(self, split, segments, image: int) -> dict[int, np.ndarray]:
    return oracle.superpixel_ids(split.instances[image], split.labels[image], segments[image],
                                 self.rule)

  def addable_superpixels(self, pool: pool_lib.PoolLabels, split, segments, image: int,
                          num_segments: int) -> np.ndarray:
    return oracle.addable_superpixels(split.labels[image], split.instances[image],
                                      segments[image], pool.annotated.get(int(image), []),
                                      num_segments)

  def labels(self, pool: pool_lib.PoolLabels, split, indices: np.ndarray) -> np.ndarray:
    labels = np.asarray(split.labels[indices]).copy()
    full = set(pool.full)
    for row, i in enumerate(indices):
      if int(i) not in full:
        labels[row] = oracle.partial_label(labels[row], split.instances[int(i)],
                                           pool.annotated.get(int(i), []))
    return labels

  def labeled_counts(self, pool: pool_lib.PoolLabels, split, indices) -> tuple[int, int]:
    indices = np.asarray(indices, np.int64)
    # One image at a time: a cycle can touch thousands of full-size images.
    pixels = sum(int(np.count_nonzero(self.labels(pool, split, indices[k:k + 1])
                                      != labels_lib.IGNORE)) for k in range(len(indices)))
    full = set(pool.full)
    instances = sum(oracle.count_instances(split.instances[int(i)], split.labels[int(i)])
                    if int(i) in full else len(pool.annotated.get(int(i), []))
                    for i in indices)
    return pixels, int(instances)


@dataclasses.dataclass(frozen=True)
class People:
  """People labelling the folder between runs: training labels are the data's own
  (`split.labels`, 255 where nothing is labeled yet); `annotate_*` record what
  came back. A unit costs one: an image, or a superpixel of an image not labeled
  whole. `waits`: the loop ends a cycle by writing a request and stopping."""
  waits: ClassVar[bool] = True

  def image_costs(self, split) -> np.ndarray:
    return np.ones(len(split), np.int64)

  def cost(self, pool: pool_lib.PoolLabels, image_costs: np.ndarray) -> int:
    full = set(pool.full)
    return len(full) + sum(len(v) for i, v in pool.chosen.items() if i not in full)

  def annotate_images(self, pool: pool_lib.PoolLabels, split, indices) -> None:
    del split
    pool.full = sorted(set(pool.full) | {int(i) for i in indices})

  def annotate_superpixels(self, pool: pool_lib.PoolLabels, split, segments,
                           picks: dict[int, list[int]]) -> int:
    del split, segments
    for i, sps in picks.items():
      pool.chosen[int(i)] = sorted(set(pool.chosen.get(int(i), [])) | {int(s) for s in sps})
      pool.annotated.setdefault(int(i), [])  # labeled through regions
    return sum(len(v) for i, v in picks.items() if int(i) not in set(pool.full))

  def superpixel_ids(self, split, segments, image: int) -> dict[int, np.ndarray]:
    del split
    return {int(s): np.array([s], np.int64) for s in np.unique(segments[image])}

  def addable_superpixels(self, pool: pool_lib.PoolLabels, split, segments, image: int,
                          num_segments: int) -> np.ndarray:
    """Superpixels with an unlabeled pixel, not requested before."""
    segments = np.asarray(segments[image])
    out = np.zeros(num_segments, bool)
    out[np.unique(segments[np.asarray(split.labels[image]) == labels_lib.IGNORE])] = True
    out[np.asarray(pool.chosen.get(int(image), []), np.int64)] = False
    return out

  def labels(self, pool: pool_lib.PoolLabels, split, indices: np.ndarray) -> np.ndarray:
    del pool
    return np.asarray(split.labels[indices])

  def labeled_counts(self, pool: pool_lib.PoolLabels, split, indices) -> tuple[int, int]:
    pixels = sum(int(np.count_nonzero(self.labels(pool, split, np.asarray([i])) !=
                                      labels_lib.IGNORE)) for i in indices)
    return pixels, 0


ANNOTATORS: dict[str, Any] = {'instance_overlap': InstanceOverlap(), 'human': People()}
DEFAULT = 'instance_overlap'


def get(name: str = DEFAULT, *, rule: str | None = None) -> Annotator:
  """The registered annotator `name`, with cost rule `rule` when given."""
  if name not in ANNOTATORS:
    raise UserError(f'unknown annotator {name!r}',
                    f'choose from {", ".join(sorted(ANNOTATORS))}')
  annotator = ANNOTATORS[name]
  if rule is None or not hasattr(annotator, 'rule'):
    return annotator
  return dataclasses.replace(annotator, rule=rule)


def from_config(config) -> Annotator:
  """The annotator of an `ExperimentConfig` (`al_annotator`, its `al_cost_rule`)."""
  return get(config.al_annotator, rule=config.al_cost_rule)
