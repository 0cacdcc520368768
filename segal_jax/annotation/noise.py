"""Annotator noise: wrong classes and timid outlines, seeded and stateless.

`Noise.flip`: each label decision of the annotator (an instance's class, a
superpixel's class, a point's class, one class of a multi-class answer) is
replaced, with this probability, by a class drawn uniformly from the others.
`Noise.erode`: the annotator keeps `erode` pixels away from every boundary of
the ground truth: a pixel whose (2 erode + 1)^2 neighbourhood holds more than
one ground-truth value (void included; the image edge is not a boundary) gets
no label.

Every draw is a function of (seed, image, unit) alone, through NumPy's
`SeedSequence` on those integers: the same unit of the same image always
gets the same answer, whatever else was labeled and in whatever order, so
labels rebuilt from the pool's state after a resume are the same labels.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage


@dataclasses.dataclass(frozen=True)
class Noise:
  """flip: probability of a wrong class per label decision; erode: pixels
  left unlabeled on each side of ground-truth boundaries; seed: the run's seed."""
  flip: float = 0.0
  erode: int = 0
  seed: int = 0

  def __post_init__(self):
    if not 0.0 <= self.flip <= 1.0 or self.erode < 0:
      raise ValueError(f'flip {self.flip} must be in [0, 1] and erode {self.erode} >= 0')

  @property
  def active(self) -> bool:
    return self.flip > 0 or self.erode > 0


def _uniforms(seed: int, image: int, units: np.ndarray) -> np.ndarray:
  """[n, 2] float64 uniforms, row k a function of (seed, image, units[k]) only."""
  return np.array([np.random.default_rng([int(seed), int(image), int(u)]).random(2)
                   for u in np.asarray(units, np.int64).ravel()]).reshape(-1, 2)


def flipped_classes(noise: Noise, image: int, units: np.ndarray, classes: np.ndarray,
                    num_classes: int) -> np.ndarray:
  """The classes the annotator gives: `classes`, each flipped with probability `noise.flip`.

  Args:
    image: the pool index of the image.
    units: [n] int >= 0 ids of the label decisions in this image (instance
      ids, superpixel ids, ...), the key of each decision's draw.
    classes: [n] int true classes (< num_classes).

  Returns:
    [n] int64: the true class, or with probability `flip` one of the other
    `num_classes - 1` classes, uniformly.
  """
  classes = np.asarray(classes, np.int64).ravel()
  if noise.flip <= 0 or not classes.size or num_classes < 2:
    return classes
  u = _uniforms(noise.seed, image, units)
  other = (classes + 1 + np.floor(u[:, 1] * (num_classes - 1)).astype(np.int64)) % num_classes
  return np.where(u[:, 0] < noise.flip, other, classes)


def kept_pixels(noise: Noise, truth: np.ndarray) -> np.ndarray:
  """[H, W] bool: the pixels the annotator labels at all (False within
  `noise.erode` pixels, in the max norm, of a ground-truth boundary).

  Args:
    truth: [H, W] int ground-truth train ids (void included as a value).
  """
  truth = np.asarray(truth)
  if noise.erode <= 0:
    return np.ones(truth.shape, bool)
  size = 2 * noise.erode + 1
  return (ndimage.maximum_filter(truth, size=size, mode='nearest')
          == ndimage.minimum_filter(truth, size=size, mode='nearest'))


def noisy_label(noise: Noise, label: np.ndarray, truth: np.ndarray, units: np.ndarray,
                image: int, num_classes: int) -> np.ndarray:
  """Applies `noise` to one image's labels whose decisions are regions of `units`.

  Args:
    label: [H, W] uint8 the annotator's exact labels (`labels.IGNORE` = none).
    truth: [H, W] uint8 the ground truth (for the erosion).
    units: [H, W] int >= 0 the decision each pixel's label came from (an
      instance id, a superpixel id); a region of one unit carries one class.
    image: the pool index of the image.

  Returns:
    [H, W] uint8: each unit's class flipped (`flipped_classes`), then eroded
    (`kept_pixels`); `label` itself when `noise` is off.
  """
  if not noise.active:
    return label
  label = np.array(label, np.uint8)
  ignore = np.iinfo(np.uint8).max
  if noise.flip > 0:
    labeled = label != ignore
    present, first = np.unique(np.asarray(units)[labeled], return_index=True)
    classes = label[labeled][first]
    given = flipped_classes(noise, image, present, classes, num_classes)
    label[labeled] = given[np.searchsorted(present, np.asarray(units)[labeled])]
  label[~kept_pixels(noise, truth)] = ignore
  return label
