"""What has been labeled in the pool: the active-learning state between cycles.

Images labeled whole, and for images touched by chosen superpixels the
superpixels chosen and the instances the annotator labeled through them
(`annotators` turns these into training labels and costs). The state is small
(indices and instance ids) and JSON-able, so it is saved with each cycle and a
resumed run rebuilds exactly the same training labels.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass
class PoolLabels:
  """Annotation state of a pool.

  full: indices of images labeled whole.
  annotated: image index -> sorted instance ids annotated through superpixels.
  chosen: image index -> superpixel ids chosen so far.
  paid: image index -> sorted ids paid for through superpixels under the
    annotator's cost rule (`oracle.COST_RULES`); the same as `annotated` for
    'instances'.
  """
  full: list[int] = dataclasses.field(default_factory=list)
  annotated: dict[int, list[int]] = dataclasses.field(default_factory=dict)
  chosen: dict[int, list[int]] = dataclasses.field(default_factory=dict)
  paid: dict[int, list[int]] = dataclasses.field(default_factory=dict)

  def images(self) -> np.ndarray:
    """[n] sorted indices of every image with any label (whole, through instances,
    or through chosen superpixels)."""
    return np.array(sorted(set(self.full) | set(self.annotated) | set(self.chosen)), np.int64)

  def num_superpixels(self) -> int:
    return sum(len(v) for v in self.chosen.values())

  def to_json(self) -> dict[str, Any]:
    return {'full': list(self.full),
            'annotated': {str(k): v for k, v in sorted(self.annotated.items())},
            'chosen': {str(k): v for k, v in sorted(self.chosen.items())},
            'paid': {str(k): v for k, v in sorted(self.paid.items())}}

  @classmethod
  def from_json(cls, raw: dict[str, Any]) -> 'PoolLabels':
    return cls(full=[int(i) for i in raw['full']],
               annotated={int(k): [int(x) for x in v] for k, v in raw['annotated'].items()},
               chosen={int(k): [int(x) for x in v] for k, v in raw['chosen'].items()},
               paid={int(k): [int(x) for x in v] for k, v in raw.get('paid', {}).items()})
