"""Tests for the synthetic_city renderer, TFDS builder and loader."""

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from segal_jax import data
from segal_jax.data import _scenes
from segal_jax.data import labels
from segal_jax.data import synthetic_city
from segal_jax import errors

THING_LABEL_IDS = {24, 25, 26, 27, 28, 31, 32, 33}   # person .. bicycle (official table)
VOID_LABEL_IDS = {0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30}
TRAIN = {name: i for i, name in enumerate(labels.CLASS_NAMES)}


@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='module')
def tiny_train(tiny_dir):
  return data.load('synthetic_city', 'train', data_dir=tiny_dir, config='tiny')


@pytest.fixture(scope='module')
def sample():
  """150 scenes at the tiny size, rendered directly."""
  out = [_scenes.render_scene(np.random.default_rng([123, 0, k]), 64, 128) for k in range(150)]
  return tuple(np.stack(parts) for parts in zip(*out))


def test_render_scene_is_deterministic():
  a = _scenes.render_scene(np.random.default_rng([5, 0, 3]), 48, 96)
  b = _scenes.render_scene(np.random.default_rng([5, 0, 3]), 48, 96)
  c = _scenes.render_scene(np.random.default_rng([5, 0, 4]), 48, 96)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[0], c[0])


def test_shapes_and_dtypes(tiny_train, tiny_dir):
  assert len(tiny_train) == 64 and tiny_train.name == 'synthetic_city'
  assert tiny_train.images.shape == (64, 64, 128, 3) and tiny_train.images.dtype == np.uint8
  assert tiny_train.labels.shape == (64, 64, 128) and tiny_train.labels.dtype == np.uint8
  assert tiny_train.instances.shape == (64, 64, 128)
  assert tiny_train.instances.dtype == np.int32
  assert tiny_train.ids == tuple(f'synth_train_{k:06d}' for k in range(64))
  assert tiny_train.num_classes == 19
  val = data.load('synthetic_city', 'val', data_dir=tiny_dir, config='tiny')
  assert len(val) == 32 and val.ids[0] == 'synth_validation_000000'
  assert val.mean == tiny_train.mean and val.std == tiny_train.std


def test_image_k_is_rendered_from_its_own_generator(tiny_train, tiny_dir):
  # Image k of split s (train = 0, validation = 1) comes from default_rng([seed, s, k]).
  for k in (0, 17, 63):
    image, label, instance = _scenes.render_scene(np.random.default_rng([0, 0, k]), 64, 128)
    np.testing.assert_array_equal(tiny_train.images[k], image)
    np.testing.assert_array_equal(tiny_train.labels[k], label)
    np.testing.assert_array_equal(tiny_train.instances[k], instance)
  val = data.load('synthetic_city', 'validation', data_dir=tiny_dir, config='tiny')
  image, _, _ = _scenes.render_scene(np.random.default_rng([0, 1, 5]), 64, 128)
  np.testing.assert_array_equal(val.images[5], image)


def test_two_builds_are_identical(tiny_train, tmp_path):
  again = data.load('synthetic_city', 'train', data_dir=str(tmp_path), config='tiny')
  assert again.ids == tiny_train.ids
  np.testing.assert_array_equal(again.images, tiny_train.images)
  np.testing.assert_array_equal(again.labels, tiny_train.labels)
  np.testing.assert_array_equal(again.instances, tiny_train.instances)


def test_mean_std_describe_the_images(tiny_train):
  x = tiny_train.images.reshape(-1, 3) / 255.0
  np.testing.assert_allclose(tiny_train.mean, x.mean(0), atol=0.03)
  np.testing.assert_allclose(tiny_train.std, x.std(0), atol=0.03)


def _check_instance_convention(label, instance):
  ids = np.where(instance >= 1000, instance // 1000, instance)
  thing = instance >= 1000
  assert set(np.unique(ids[thing]).tolist()) <= THING_LABEL_IDS
  assert not set(np.unique(ids[~thing]).tolist()) & THING_LABEL_IDS
  assert ids.max() <= 33 and ids.min() >= 0
  # Train ids agree with the label ids everywhere.
  np.testing.assert_array_equal(label, labels.ID_TO_TRAIN_ID[ids])
  assert set(np.unique(ids[label == 255]).tolist()) <= VOID_LABEL_IDS
  # Things are numbered 0..n-1 per class within the image.
  for cls in np.unique(ids[thing]):
    ks = np.unique(instance[thing & (ids == cls)]) - cls * 1000
    np.testing.assert_array_equal(ks, np.arange(ks.size))


def test_instance_ids_follow_cityscapes(tiny_train, sample):
  for label, instance in zip(tiny_train.labels, tiny_train.instances):
    _check_instance_convention(label, instance)
  for label, instance in zip(sample[1], sample[2]):
    _check_instance_convention(label, instance)
  # Hand-checked meaning of a few ids: road and sky carry their label ids 7 and 23.
  assert ((sample[1] == TRAIN['road']) == (sample[2] == 7)).all()
  assert ((sample[1] == TRAIN['sky']) == (sample[2] == 23)).all()
  cars = sample[2][sample[1] == TRAIN['car']]
  assert cars.min() == 26000 and (cars // 1000 == 26).all()
  assert (sample[2] == 26001).any()  # several cars in some image


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), height=st.integers(8, 72), width=st.integers(8, 144))
def test_any_size_and_seed_gives_consistent_maps(seed, height, width):
  image, label, instance = _scenes.render_scene(np.random.default_rng(seed), height, width)
  assert image.shape == (height, width, 3) and image.dtype == np.uint8
  assert label.shape == instance.shape == (height, width)
  _check_instance_convention(label, instance)


def test_every_class_appears_with_a_long_tail(sample):
  counts = np.bincount(sample[1].ravel(), minlength=256)[:19]
  assert (counts > 0).all(), [labels.CLASS_NAMES[i] for i in np.flatnonzero(counts == 0)]
  freq = counts / counts.sum()
  common = min(freq[TRAIN[n]] for n in ('road', 'building', 'sky', 'vegetation'))
  rare = max(freq[TRAIN[n]] for n in ('train', 'motorcycle', 'bus'))
  assert common > 5 * rare and common > 0.03
  images_with = (sample[1] == TRAIN['train']).any(axis=(1, 2)).mean()
  assert 0 < images_with < 0.2
  assert (sample[1] == TRAIN['road']).any(axis=(1, 2)).mean() > 0.95


def test_thin_and_small_objects(sample):
  pole = sample[1] == TRAIN['pole']
  # Horizontal runs of pole pixels are mostly one or two pixels wide.
  starts = pole[..., 1:] & ~pole[..., :-1]
  runs = starts.sum() + pole[..., 0].sum()
  assert pole.sum() / runs < 3.0
  assert pole.any(axis=(1, 2)).mean() > 0.5
  # Persons, signs and lights are present and small.
  for name in ('person', 'traffic sign', 'traffic light', 'bicycle'):
    present = (sample[1] == TRAIN[name]).sum(axis=(1, 2))
    assert (present > 0).mean() > 0.1, name
    assert np.median(present[present > 0]) < 0.02 * 64 * 128, name


def test_confusable_classes_look_alike(sample):
  images, label_maps, _ = sample

  def mean_gap(a, b):
    gaps = []
    for image, label in zip(images, label_maps):
      ma, mb = label == TRAIN[a], label == TRAIN[b]
      if ma.sum() >= 10 and mb.sum() >= 10:
        gaps.append(np.abs(image[ma].mean(0) - image[mb].mean(0)).max() / 255)
    return np.median(gaps)

  unrelated = mean_gap('road', 'sky')
  for a, b in (('road', 'sidewalk'), ('building', 'wall'), ('vegetation', 'terrain')):
    assert mean_gap(a, b) < min(0.2, unrelated / 2), (a, b)


def test_unknown_name_config_split_raise_user_error(tiny_dir):
  with pytest.raises(errors.UserError, match='synthetic_city'):
    data.load('nope', 'train')
  with pytest.raises(errors.UserError, match='tiny, small, default'):
    data.load('synthetic_city', 'train', config='huge', data_dir=tiny_dir)
  with pytest.raises(errors.UserError, match='validation'):
    data.load('synthetic_city', 'test', data_dir=tiny_dir, config='tiny')


def test_builder_metadata():
  assert synthetic_city.SyntheticCity.name == 'synthetic_city'
  assert str(synthetic_city.SyntheticCity.VERSION) == '1.0.0'
  configs = {c.name: c for c in synthetic_city.SyntheticCity.BUILDER_CONFIGS}
  assert (configs['tiny'].height, configs['tiny'].width) == (64, 128)
  assert (configs['small'].num_train, configs['small'].num_val) == (400, 100)
  assert (configs['default'].num_train, configs['default'].num_val) == (1000, 200)
  assert synthetic_city.image_id('train', 42) == 'synth_train_000042'
