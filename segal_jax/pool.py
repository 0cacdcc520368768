"""What the simulated annotator has labeled in the pool, and the labels it gives.

Images labeled whole carry their full ground truth. Images touched by chosen
superpixels carry the instances the annotator labeled (every instance that
overlaps a chosen superpixel, completely; DESIGN §1): the network trains on
those partial masks, 255 elsewhere. The state is small (indices and instance
ids) and JSON-able, so it is saved with each cycle and a resumed run rebuilds
exactly the same training labels.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from segal_jax import oracle


@dataclasses.dataclass
class PoolLabels:
  """Annotation state of a pool.

  full: indices of images labeled whole.
  annotated: image index -> sorted instance ids annotated through superpixels.
  chosen: image index -> superpixel ids chosen so far (never offered again).
  """
  full: list[int] = dataclasses.field(default_factory=list)
  annotated: dict[int, list[int]] = dataclasses.field(default_factory=dict)
  chosen: dict[int, list[int]] = dataclasses.field(default_factory=dict)

  def images(self) -> np.ndarray:
    """[n] sorted indices of every image with any label."""
    return np.array(sorted(set(self.full) | set(self.annotated)), np.int64)

  def cost(self, costs: np.ndarray) -> int:
    """Instances annotated so far; `costs` [N] holds each whole image's count."""
    partial = sum(len(v) for i, v in self.annotated.items() if i not in set(self.full))
    return int(np.asarray(costs)[np.asarray(self.full, np.int64)].sum()) + partial

  def num_superpixels(self) -> int:
    return sum(len(v) for v in self.chosen.values())

  def chosen_mask(self, indices: np.ndarray, num_segments: int) -> np.ndarray:
    """[len(indices), num_segments] bool, True for superpixels chosen before."""
    mask = np.zeros((len(indices), num_segments), bool)
    for row, i in enumerate(indices):
      mask[row, self.chosen.get(int(i), [])] = True
    return mask

  def add_images(self, indices) -> None:
    self.full = sorted(set(self.full) | {int(i) for i in indices})

  def add_superpixels(self, split, segments, picks: dict[int, list[int]]) -> int:
    """Annotates the chosen superpixels with the simulated annotator.

    Args:
      split: the pool (`labels`, `instances` indexable by image).
      segments: [N, H, W] superpixel ids of the pool.
      picks: image index -> superpixel ids chosen this cycle.

    Returns:
      The cost: instances annotated for the first time.
    """
    cost = 0
    for i, sps in sorted(picks.items()):
      _, ids, c = oracle.annotate_superpixels(split.labels[i], split.instances[i], segments[i],
                                              sps, self.annotated.get(i))
      self.annotated[i] = ids.tolist()
      self.chosen[i] = sorted(set(self.chosen.get(i, [])) | {int(s) for s in sps})
      cost += 0 if i in self.full else c
    return cost

  def label_batch(self, split, indices: np.ndarray) -> np.ndarray:
    """[b, H, W] uint8 training labels of pool images `indices`."""
    labels = np.asarray(split.labels[indices]).copy()
    full = set(self.full)
    for row, i in enumerate(indices):
      if int(i) not in full:
        labels[row] = oracle.partial_label(labels[row], split.instances[int(i)],
                                           self.annotated.get(int(i), []))
    return labels

  def to_json(self) -> dict[str, Any]:
    return {'full': list(self.full),
            'annotated': {str(k): v for k, v in sorted(self.annotated.items())},
            'chosen': {str(k): v for k, v in sorted(self.chosen.items())}}

  @classmethod
  def from_json(cls, raw: dict[str, Any]) -> 'PoolLabels':
    return cls(full=[int(i) for i in raw['full']],
               annotated={int(k): [int(x) for x in v] for k, v in raw['annotated'].items()},
               chosen={int(k): [int(x) for x in v] for k, v in raw['chosen'].items()})
