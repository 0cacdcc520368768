"""The `Split` every data set loader returns."""

from __future__ import annotations

import dataclasses
from typing import Any

from segal_jax.data import classes as classes_lib
from segal_jax.data import labels


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
  labels: Any                       # [N, H, W] uint8 train ids, 255 = ignore
  instances: Any                    # [N, H, W] int32 Cityscapes instance ids
  mean: tuple[float, float, float]  # per-channel mean of images / 255 (for normalisation)
  std: tuple[float, float, float]
  num_classes: int = labels.NUM_CLASSES
  classes: classes_lib.ClassTable = classes_lib.CITYSCAPES  # its num_classes == num_classes

  def __len__(self) -> int:
    return len(self.ids)
