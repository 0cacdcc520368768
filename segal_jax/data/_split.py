"""The `Split` every data set loader returns."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from segal_jax.data import classes as classes_lib


@dataclasses.dataclass(frozen=True)
class Split:
  """One split of a data set.

  The arrays are NumPy arrays when the split fits in memory, otherwise
  read-only `_lazy.LazyArray` views that decode records on demand; both index
  the same way (`split.images[idx]` with an int, slice or index array).
  """
  name: str                         # dataset name
  ids: tuple[str, ...]
  images: Any                       # [N, H, W, 3] uint8
  labels: Any                       # [N, H, W] uint8 class indices, 255 = ignore
  instances: Any                    # [N, H, W] int32 instance ids (see `data` docs)
  mean: tuple[float, float, float]  # per-channel mean of images / 255 (for normalisation)
  std: tuple[float, float, float]
  classes: classes_lib.ClassTable = classes_lib.CITYSCAPES
  # [N] bool: which images have a label file (an unlabeled one is all ignore);
  # None = every image.
  labeled: Any = None
  # Names the build the arrays come from (an image folder's hash: it changes
  # with any file or the class table); what is cached from the arrays keys on it.
  build: str = ''

  def __post_init__(self):
    labeled = (np.ones(len(self.ids), bool) if self.labeled is None
               else np.asarray(self.labeled, bool))
    if labeled.shape != (len(self.ids),):
      raise ValueError(f'labeled has shape {labeled.shape} for {len(self.ids)} images')
    labeled.flags.writeable = False
    object.__setattr__(self, 'labeled', labeled)

  @property
  def num_classes(self) -> int:
    return self.classes.num_classes

  def __len__(self) -> int:
    return len(self.ids)
