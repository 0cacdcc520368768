"""`synthetic_city`: procedural street scenes as a TFDS dataset (no TensorFlow needed).

Each image is rendered by `_scenes.render_scene` from its own generator
`np.random.default_rng([config.seed, split_index, k])` (train = 0,
validation = 1), so the dataset is identical wherever it is built and any one
image can be regenerated alone. Stored as array_record with zlib-compressed
tensors; read it with `builder.as_data_source()`.

Configs: `tiny` (64x128, 64/32 images: tests and CI), `small` (128x256,
400/100: the CPU quickstart), `default` (128x256, 1000/200) and `bench`
(64x128, 1000/400: the label-bound CPU benchmark). `bench` sets scene knobs
(`_scenes.knobs`): no poles (so no pole, traffic light or sign), no riders,
motorcycles, bicycles or trains, objects no farther than 20 m (so persons
and vehicles are several output strides tall), less colour confusion between
neighbouring classes, and more trucks and buses; 12 classes remain.
`dense` (128x256, 1000/400) keeps bench's classes with about 30 instances an
image, as dense as Cityscapes (docs/results/superpixels.md).
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from segal_jax.data import _lazy
from segal_jax.data import _scenes
from segal_jax import errors

SPLIT_INDEX = {'train': 0, 'validation': 1}

# Per-channel mean and std of image / 255 over the `default` train split
# (1000 images), as computed by `pixel_stats`; fixed so every split and config
# is normalised the same way. Recompute them when the renderer changes.
MEAN = (0.3401, 0.3405, 0.3226)
STD = (0.2034, 0.1961, 0.2171)


@dataclasses.dataclass
class SyntheticCityConfig(tfds.core.BuilderConfig):
  """Image size, split sizes and seed of one variant."""
  height: int = 128
  width: int = 256
  num_train: int = 1000
  num_val: int = 200
  seed: int = 0
  knobs: tuple[tuple[str, float], ...] = ()  # `_scenes.knobs` overrides, as pairs


BENCH_KNOBS = (('MEAN_POLES', 0.0), ('P_CYCLIST', 0.0), ('P_MOTORCYCLE', 0.0),
               ('P_PARKED_BICYCLES', 0.0), ('P_TRAIN', 0.0), ('P_TRUCK', 0.3),
               ('P_BUS', 0.2), ('MAX_OBJECT_DEPTH', 20.0), ('CONFUSION', 0.3))

# `dense`: the bench's classes at twice the resolution, with about as many
# instances an image as Cityscapes (31.7; `bench` has 13): more cars and
# persons, objects up to 50 m away (so most are small), more trucks and buses.
DENSE_KNOBS = tuple(dict(BENCH_KNOBS, MEAN_CARS=24.0, MEAN_PERSONS=16.0, MAX_OBJECT_DEPTH=50.0,
                         P_TRUCK=0.4, P_BUS=0.3).items())


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """The generator that renders image `index` of `split`."""
  return np.random.default_rng([seed, SPLIT_INDEX[split], index])


def pixel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and std of `images / 255`.

  Args:
    images: [N, H, W, 3] uint8.

  Returns:
    (mean, std), each three floats.
  """
  x = images.reshape(-1, 3).astype(np.float64) / 255
  return tuple(x.mean(0).tolist()), tuple(x.std(0).tolist())


def image_id(split: str, index: int) -> str:
  """The id of image `index` of `split`, e.g. `synth_train_000042`."""
  return f'synth_{split}_{index:06d}'


class SyntheticCity(_lazy.ArrayRecordBuilder):
  """Procedural street scenes in the Cityscapes label space (19 classes)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      SyntheticCityConfig(name='tiny', description='64x128, 64 train / 32 validation.',
                          height=64, width=128, num_train=64, num_val=32, seed=0),
      SyntheticCityConfig(name='small', description='128x256, 400 train / 100 validation.',
                          height=128, width=256, num_train=400, num_val=100, seed=0),
      SyntheticCityConfig(name='default', description='128x256, 1000 train / 200 validation.',
                          height=128, width=256, num_train=1000, num_val=200, seed=0),
      SyntheticCityConfig(name='bench', description='64x128, 1000 train / 400 validation, '
                          'large objects, 12 classes.', height=64, width=128, num_train=1000,
                          num_val=400, seed=0, knobs=BENCH_KNOBS),
      SyntheticCityConfig(name='dense', description='128x256, 1000 train / 400 validation, '
                          'about 30 instances an image, 12 classes.', height=128, width=256,
                          num_train=1000, num_val=400, seed=0, knobs=DENSE_KNOBS),
  ]
  DEFAULT_CONFIG_NAME = 'default'

  def _info(self) -> tfds.core.DatasetInfo:
    h, w = self.builder_config.height, self.builder_config.width
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image_id': tfds.features.Text(),
            'image': tfds.features.Tensor(shape=(h, w, 3), dtype=np.uint8, encoding='zlib'),
            'label': tfds.features.Tensor(shape=(h, w), dtype=np.uint8, encoding='zlib',
                                          doc='Cityscapes train ids, 255 = ignore.'),
            'instance': tfds.features.Tensor(shape=(h, w), dtype=np.int32, encoding='zlib',
                                             doc='Cityscapes instance ids.'),
        }),
        supervised_keys=('image', 'label'),
        disable_shuffling=True,  # records stay in image order
        homepage='https://www.cityscapes-dataset.com/',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split) for split in SPLIT_INDEX}

  def _generate_examples(self, split: str):
    cfg = self.builder_config
    count = cfg.num_train if split == 'train' else cfg.num_val
    for k in range(count):
      with _scenes.knobs(**dict(cfg.knobs)):
        image, label, instance = _scenes.render_scene(image_rng(cfg.seed, split, k),
                                                      cfg.height, cfg.width)
      key = image_id(split, k)
      yield key, {'image_id': key, 'image': image, 'label': label, 'instance': instance}


def config_names() -> list[str]:
  """The builder configs (sizes) of synthetic_city."""
  return [c.name for c in SyntheticCity.BUILDER_CONFIGS]


def load_split(split: str, *, data_dir: str | None = None, config: str | None = None):
  """Builds the data set once (deterministic rendering), then returns one split.

  Args:
    split: 'train' or 'validation'.
    data_dir: tfds data directory (default: tfds's).
    config: 'tiny', 'small', 'default' (the default), 'bench' or 'dense'.

  Returns:
    `segal_jax.data.Split`, in image order.
  """
  if split not in SPLIT_INDEX:
    raise errors.UserError(f'synthetic_city has no split {split!r}',
                           f'use one of {", ".join(SPLIT_INDEX)}')
  names = config_names()
  config = config or SyntheticCity.DEFAULT_CONFIG_NAME
  if config not in names:
    raise errors.UserError(f'synthetic_city has no config {config!r}',
                           f'choose one of {", ".join(names)}')
  builder = SyntheticCity(config=config, data_dir=data_dir)
  builder.download_and_prepare()
  return _lazy.split_from_builder(builder, split, name='synthetic_city', mean=MEAN, std=STD)
