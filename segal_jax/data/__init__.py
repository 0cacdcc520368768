"""Data sets: a registry of loaders that return whole splits held in memory.

    split = data.load('synthetic_city', 'train', config='small')
    split.images  # [N, H, W, 3] uint8

Each loader builds its TFDS dataset on first use (`download_and_prepare`) and
reads the split into NumPy arrays. Labels are Cityscapes train ids (255 =
ignore), instances Cityscapes instance ids (`label_id * 1000 + k` for things,
the label id for stuff).
"""

from collections.abc import Callable
import dataclasses

import numpy as np
import tqdm

from segal_jax import errors
from segal_jax.data import labels
from segal_jax.data import synthetic_city

_SPLITS = {'train': 'train', 'val': 'validation', 'validation': 'validation'}
_READ_CHUNK = 256  # records decoded per call


@dataclasses.dataclass(frozen=True)
class Split:
  """One split held in memory."""
  name: str                         # dataset name
  ids: tuple[str, ...]
  images: np.ndarray                # [N, H, W, 3] uint8
  labels: np.ndarray                # [N, H, W] uint8 train ids, 255 = ignore
  instances: np.ndarray             # [N, H, W] int32 Cityscapes instance ids
  mean: tuple[float, float, float]  # per-channel mean of images / 255 (for normalisation)
  std: tuple[float, float, float]
  num_classes: int = labels.NUM_CLASSES

  def __len__(self) -> int:
    return len(self.ids)


def read_tfds(builder, split: str, *, name: str, mean, std, progress: bool = True) -> Split:
  """Prepares a TFDS builder if needed and reads one split into memory.

  Args:
    builder: a `tfds.core.DatasetBuilder` whose examples hold `image_id`,
      `image`, `label` and `instance`.
    split: a split name of the builder ('train', 'validation').
    name: the dataset name recorded in the Split.
    mean, std: the dataset's per-channel statistics of images / 255.
    progress: show a progress bar while reading.

  Returns:
    The split, ordered by image id.
  """
  builder.download_and_prepare()
  source = builder.as_data_source()[split]
  n = len(source)
  images, label_maps, instances, ids = [], [], [], []
  with tqdm.tqdm(total=n, desc=f'Reading {name}/{split}', unit='img',
                 disable=not progress or n <= _READ_CHUNK, leave=False) as bar:
    for start in range(0, n, _READ_CHUNK):
      for ex in source.__getitems__(range(start, min(start + _READ_CHUNK, n))):
        ids.append(ex['image_id'].decode() if isinstance(ex['image_id'], bytes)
                   else str(ex['image_id']))
        images.append(ex['image'])
        label_maps.append(ex['label'])
        instances.append(ex['instance'])
      bar.update(min(_READ_CHUNK, n - start))
  order = sorted(range(n), key=ids.__getitem__)
  take = lambda arrays: np.stack([arrays[i] for i in order])
  return Split(name=name, ids=tuple(ids[i] for i in order), images=take(images),
               labels=take(label_maps), instances=take(instances),
               mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))


def _load_synthetic_city(split: str, *, data_dir: str | None, config: str | None) -> Split:
  names = [c.name for c in synthetic_city.SyntheticCity.BUILDER_CONFIGS]
  config = config or synthetic_city.SyntheticCity.DEFAULT_CONFIG_NAME
  if config not in names:
    raise errors.UserError(f'synthetic_city has no config {config!r}',
                           f'choose one of {", ".join(names)}')
  builder = synthetic_city.SyntheticCity(config=config, data_dir=data_dir)
  return read_tfds(builder, split, name='synthetic_city',
                   mean=synthetic_city.MEAN, std=synthetic_city.STD)


# name -> loader(split, *, data_dir, config); split is 'train' or 'validation'.
DATASETS: dict[str, Callable[..., Split]] = {
    'synthetic_city': _load_synthetic_city,
}


def load(name: str, split: str, *, data_dir: str | None = None,
         config: str | None = None) -> Split:
  """Builds the dataset (download_and_prepare) if needed, then reads the split.

  Args:
    name: a key of `DATASETS`.
    split: 'train', or 'val' / 'validation'.
    data_dir: where TFDS keeps prepared data; None for TFDS's default.
    config: the dataset's builder config; None for its default.

  Returns:
    The whole split in memory.
  """
  if name not in DATASETS:
    raise errors.UserError(f'Unknown dataset {name!r}',
                           f'choose one of {", ".join(sorted(DATASETS))}')
  if split not in _SPLITS:
    raise errors.UserError(f'Unknown split {split!r}',
                           f'choose one of {", ".join(_SPLITS)}')
  return DATASETS[name](_SPLITS[split], data_dir=data_dir, config=config)
