"""What has been labeled in the pool: the active-learning state between cycles.

Images labeled whole, and for images touched by chosen superpixels the
superpixels chosen and the instances the annotator labeled through them
(`annotators` turns these into training labels and costs). The state is small
(indices and instance ids) and JSON-able, so it is saved with each cycle and a
resumed run rebuilds exactly the same training labels.

In memory images are positions in the pool. A pool that may change between
runs (people's image folder) is saved keyed by image name instead
(`to_json(names)`, marked `"by": "name"`): read back against the pool of the
next run, names that left it are dropped and new names are unlabeled, so no
label is ever attributed to another image.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

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

  def to_json(self, names: Sequence[str] | None = None) -> dict[str, Any]:
    """The state as JSON; with `names` (the pool's image names, by position)
    keyed by image name."""
    key = str if names is None else (lambda i: str(names[int(i)]))
    out = {'full': list(self.full) if names is None else sorted(key(i) for i in self.full)}
    for field in ('annotated', 'chosen', 'paid'):
      items = [(key(k), list(v)) for k, v in sorted(getattr(self, field).items())]
      out[field] = dict(items if names is None else sorted(items))
    return out if names is None else {'by': 'name', **out}

  @classmethod
  def from_json(cls, raw: dict[str, Any], names: Sequence[str] | None = None) -> 'PoolLabels':
    """The state of `to_json`. A state keyed by name needs `names` (this pool's
    image names, by position); names not among them are left out."""
    if not by_name(raw):
      position = int
    elif names is None:
      raise ValueError('a pool keyed by image name needs the names of the pool')
    else:
      where = {str(n): i for i, n in enumerate(names)}
      position = where.get
    ids = lambda v: [int(x) for x in v]
    mapped = lambda field: {position(k): ids(v) for k, v in raw.get(field, {}).items()
                            if position(k) is not None}
    full = [p for p in map(position, raw['full']) if p is not None]
    return cls(full=sorted(full) if by_name(raw) else full,
               annotated=mapped('annotated'), chosen=mapped('chosen'), paid=mapped('paid'))


def by_name(raw: dict[str, Any]) -> bool:
  """Whether a saved pool state is keyed by image name (else by position)."""
  return raw.get('by') == 'name'


def labeled_names(raw: dict[str, Any]) -> list[str]:
  """The sorted names of every image with any label in a state keyed by name."""
  return sorted(set(raw['full']) | set(raw['annotated']) | set(raw['chosen']))
