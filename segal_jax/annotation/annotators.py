"""Who labels what the selector chose, and what it costs: one small interface.

An `Annotator` turns a selection into labels in the pool's state and counts
the cost by its own rule; it also gives the training labels of labeled
images, as class ids ([H, W] uint8, `labels.IGNORE` = unlabeled) or as
partial-label masks ([H, W, C] bool, the classes a pixel may have), both of
which the train step accepts. A new annotation protocol, or people returning
labels, is a new entry of `ANNOTATORS`; `loop.run` takes the annotator as an
argument and does not change.

The simulated protocols (`--al_protocol`; docs/protocols.md):

* `instance_overlap` (`InstanceOverlap`, the study's, DESIGN §1): whole images
  carry their full ground truth; an annotator shown a superpixel labels,
  completely, every instance that overlaps it. Its cost rule
  (`oracle.COST_RULES`, `--al_cost_rule`) says which ids a unit pays for: an
  image every id it holds, a superpixel every id it newly touches; the labels
  do not depend on the rule ('clicks' prices each id in polygon clicks).
* `image_polygons`: the same annotator on whole images, charged in polygon clicks.
* `dominant_label`, `multi_class`, `points`: region protocols (`protocols`).
* `whole_touched` (`WholeTouched`): superpixels ranked, each image they touch
  labeled whole under the same cost rule (a control, not a protocol to use).

Every annotator also counts its clicks (`clicks`, the cost model of
`segal_jax.annotation.clicks`) whatever its budget unit, estimates a unit's clicks from a
predicted segmentation (`expected_clicks`), and applies `noise.Noise` (seeded
by the run, `Annotator.bind`).

`People` (`--al_annotator=human` or `label_studio`) is a team labelling an image folder between
runs: the folder's labels are the truth, a chosen unit is requested
(`label_requests`) and counts as labeled once its labels came back
(`label_returns`), and a unit costs one (the time it took is measured).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Protocol

import numpy as np

from segal_jax.annotation import clicks as clicks_lib
from segal_jax.annotation import noise as noise_lib
from segal_jax.annotation import oracle
from segal_jax.annotation import regions as protocols
from segal_jax.data import labels as labels_lib
from segal_jax.errors import UserError
from segal_jax.state import pool as pool_lib


class Annotator(Protocol):
  """The interface `loop`, `selection` and `cycle_models` use (split: a pool
  with `labels`, `instances`; segments: [N, H, W] superpixel ids or None).
  Every member a caller reads is declared here."""

  noise: noise_lib.Noise  # the annotator's errors (`noise.Noise()`: none)
  mask: bool  # training labels are partial-label masks ([b, H, W, C] bool), not class ids
  waits: bool  # people label between runs: a cycle ends by writing a request and stopping

  def bind(self, *, seed: int, segments: np.ndarray | None) -> Annotator:
    """The annotator of one run: its noise seeded by the run's `seed`, and for
    region protocols the pool's superpixels ([N, H, W]) its labels come from."""

  def image_costs(self, split) -> np.ndarray:
    """[N] int64 cost of annotating each whole image of the pool."""

  cost_rule: str  # the key of `oracle.image_costs` its `image_costs` are in

  def cost(self, pool: pool_lib.PoolLabels, image_costs: np.ndarray, split=None) -> int:
    """The total cost of everything annotated in `pool` so far, in the budget's unit."""

  def clicks(self, pool: pool_lib.PoolLabels, split, cache: dict | None = None) -> int:
    """The clicks of everything annotated in `pool` so far (`cache`: image -> clicks
    of whole images, filled as they are counted)."""

  def prices(self, split, image: int) -> dict[int, int] | None:
    """Id -> cost of the ids `superpixel_ids` gives for `image` (None: 1 each)."""

  min_price: int  # the least an id costs (`oracle.fill_budget`'s floor)

  def expected_clicks(self, prediction: np.ndarray, segments: np.ndarray | None,
                      num_segments: int = 0):
    """Clicks a unit would cost if `prediction` ([H, W] classes) were the truth:
    a float for the whole image (segments None), else [num_segments] per superpixel."""

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
    the instance map, void included; 'instances': the instances labeled;
    'clicks': the polygon clicks of the instances labeled).
  noise: the annotator's errors (`noise.Noise`).
  """
  rule: str = 'study'
  noise: noise_lib.Noise = noise_lib.Noise()
  mask: ClassVar[bool] = False
  waits: ClassVar[bool] = False

  def __post_init__(self):
    if self.rule not in oracle.COST_RULES:
      raise UserError(f'unknown cost rule {self.rule!r}',
                      f'choose from {", ".join(oracle.COST_RULES)}')

  @property
  def cost_rule(self) -> str:
    return self.rule

  def bind(self, *, seed: int, segments: np.ndarray | None) -> InstanceOverlap:
    del segments  # labels come from the instance map
    return dataclasses.replace(self, noise=dataclasses.replace(self.noise, seed=int(seed)))

  @property
  def min_price(self) -> int:
    return clicks_lib.MIN_VERTICES if self.rule == 'clicks' else 1

  def image_costs(self, split) -> np.ndarray:
    return np.array([oracle.image_costs(split.instances[i], split.labels[i])[self.rule]
                     for i in range(len(split.instances))], np.int64)

  def cost(self, pool: pool_lib.PoolLabels, image_costs: np.ndarray, split=None) -> int:
    full = set(pool.full)
    partial = sum(oracle.priced(self.prices(split, i), v) for i, v in pool.paid.items()
                  if i not in full)
    return int(np.asarray(image_costs)[np.asarray(pool.full, np.int64)].sum()) + partial

  def clicks(self, pool: pool_lib.PoolLabels, split, cache=None) -> int:
    full = set(pool.full)
    return int(sum(protocols.image_clicks(split, i, cache) for i in full)
                + sum(oracle.priced(oracle.id_clicks(split.instances[i], split.labels[i]), v)
                      for i, v in pool.annotated.items() if i not in full))

  def prices(self, split, image: int) -> dict[int, int] | None:
    if self.rule != 'clicks':
      return None
    return oracle.id_clicks(split.instances[image], split.labels[image])

  def expected_clicks(self, prediction, segments, num_segments=0):
    if segments is None:
      return clicks_lib.expected_image_clicks(prediction)
    return clicks_lib.expected_overlap_clicks(prediction, segments, num_segments)

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
      new = np.setdiff1d(paid, before)
      cost += 0 if i in pool.full else oracle.priced(self.prices(split, i), new)
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
      truth = labels[row].copy()
      if int(i) not in full:
        labels[row] = oracle.partial_label(labels[row], split.instances[int(i)],
                                           pool.annotated.get(int(i), []))
      labels[row] = noise_lib.noisy_label(
          self.noise, labels[row], truth, oracle.instance_ids(split.instances[int(i)], truth),
          int(i), protocols.num_classes(split))
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
class WholeTouched(InstanceOverlap):
  """Superpixels ranked as usual, each image they lie in labeled whole.

  The control that separates partial masks from what they are worth
  (docs/results/superpixels.md): a chosen superpixel costs every id of its
  image not paid yet (the first superpixel of an image the whole image's
  cost, any further one nothing), so `oracle.fill_budget` buys images in the
  order of their best-ranked superpixel until their whole-image cost reaches
  the budget, and the network trains on whole labels of the images a
  superpixel ranking touched first. Whole images cost as under `InstanceOverlap`.
  """

  def _image_ids(self, split, image: int) -> np.ndarray:
    ids = oracle.cost_ids(split.instances[image], split.labels[image], self.rule)
    return np.unique(ids[ids >= 0]).astype(np.int64)

  def superpixel_ids(self, split, segments, image: int) -> dict[int, np.ndarray]:
    every = self._image_ids(split, image)
    return {int(sp): every for sp in np.unique(np.asarray(segments[image]))}

  def annotate_superpixels(self, pool: pool_lib.PoolLabels, split, segments,
                           picks: dict[int, list[int]]) -> int:
    del segments
    new = sorted({int(i) for i in picks} - set(pool.full))
    for i, sps in picks.items():
      pool.chosen[int(i)] = sorted(set(pool.chosen.get(int(i), [])) | {int(s) for s in sps})
    self.annotate_images(pool, split, new)
    return sum(oracle.priced(self.prices(split, i), self._image_ids(split, i)) for i in new)


@dataclasses.dataclass(frozen=True)
class People:
  """People labelling the folder between runs: training labels are the data's own
  (`split.labels`, 255 where nothing is labeled yet); `annotate_*` record what
  came back. A unit costs one: an image, or a superpixel of an image not labeled
  whole. `waits`: the loop ends a cycle by writing a request and stopping.
  Clicks are not counted (0) and their errors are not simulated."""
  waits: ClassVar[bool] = True
  mask: ClassVar[bool] = False
  cost_rule: ClassVar[str] = 'units'
  min_price: ClassVar[int] = 1
  noise: ClassVar[noise_lib.Noise] = noise_lib.Noise()

  def bind(self, *, seed: int, segments: np.ndarray | None) -> People:
    del seed, segments  # the folder's own labels, without simulated errors
    return self

  def image_costs(self, split) -> np.ndarray:
    return np.ones(len(split), np.int64)

  def cost(self, pool: pool_lib.PoolLabels, image_costs: np.ndarray, split=None) -> int:
    full = set(pool.full)
    return len(full) + sum(len(v) for i, v in pool.chosen.items() if i not in full)

  def clicks(self, pool: pool_lib.PoolLabels, split, cache=None) -> int:
    del pool, split, cache
    return 0

  def prices(self, split, image: int) -> None:
    del split, image
    return None

  def expected_clicks(self, prediction, segments, num_segments=0):
    del prediction
    return 1.0 if segments is None else np.ones(num_segments, np.float64)

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


HUMAN = 'human'
PEOPLE = (HUMAN, 'label_studio')  # --al_annotator values where people label (`human`)
ANNOTATORS: dict[str, Any] = {
    'instance_overlap': InstanceOverlap(),
    # Whole images drawn with polygons, charged in clicks (image unit only).
    'image_polygons': InstanceOverlap(rule='clicks'),
    'dominant_label': protocols.DominantLabel(),
    'multi_class': protocols.MultiClass(),
    'points': protocols.Points(),
    # Superpixels ranked, the images they touch labeled whole (docs/results/superpixels.md).
    'whole_touched': WholeTouched(),
    HUMAN: People(),  # --al_annotator=human, not a protocol
}
DEFAULT = 'instance_overlap'
# Protocols that label what superpixels show / only whole images.
IMAGE_ONLY = ('image_polygons',)
SUPERPIXEL_ONLY = ('dominant_label', 'multi_class', 'points', 'whole_touched')


def get(name: str = DEFAULT, *, rule: str | None = None,
        noise: noise_lib.Noise | None = None) -> Annotator:
  """The registered annotator `name`, with cost rule `rule` (instance_overlap
  and whole_touched; the others charge clicks) and `noise` when given."""
  if name not in ANNOTATORS:
    raise UserError(f'unknown annotator {name!r}',
                    f'choose from {", ".join(sorted(ANNOTATORS))}')
  annotator = ANNOTATORS[name]
  if rule is not None and isinstance(annotator, InstanceOverlap) and name not in IMAGE_ONLY:
    annotator = dataclasses.replace(annotator, rule=rule)
  if rule is not None and rule not in oracle.COST_RULES:  # every protocol refuses a typo
    raise UserError(f'unknown cost rule {rule!r}', f'choose from {", ".join(oracle.COST_RULES)}')
  return annotator if noise is None else dataclasses.replace(annotator, noise=noise)


def check_config(config) -> None:
  """The checks of an `ExperimentConfig` that concern the protocol.

  Raises:
    UserError: an unknown protocol, or a unit it cannot label.
  """
  if config.al_protocol == HUMAN:
    raise UserError('--al_protocol=human is not a simulated protocol',
                    'pass --al_annotator=human for people labelling')
  get(config.al_protocol)
  if config.al_protocol in IMAGE_ONLY and config.al_unit != 'image':
    raise UserError(f'--al_protocol={config.al_protocol} labels whole images',
                    'set --al_unit=image, or choose a superpixel protocol')
  if config.al_protocol in SUPERPIXEL_ONLY and config.al_unit != 'superpixel':
    raise UserError(f'--al_protocol={config.al_protocol} labels superpixels',
                    'set --al_unit=superpixel, or --al_protocol=image_polygons for images')


def from_config(config) -> Annotator:
  """The annotator of an `ExperimentConfig`: people for `al_annotator` in `PEOPLE`,
  else the simulated one of `al_protocol`, `al_cost_rule`, `noise_*`."""
  if getattr(config, 'al_annotator', 'simulated') in PEOPLE:
    return ANNOTATORS[HUMAN]
  return get(config.al_protocol, rule=config.al_cost_rule,
             noise=noise_lib.Noise(config.noise_flip, config.noise_erode))


def label_error(annotator: Annotator, pool: pool_lib.PoolLabels, split, indices) -> float:
  """Fraction of the labeled pixels (with a ground truth) whose label is wrong:
  a class other than the truth, or a partial-label mask without it; 0 when
  nothing is labeled."""
  wrong = labeled = 0
  for i in np.asarray(indices, np.int64).tolist():
    given, truth = annotator.labels(pool, split, np.array([i]))[0], np.asarray(split.labels[i])
    valid = truth != labels_lib.IGNORE
    has = labels_lib.has_label(given) & valid
    if given.ndim == 3:
      ok = np.take_along_axis(given, np.where(valid, truth, 0)[..., None].astype(np.int64),
                              -1)[..., 0]
    else:
      ok = given == truth
    labeled += int(has.sum())
    wrong += int((has & ~ok).sum())
  return wrong / labeled if labeled else 0.0
