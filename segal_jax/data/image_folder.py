"""Bring-your-own data: a folder of images and label PNGs, as a tfds builder.

Layout (label and instance files share the image's relative path, with `.png`):

  PATH/classes.json                            optional class table (`data.classes`)
  PATH/images/[train|val/]...{name}.{png,jpg,jpeg,bmp,tif,tiff}   RGB (converted if not)
  PATH/labels/[train|val/]...{name}.png        single-channel values, one per pixel
  PATH/instances/[train|val/]...{name}.png     optional instance ids (16-bit)

With `images/train` and `images/val` (or `images/validation`) the split follows the
sub-folders; otherwise a seeded random `val_fraction` of the images is the validation
split (a function of the image listing only, so adding labels later moves nothing).

Classes: with a class table (`PATH/classes.json`, or `classes=FILE`) label PNG values
are the table's values, read as class indices 0..C-1 (`ClassTable.lookup`). Without one,
labels live in the Cityscapes label space (19 train ids, 255 = ignore): `label_mapping=None`
reads the PNG values as train ids, `'cityscapes_ids'` as Cityscapes label ids
(`*_gtFine_labelIds.png`), and a `{value: train_id}` dict or a JSON file of one maps any
other coding.

Without `instances/`, instance maps are derived from the labels (`derive_instances`): each
8-connected region of a thing class is one instance. Cityscapes' table keeps Cityscapes
ids (`label_id * 1000 + k` for things, the label id for stuff); any other table uses
`(class_index + 1) * 1000 + k` for things and `class_index + 1` for stuff. Ignored pixels
are 0 in both, so the cost rules, which count distinct ids, work unchanged.

Unlabeled images: with `allow_unlabeled=True` an image without a label PNG is kept, with
an all-ignore label and instance map 0; `Split.labeled` tells which images have labels.

Before anything is written, every file is checked; the first image without a label (unless
allowed), with a label of another size, or with a label value the table (or mapping) does
not know raises a `UserError` naming it. Each distinct (absolute path, options, class
table, file names, sizes, times) is built once under `<data_dir>/image_folder/<hash>/`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping

import numpy as np
import PIL.Image
import skimage.measure
import tensorflow_datasets as tfds

from segal_jax.data import _lazy
from segal_jax.data import cityscapes
from segal_jax.data import classes as classes_lib
from segal_jax.data import labels
from segal_jax import errors

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')
_VAL_FOLDERS = ('val', 'validation')
_SPLIT_ALIASES = {'val': 'validation'}


def label_table(label_mapping: str | Mapping[int, int] | None) -> np.ndarray:
  """[256] int16 lookup: PNG value -> train id (0..18 or 255); -1 marks unknown values.

  Args:
    label_mapping: None or 'train_ids' (values are train ids), 'cityscapes_ids'
      (Cityscapes label ids 0..33; 255 stays ignore), a `{value: train_id}` mapping, or
      the path of a JSON file holding one.
  """
  table = np.full(256, -1, np.int16)
  if label_mapping in (None, 'train_ids'):
    table[:labels.NUM_CLASSES] = np.arange(labels.NUM_CLASSES)
    table[labels.IGNORE] = labels.IGNORE
    return table
  if label_mapping == 'cityscapes_ids':
    ids = [l.id for l in labels.LABELS if l.id >= 0]
    table[ids] = labels.ID_TO_TRAIN_ID[ids]
    table[labels.IGNORE] = labels.IGNORE
    return table
  if isinstance(label_mapping, str):
    try:
      with open(os.path.expanduser(label_mapping)) as f:
        label_mapping = json.load(f)
    except (OSError, ValueError) as e:
      raise errors.UserError(f'cannot read the label mapping {label_mapping} ({e})',
                             "pass 'train_ids', 'cityscapes_ids' or a JSON file "
                             '{"value": train_id, ...}') from e
  for value, train_id in label_mapping.items():
    value, train_id = int(value), int(train_id)
    if not (0 <= value < 256 and (0 <= train_id < labels.NUM_CLASSES
                                  or train_id == labels.IGNORE)):
      raise errors.UserError(f'the label mapping sends {value} to {train_id}',
                             f'map values 0..255 to train ids 0..{labels.NUM_CLASSES - 1} '
                             f'or {labels.IGNORE} (ignore)')
    table[value] = train_id
  return table


def derive_instances(label: np.ndarray,
                     table: classes_lib.ClassTable = classes_lib.CITYSCAPES) -> np.ndarray:
  """Instance ids from a class-index map (used when `instances/` is absent).

  Args:
    label: [H, W] uint8 class indices of `table`, 255 = ignore.
    table: the class table; Cityscapes' gives Cityscapes instance ids.

  Returns:
    [H, W] int32: `code * 1000 + k` for the k-th 8-connected region of each thing class
    (k from 0, in raster order of the regions' first pixel), `code` for stuff classes,
    0 for ignored pixels; `code` is the Cityscapes label id for Cityscapes' table and
    `class_index + 1` for any other.
  """
  n = table.num_classes
  code = (labels.TRAIN_ID_TO_ID.astype(np.int32) if table == classes_lib.CITYSCAPES
          else np.arange(1, n + 1, dtype=np.int32))
  valid = label < n
  ids = np.where(valid, code[np.where(valid, label, 0)], 0).astype(np.int32)
  for t in table.thing_ids:
    regions = skimage.measure.label(label == t, connectivity=2)  # 0 = background
    ids = np.where(regions > 0, int(code[t]) * 1000 + regions - 1, ids)
  return ids.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class _Pair:
  image_id: str
  image: str
  label: str | None  # None: an unlabeled image (allowed by `allow_unlabeled`)
  instance: str | None


def _scan(root: str) -> list[str]:
  """Relative paths of the image files under `root`, sorted."""
  found = []
  for d, _, files in os.walk(root):
    found += [os.path.relpath(os.path.join(d, f), root) for f in files
              if f.lower().endswith(IMAGE_EXTENSIONS)]
  return sorted(found)


def _pairs(path: str, rels: list[str], sub: str, allow_unlabeled: bool = False
           ) -> list[_Pair]:
  """Image/label/instance paths for images `rels` (relative to `images/sub`)."""
  pairs, seen = [], {}
  has_instances = os.path.isdir(os.path.join(path, 'instances'))
  for rel in rels:
    stem = os.path.splitext(os.path.join(sub, rel))[0]
    image = os.path.join(path, 'images', sub, rel)
    if stem in seen:
      raise errors.UserError(f'{image} and {seen[stem]} would share the label {stem}.png',
                             'keep one image per name')
    seen[stem] = image
    label = os.path.join(path, 'labels', stem + '.png')
    instance = os.path.join(path, 'instances', stem + '.png') if has_instances else None
    if allow_unlabeled and not os.path.exists(label):
      label = instance = None  # all ignore, instance 0
    pairs.append(_Pair(stem.replace(os.sep, '/'), image, label, instance))
  return pairs


def find_splits(path: str, val_fraction: float = 0.2, seed: int = 0,
                allow_unlabeled: bool = False) -> dict[str, list[_Pair]]:
  """{'train': [...], 'validation': [...]} file pairs of a folder, in id order.

  With `allow_unlabeled`, images without a label PNG get `label=None` (and `labels/`
  may be missing).
  """
  images = os.path.join(path, 'images')
  if not os.path.isdir(images) or not (allow_unlabeled
                                       or os.path.isdir(os.path.join(path, 'labels'))):
    raise errors.UserError(f'{path} has no images/ and labels/ folders',
                           'lay it out as images/, labels/ and optionally instances/')
  if os.path.isdir(os.path.join(images, 'train')):
    val = next((v for v in _VAL_FOLDERS if os.path.isdir(os.path.join(images, v))), None)
    if val is None:
      raise errors.UserError(f'{images} has train/ but no val/',
                             'add images/val (and labels/val), or put all images directly '
                             'in images/ to split them by val_fraction')
    splits = {'train': _pairs(path, _scan(os.path.join(images, 'train')), 'train',
                              allow_unlabeled),
              'validation': _pairs(path, _scan(os.path.join(images, val)), val,
                                   allow_unlabeled)}
  else:
    if not 0 < val_fraction < 1:
      raise errors.UserError(f'val_fraction must be in (0, 1), got {val_fraction}',
                             'pass e.g. val_fraction=0.2')
    pairs = _pairs(path, _scan(images), '', allow_unlabeled)
    n_val = min(len(pairs) - 1, max(1, round(len(pairs) * val_fraction)))
    is_val = np.zeros(len(pairs), bool)
    is_val[np.random.default_rng(seed).permutation(len(pairs))[:n_val]] = True
    splits = {'train': [p for p, v in zip(pairs, is_val) if not v],
              'validation': [p for p, v in zip(pairs, is_val) if v]}
  for name, pairs in splits.items():
    if not pairs:
      raise errors.UserError(f'the {name} split of {path} has no images',
                             f'add images with extensions {", ".join(IMAGE_EXTENSIONS)}')
  return splits


def _read(path: str, mode: str | None = None) -> np.ndarray:
  with open(path, 'rb') as f:
    return cityscapes.read_png(f.read(), mode)


def _check(pair: _Pair, table: np.ndarray, has_classes: bool = False) -> tuple[int, int]:
  """The image's (H, W); UserError naming the first problem of its files.

  `table` is the value lookup (-1 = unknown); `has_classes` says it comes from a class
  table (for the error's wording).
  """
  for p in (pair.label, pair.instance):
    if p is not None and not os.path.exists(p):
      raise errors.UserError(f'{pair.image} has no {p}', 'add it, or remove the image')
  with PIL.Image.open(pair.image) as im:  # reads the header only
    size = (im.height, im.width)
  if pair.label is None:
    return size
  label = _read(pair.label)
  if label.ndim != 2 or label.dtype != np.uint8:
    raise errors.UserError(f'{pair.label} is a {label.dtype} {label.shape} image',
                           'save labels as single-channel 8-bit PNGs of class ids')
  shapes = [(pair.label, label.shape)]
  if pair.instance is not None:
    shapes.append((pair.instance, _read(pair.instance).shape))
  for p, shape in shapes:
    if shape != size:
      raise errors.UserError(f'{p} is {shape[0]}x{shape[1]} but its image {pair.image} '
                             f'is {size[0]}x{size[1]}', 'give each label its image size')
  unknown = np.unique(label[table[label] < 0])
  if unknown.size and has_classes:
    raise errors.UserError(
        f'{pair.label} holds label values {unknown[:10].tolist()} that the class table '
        'does not know', 'fix the file, or add the values to classes.json')
  if unknown.size:
    raise errors.UserError(
        f'{pair.label} holds label values {unknown[:10].tolist()} that the label mapping '
        'does not know', "fix the file, or pass label_mapping ('train_ids', "
        "'cityscapes_ids' or a JSON file {\"value\": train_id})")
  return size


@dataclasses.dataclass(eq=False)
class ImageFolderConfig(tfds.core.BuilderConfig):
  """One folder with its options; `name` is their hash (see `config_for`)."""
  path: str = ''
  label_mapping: str | Mapping[int, int] | None = None
  val_fraction: float = 0.2
  seed: int = 0
  image_size: tuple[int, int] | None = None
  classes: str | None = None  # the class table as JSON (`ClassTable.to_json`); None: Cityscapes
  allow_unlabeled: bool = False

  def table(self) -> classes_lib.ClassTable | None:
    return None if self.classes is None else classes_lib.from_json(json.loads(self.classes))

  def lookup(self) -> np.ndarray:
    """[256] int16: PNG value -> class index (255 ignore, -1 unknown)."""
    table = self.table()
    return label_table(self.label_mapping) if table is None else table.lookup()


class ImageFolder(_lazy.ArrayRecordBuilder, skip_registration=True):
  """Images with class-index labels and instance maps from a user's folder."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Images, class-index labels, instance ids.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=f'Image folder {self.builder_config.path}',
        features=_lazy.record_features(),
        # mean and std of the training images, the ids of unlabeled images
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,  # records in image-id order
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    c = self.builder_config
    splits = find_splits(c.path, c.val_fraction, c.seed, c.allow_unlabeled)
    lookup = c.lookup()
    for name, pairs in splits.items():
      first = None
      for pair in pairs:
        size = _check(pair, lookup, c.classes is not None)
        if c.image_size is None and first not in (None, size):
          raise errors.UserError(
              f'{pair.image} is {size[0]}x{size[1]} but the first {name} image is '
              f'{first[0]}x{first[1]}', 'make all images one size, or pass image_size')
        first = first or size
    self.info.metadata.update(unlabeled=[p.image_id for pairs in splits.values()
                                         for p in pairs if p.label is None])
    return {name: self._generate_examples(pairs, lookup, name == 'train')
            for name, pairs in splits.items()}

  def _generate_examples(self, pairs, lookup, is_train):
    table = self.builder_config.table() or classes_lib.CITYSCAPES
    moments = np.zeros((3, 3))  # per channel: count, sum, sum of squares
    for key, pair in enumerate(pairs):
      image = _read(pair.image, 'RGB')
      if pair.label is None:
        label = np.full(image.shape[:2], labels.IGNORE, np.uint8)
      else:
        label = lookup[_read(pair.label)].astype(np.uint8)
      if pair.instance:
        instance = _read(pair.instance).astype(np.int32)
      else:
        instance = derive_instances(label, table)
      if self.builder_config.image_size:
        size = tuple(self.builder_config.image_size)
        image = cityscapes.resize_image(image, size)
        label = labels.resize_nearest(label, size)
        instance = labels.resize_nearest(instance, size)
      if is_train:
        x = image.reshape(-1, 3) / 255.0
        moments += [np.full(3, len(x)), x.sum(0), (x * x).sum(0)]
      yield key, {'image_id': pair.image_id, 'image': image, 'label': label,
                  'instance': instance}
    if is_train:  # stored in the data set's metadata when the build completes
      mean = moments[1] / moments[0]
      std = np.sqrt(np.maximum(moments[2] / moments[0] - mean ** 2, 0.0))
      self.info.metadata.update(mean=mean.tolist(), std=std.tolist())


def class_table(path: str, classes: str | classes_lib.ClassTable | None = None
                ) -> classes_lib.ClassTable | None:
  """The class table of a folder: `classes` (a table, or a classes.json file), else the
  folder's own `classes.json`, else None (the Cityscapes label space)."""
  if isinstance(classes, classes_lib.ClassTable):
    return classes
  if classes:
    return classes_lib.load(classes)
  own = os.path.join(os.path.expanduser(path), classes_lib.FILE)
  return classes_lib.load(own) if os.path.exists(own) else None


def config_for(path: str, *, label_mapping=None, val_fraction: float = 0.2, seed: int = 0,
               image_size: tuple[int, int] | None = None,
               classes: str | classes_lib.ClassTable | None = None,
               allow_unlabeled: bool = False) -> ImageFolderConfig:
  """The builder config of a folder; its name hashes the options, the class table and
  the file listing.

  Any added, removed or modified file (size or modification time), or a changed class
  table, gives a new name, so the data set is rebuilt rather than read stale.
  """
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isdir(path):
    raise errors.UserError(f'image folder {path} does not exist',
                           'pass --dataset=image_folder:PATH with an existing folder')
  table = class_table(path, classes)
  if table is not None and label_mapping not in (None, 'train_ids'):
    raise errors.UserError(f'{path} has a class table and a label_mapping',
                           'list the label PNG values in classes.json and drop label_mapping')
  listing = []
  for sub in ('images', 'labels', 'instances'):
    for d, _, files in sorted(os.walk(os.path.join(path, sub))):
      for f in sorted(files):
        st = os.stat(os.path.join(d, f))
        listing.append((os.path.relpath(os.path.join(d, f), path), st.st_size, st.st_mtime_ns))
  if isinstance(label_mapping, Mapping):
    label_mapping = {int(k): int(v) for k, v in sorted(label_mapping.items())}
  table_json = None if table is None else json.dumps(table.to_json(), sort_keys=True)
  lookup = label_table(label_mapping) if table is None else table.lookup()
  key = json.dumps([path, lookup.tolist(), val_fraction, seed, image_size, listing]
                   + ([table_json, allow_unlabeled] if table_json or allow_unlabeled else []))
  name = 'h' + hashlib.sha256(key.encode()).hexdigest()[:16]
  return ImageFolderConfig(name=name, path=path, label_mapping=label_mapping,
                           val_fraction=val_fraction, seed=seed,
                           image_size=tuple(image_size) if image_size else None,
                           classes=table_json, allow_unlabeled=allow_unlabeled,
                           description=f'Image folder {path}')


def load(path: str, split: str, *, data_dir: str | None = None, val_fraction: float = 0.2,
         seed: int = 0, label_mapping=None, image_size: tuple[int, int] | None = None,
         classes: str | classes_lib.ClassTable | None = None, allow_unlabeled: bool = False,
         in_memory_limit_bytes: int | None = None):
  """Builds the folder's data set once (validating every file), then returns one split.

  Args:
    path: the folder (images/, labels/, optional instances/ and classes.json).
    split: 'train' or 'validation' ('val').
    data_dir: tfds data directory for the build (default: tfds's).
    val_fraction, seed: the validation share and the permutation seed, used when the
      folder has no images/train and images/val sub-folders.
    label_mapping: see `label_table` (only without a class table).
    image_size: (H, W) to resize every image to (area averaging for images, nearest for
      labels and instances); None requires one size per split.
    classes: the class table, or a classes.json file; None: the folder's classes.json
      if it has one, else Cityscapes' train ids.
    allow_unlabeled: keep images without a label PNG (all-ignore labels).
    in_memory_limit_bytes: splits smaller than this are read into memory.

  Returns:
    `segal_jax.data.Split`, mean/std measured on the training images, `classes` the
    table, `labeled` False for the images without a label PNG.
  """
  split = _SPLIT_ALIASES.get(split, split)
  if split not in ('train', 'validation'):
    raise errors.UserError(f'an image folder has no split {split!r}',
                           'use train or validation')
  config = config_for(path, label_mapping=label_mapping, val_fraction=val_fraction,
                      seed=seed, image_size=image_size, classes=classes,
                      allow_unlabeled=allow_unlabeled)
  b = ImageFolder(data_dir=data_dir, config=config)
  b.download_and_prepare()
  meta = b.info.metadata
  out = _lazy.split_from_builder(b, split, name='image_folder', mean=meta['mean'],
                                 std=meta['std'],
                                 classes=config.table() or classes_lib.CITYSCAPES,
                                 in_memory_limit_bytes=in_memory_limit_bytes)
  unlabeled = set(meta.get('unlabeled', ()))
  return dataclasses.replace(out, labeled=[i not in unlabeled for i in out.ids],
                             build=config.name)


def _flag(value: str) -> bool:
  if value.lower() in ('1', 'true', 'yes'):
    return True
  if value.lower() in ('0', 'false', 'no'):
    return False
  raise ValueError(value)


def parse_options(config: str | None) -> dict:
  """'label_mapping=cityscapes_ids,val_fraction=0.1,seed=3,image_size=256x512' -> kwargs.

  Keys: label_mapping, val_fraction, seed, image_size, classes (a classes.json file),
  allow_unlabeled (true/false). 'default' (the value configs/base.flags gives every data
  set) means no options.
  """
  if config == 'default':
    config = ''
  casts = {'label_mapping': str, 'val_fraction': float, 'seed': int,
           'image_size': lambda v: tuple(int(x) for x in v.lower().split('x')),
           'classes': str, 'allow_unlabeled': _flag}
  options = {}
  for item in filter(None, (config or '').split(',')):
    key, sep, value = item.partition('=')
    key = key.strip()
    if not sep or key not in casts:
      raise errors.UserError(f'bad image_folder option {item!r}',
                             f'use comma-separated key=value with keys {", ".join(casts)}')
    try:
      options[key] = casts[key](value.strip())
    except ValueError as e:
      raise errors.UserError(f'bad value in image_folder option {item!r}',
                             'e.g. val_fraction=0.2,seed=0,image_size=256x512') from e
  return options


def format_options(options: dict) -> str:
  """The inverse of `parse_options`: kwargs -> 'key=value,...'."""
  text = lambda v: ('x'.join(map(str, v)) if isinstance(v, (tuple, list))
                    else str(v).lower() if isinstance(v, bool) else str(v))
  return ','.join(f'{k}={text(v)}' for k, v in options.items())


def load_split(split: str, *, path: str, data_dir: str | None = None,
               config: str | None = None, **options):
  """Registry entry: `--dataset=image_folder:PATH --dataset_config=key=value,...`;
  `options` (e.g. `classes=`, `allow_unlabeled=`) add to or override the parsed ones."""
  return load(path, split, data_dir=data_dir, **{**parse_options(config), **options})
