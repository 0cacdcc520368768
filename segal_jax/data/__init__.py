"""Data sets: a registry of loaders that each return one `Split`.

    split = data.load('synthetic_city', 'train', config='small')
    split.images  # [N, H, W, 3] uint8

Each loader builds its TFDS data set on first use (array_record files, no
TensorFlow) and returns the split in memory, or as lazy views when it is too
big. Labels are class indices of the split's class table (`Split.classes`;
Cityscapes' train ids for the built-in data sets), 255 = ignore; instances are
Cityscapes instance ids (`label_id * 1000 + k` for things, the label id for
stuff), or for another table `(class_index + 1) * 1000 + k` and `class_index + 1`
(`image_folder.derive_instances`).

`name` is a key of `DATASETS`, or `image_folder:PATH` for a folder of your own.
"""

from collections.abc import Callable

from segal_jax.data._scenes import render_scene
from segal_jax.data._split import Split
from segal_jax.data import cityscapes
from segal_jax.data import image_folder
from segal_jax.data import synthetic_city
from segal_jax import errors

_SPLITS = {'train': 'train', 'val': 'validation', 'validation': 'validation', 'test': 'test'}
IMAGE_FOLDER_PREFIX = 'image_folder:'

# name -> loader(split, *, data_dir, config); split is 'train', 'validation' or 'test'.
DATASETS: dict[str, Callable[..., Split]] = {
    'synthetic_city': synthetic_city.load_split,
    'cityscapes': cityscapes.load_split,
}


def load(name: str, split: str, *, data_dir: str | None = None,
         config: str | None = None, **folder_options) -> Split:
  """Builds the data set if needed, then returns one split.

  Args:
    name: a key of `DATASETS`, or `image_folder:PATH`.
    split: 'train', 'val' / 'validation', or 'test' where the data set has one.
    data_dir: where TFDS keeps prepared data; None for TFDS's default.
    config: the data set's builder config (or image_folder options); None for
      its default.
    **folder_options: image_folder options beside `config` (e.g. `classes=FILE`,
      `allow_unlabeled=True`); only for `image_folder:PATH`.
  """
  if split not in _SPLITS:
    raise errors.UserError(f'Unknown split {split!r}', f'choose one of {", ".join(_SPLITS)}')
  if name.startswith(IMAGE_FOLDER_PREFIX):
    return image_folder.load_split(_SPLITS[split], path=name[len(IMAGE_FOLDER_PREFIX):],
                                   data_dir=data_dir, config=config, **folder_options)
  if folder_options:
    raise errors.UserError(f'options {", ".join(folder_options)} are for image folders',
                           f'drop them for {name}')
  if name not in DATASETS:
    raise errors.UserError(f'Unknown dataset {name!r}',
                           f'choose one of {", ".join(sorted(DATASETS))} or image_folder:PATH')
  return DATASETS[name](_SPLITS[split], data_dir=data_dir, config=config)


def with_folder_options(name: str, config: str | None, **options) -> str:
  """An image folder's `--dataset_config` with `options` added (e.g. `classes=FILE`
  from `--classes`); a UserError for another data set."""
  if not name.startswith(IMAGE_FOLDER_PREFIX):
    raise errors.UserError(f'--{", --".join(options)} is for image folders, not {name}',
                           'drop it, or use --dataset=image_folder:PATH')
  return image_folder.format_options({**image_folder.parse_options(config), **options})
