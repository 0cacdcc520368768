"""Cityscapes with instance maps, as a tfds builder that needs no TensorFlow.

The stock tfds `cityscapes` builder yields no instance maps (which the superpixel oracle
counts) and decodes images with TensorFlow. This builder reads the two official zips from
the manual directory, unextracted:

  <manual_dir>/leftImg8bit_trainvaltest.zip   leftImg8bit/{split}/{city}/{id}_leftImg8bit.png
  <manual_dir>/gtFine_trainvaltest.zip        gtFine/{split}/{city}/{id}_gtFine_labelIds.png
                                              gtFine/{split}/{city}/{id}_gtFine_instanceIds.png

(`manual_dir` defaults to `<data_dir>/downloads/manual`) and writes array_record files
of zlib-compressed tensors, one record per image, in image-id order:

  image_id  str, `{city}_{seq:06d}_{frame:06d}`, unique across splits
  image     [H, W, 3] uint8
  label     [H, W] uint8 train ids 0..18, 255 = ignore (label ids mapped with
            `labels.ID_TO_TRAIN_ID`)
  instance  [H, W] int32 Cityscapes instance ids, unchanged (resampled only)
  city      str

Splits `train` (2975 images), `validation` (500) and `test` (1525; its public ground
truth is void). Configs: `full` (1024 x 2048), `half` (512 x 1024) and `quarter`
(256 x 512); downsampling averages image pixels over each output pixel's area and takes
the nearest source pixel for labels and instances.
"""

from __future__ import annotations

import dataclasses
import io
import os
import zipfile
from collections.abc import Iterator

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds
from etils import epath

from segal_jax.data import _lazy
from segal_jax.data import labels
from segal_jax import errors

IMAGES_ZIP = 'leftImg8bit_trainvaltest.zip'
LABELS_ZIP = 'gtFine_trainvaltest.zip'
DOWNLOAD_URL = 'https://www.cityscapes-dataset.com/downloads/'
# Per-channel statistics of the Cityscapes training images (scaled to 0..1).
MEAN = (0.2901, 0.3281, 0.2870)
STD = (0.1830, 0.1866, 0.1845)
DEFAULT_CONFIG = 'full'
# tfds split name -> folder name inside the zips.
_FOLDERS = {'train': 'train', 'validation': 'val', 'test': 'test'}
_SPLIT_ALIASES = {'val': 'validation'}


def read_png(data: bytes, mode: str | None = None) -> np.ndarray:
  """Decodes an image file; `mode='RGB'` converts to [H, W, 3] uint8.

  16-bit PNGs (Cityscapes instance maps) come back as uint16 or int32 [H, W].
  """
  with PIL.Image.open(io.BytesIO(data)) as im:
    return np.asarray(im.convert(mode) if mode and im.mode != mode else im)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Area-averaging (box filter) resize, meant for downsampling.

  Args:
    image: [H, W, 3] uint8.
    size: (h, w) output size.

  Returns:
    [h, w, 3] uint8; `image` itself when the size already matches.
  """
  (big_h, big_w), (h, w) = image.shape[:2], size
  if (big_h, big_w) == (h, w):
    return image
  if big_h % h == 0 and big_w % w == 0 and big_h // h == big_w // w:
    # Exact mean of each factor x factor block, rounded half up.
    return np.asarray(PIL.Image.fromarray(image).reduce(big_h // h))
  return np.asarray(PIL.Image.fromarray(image).resize((w, h), PIL.Image.Resampling.BOX))


@dataclasses.dataclass(eq=False)
class CityscapesConfig(tfds.core.BuilderConfig):
  """A resolution: images are stored at (H // factor, W // factor)."""
  factor: int = 1


class Cityscapes(_lazy.ArrayRecordBuilder, skip_registration=True):
  """Cityscapes fine annotations with train-id labels and instance maps."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Images, train-id labels, instance ids and city.'}
  BUILDER_CONFIGS = [
      CityscapesConfig(name='full', factor=1, description='1024 x 2048'),
      CityscapesConfig(name='half', factor=2, description='512 x 1024'),
      CityscapesConfig(name='quarter', factor=4, description='256 x 512'),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = DEFAULT_CONFIG
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Register at {DOWNLOAD_URL}, download {IMAGES_ZIP} and {LABELS_ZIP} and put both '
      'files, unextracted, in the manual directory (default <data_dir>/downloads/manual).')

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=_lazy.record_features(city=tfds.features.Text()),
        homepage=DOWNLOAD_URL,
        disable_shuffling=True,  # records in image-id order
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    # tfds's public `manual_dir` asserts with its own message when the directory is
    # missing or empty; we want the exact file paths in a UserError instead.
    manual_dir = epath.Path(dl_manager._manual_dir)  # pylint: disable=protected-access
    image_zip, label_zip = check_manual_dir(manual_dir)
    return {split: self._generate_examples(image_zip, label_zip, folder)
            for split, folder in _FOLDERS.items()}

  def _generate_examples(self, image_zip: epath.Path, label_zip: epath.Path,
                         folder: str) -> Iterator[tuple[int, dict]]:
    factor = self.builder_config.factor
    with image_zip.open('rb') as fi, label_zip.open('rb') as fl, \
        zipfile.ZipFile(fi) as images, zipfile.ZipFile(fl) as gt:
      gt_names = set(gt.namelist())
      prefix, suffix = f'leftImg8bit/{folder}/', '_leftImg8bit.png'
      members = sorted(n for n in images.namelist()
                       if n.startswith(prefix) and n.endswith(suffix))
      for key, member in enumerate(members):
        city, stem = member[len(prefix):-len(suffix)].split('/')
        gt_stem = f'gtFine/{folder}/{city}/{stem}_gtFine_'
        for kind in ('labelIds', 'instanceIds'):
          if f'{gt_stem}{kind}.png' not in gt_names:
            raise errors.UserError(
                f'{label_zip} has no {gt_stem}{kind}.png for {member} in {image_zip}',
                f'download {LABELS_ZIP} again from {DOWNLOAD_URL}')
        image = read_png(images.read(member), 'RGB')
        label_ids = read_png(gt.read(f'{gt_stem}labelIds.png'))
        instance = read_png(gt.read(f'{gt_stem}instanceIds.png')).astype(np.int32)
        size = (image.shape[0] // factor, image.shape[1] // factor)
        yield key, {
            'image_id': stem,
            'image': resize_image(image, size),
            'label': labels.resize_nearest(labels.ID_TO_TRAIN_ID[label_ids], size),
            'instance': labels.resize_nearest(instance, size),
            'city': city,
        }


def check_manual_dir(manual_dir: str | os.PathLike) -> tuple[epath.Path, epath.Path]:
  """Paths of the two zips in `manual_dir`; UserError naming any that is missing."""
  manual_dir = epath.Path(manual_dir).expanduser()
  paths = (manual_dir / IMAGES_ZIP, manual_dir / LABELS_ZIP)
  missing = [str(p) for p in paths if not p.exists()]
  if missing:
    raise errors.UserError(
        f'Cityscapes not found: no {" and no ".join(missing)}',
        f'register at {DOWNLOAD_URL}, download {IMAGES_ZIP} and {LABELS_ZIP}, and put them '
        f'unextracted at {paths[0]} and {paths[1]} (or pass the folder holding them as '
        '--manual_dir)')
  return paths


def builder(*, data_dir: str | None = None, config: str | None = None) -> Cityscapes:
  """The builder for one config ('full', 'half' or 'quarter'), writing array_record."""
  name = config or DEFAULT_CONFIG
  known = [c.name for c in Cityscapes.BUILDER_CONFIGS]
  if name not in known:
    raise errors.UserError(f'unknown Cityscapes config {name!r}',
                           f'use one of {", ".join(known)}')
  return Cityscapes(data_dir=data_dir, config=name)


def load_split(split: str, *, data_dir: str | None = None, config: str | None = None,
               manual_dir: str | None = None, in_memory_limit_bytes: int | None = None):
  """Builds the data set once (from the manual zips), then returns one split.

  Args:
    split: 'train', 'validation' (or 'val') or 'test'.
    data_dir: tfds data directory (default: tfds's, usually ~/tensorflow_datasets).
    config: 'full' (default), 'half' or 'quarter'.
    manual_dir: folder holding the two zips (default `<data_dir>/downloads/manual`).
    in_memory_limit_bytes: splits smaller than this are read into memory, larger ones
      are lazy views (default `_lazy.IN_MEMORY_LIMIT_BYTES`).

  Returns:
    `segal_jax.data.Split` with Cityscapes' mean and std.
  """
  split = _SPLIT_ALIASES.get(split, split)
  if split not in _FOLDERS:
    raise errors.UserError(f'Cityscapes has no split {split!r}',
                           f'use one of {", ".join(_FOLDERS)}')
  b = builder(data_dir=data_dir, config=config)
  manual_dir = manual_dir or epath.Path(b.data_dir_root) / 'downloads' / 'manual'  # tfds's
  if not b.is_prepared():
    check_manual_dir(manual_dir)  # before tfds creates any folder
    b.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return _lazy.split_from_builder(b, split, name='cityscapes', mean=MEAN, std=STD,
                                   in_memory_limit_bytes=in_memory_limit_bytes)
