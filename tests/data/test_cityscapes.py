"""The Cityscapes builder on a fake pair of zips with the official file naming."""

import io
import os
import zipfile

import numpy as np
import PIL.Image
import pytest

from segal_jax.data import _lazy
from segal_jax.data import cityscapes
from segal_jax import errors

H, W = 64, 128
# (zip folder, city, number of images)
LAYOUT = [('train', 'aachen', 2), ('val', 'frankfurt', 1), ('test', 'berlin', 1)]
# The official table, written out by hand: label id -> train id; every other id -> 255.
TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
             24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def _png(array):
  buf = io.BytesIO()
  PIL.Image.fromarray(array).save(buf, format='PNG')
  return buf.getvalue()


def _stem(city, k):
  return f'{city}_{k:06d}_{19 + 7 * k:06d}'


def make_zips(manual_dir, skip_instance_of=None, layout=LAYOUT):
  """Writes the two zips; returns {image id: (image, label ids, instance ids)}.

  layout: [(zip folder, city, number of images)].
  """
  os.makedirs(manual_dir, exist_ok=True)
  rng = np.random.default_rng(0)
  truth = {}
  with zipfile.ZipFile(os.path.join(manual_dir, 'leftImg8bit_trainvaltest.zip'), 'w') as zi, \
      zipfile.ZipFile(os.path.join(manual_dir, 'gtFine_trainvaltest.zip'), 'w') as zl:
    zi.writestr('README', 'not an image')
    for folder, city, n in layout:
      for k in range(n):
        stem = _stem(city, k)
        image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        label_ids = rng.permutation(np.arange(H * W) % 34).reshape(H, W).astype(np.uint8)
        instance = rng.integers(0, 34000, (H, W)).astype(np.uint16)  # > 32767 too
        zi.writestr(f'leftImg8bit/{folder}/{city}/{stem}_leftImg8bit.png', _png(image))
        gt = f'gtFine/{folder}/{city}/{stem}_gtFine_'
        zl.writestr(gt + 'labelIds.png', _png(label_ids))
        zl.writestr(gt + 'color.png', _png(image))
        if stem != skip_instance_of:
          zl.writestr(gt + 'instanceIds.png', _png(instance))
        truth[stem] = (folder, image, label_ids, instance.astype(np.int32))
  return truth


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  truth = make_zips(os.path.join(data_dir, 'downloads', 'manual'))
  splits = {(config, split): cityscapes.load_split(split, data_dir=data_dir, config=config)
            for config in ('full', 'half', 'quarter')
            for split in ('train', 'validation', 'test')}
  return data_dir, truth, splits


def test_splits_and_ids(built):
  _, truth, splits = built
  for split, folder in (('train', 'train'), ('validation', 'val'), ('test', 'test')):
    s = splits['full', split]
    assert s.name == 'cityscapes'
    assert s.ids == tuple(sorted(k for k, v in truth.items() if v[0] == folder))
    assert s.mean == (0.2901, 0.3281, 0.2870) and s.std == (0.1830, 0.1866, 0.1845)
  assert splits['full', 'train'].ids == ('aachen_000000_000019', 'aachen_000001_000026')


def test_full_resolution_round_trip_and_train_ids(built):
  _, truth, splits = built
  expected_train_id = np.full(256, 255, np.uint8)
  for label_id, train_id in TRAIN_IDS.items():
    expected_train_id[label_id] = train_id
  for split in ('train', 'validation', 'test'):
    s = splits['full', split]
    for i, image_id in enumerate(s.ids):
      _, image, label_ids, instance = truth[image_id]
      np.testing.assert_array_equal(s.images[i], image)
      np.testing.assert_array_equal(s.labels[i], expected_train_id[label_ids])
      assert s.instances.dtype == np.int32
      np.testing.assert_array_equal(s.instances[i], instance)
  # Spot checks of the table itself, and every official id occurs in the fake maps.
  label_ids, label = truth['aachen_000000_000019'][2], splits['full', 'train'].labels[0]
  assert set(np.unique(label_ids)) == set(range(34))
  for label_id, train_id in ((7, 0), (26, 13), (33, 18), (0, 255), (6, 255), (9, 255)):
    assert set(np.unique(label[label_ids == label_id])) == {train_id}


@pytest.mark.parametrize('config,factor', [('half', 2), ('quarter', 4)])
def test_downsampled_configs(built, config, factor):
  _, _, splits = built
  full, small = splits['full', 'train'], splits[config, 'train']
  assert small.images.shape == (2, H // factor, W // factor, 3)
  assert small.labels.shape == small.instances.shape == (2, H // factor, W // factor)
  # Nearest: the source pixel under each output pixel's centre.
  centre = slice(factor // 2, None, factor)
  np.testing.assert_array_equal(small.labels, full.labels[:, centre, centre])
  np.testing.assert_array_equal(small.instances, full.instances[:, centre, centre])
  # Area average of each factor x factor block.
  blocks = full.images.reshape(2, H // factor, factor, W // factor, factor, 3).mean((2, 4))
  np.testing.assert_allclose(small.images, blocks, atol=0.51)


def test_lazy_split_equals_in_memory(built):
  data_dir, _, splits = built
  lazy = cityscapes.load_split('train', data_dir=data_dir, config='quarter',
                               in_memory_limit_bytes=0)
  dense = splits['quarter', 'train']
  assert isinstance(lazy.images, _lazy.LazyArray) and isinstance(dense.images, np.ndarray)
  assert lazy.ids == dense.ids
  for name in ('images', 'labels', 'instances'):
    view, array = getattr(lazy, name), getattr(dense, name)
    assert (view.shape, view.dtype) == (array.shape, array.dtype)
    np.testing.assert_array_equal(view[np.array([1, 0, 1])], array[[1, 0, 1]])
    np.testing.assert_array_equal(view[-1], array[-1])


@pytest.mark.parametrize('present', [(), ('gtFine_trainvaltest.zip',)])
def test_missing_zips_name_the_expected_paths(tmp_path, present):
  manual = tmp_path / 'downloads' / 'manual'
  manual.mkdir(parents=True)
  for name in present:
    (manual / name).write_bytes(b'')
  with pytest.raises(errors.UserError) as e:
    cityscapes.load_split('train', data_dir=str(tmp_path), config='quarter')
  problem, fix = str(e.value).split(';')
  images, labels = f'{manual}/leftImg8bit_trainvaltest.zip', f'{manual}/gtFine_trainvaltest.zip'
  assert images in problem and (labels in problem) == (not present)
  assert images in fix and labels in fix
  assert 'https://www.cityscapes-dataset.com/downloads/' in fix
  assert not (tmp_path / 'cityscapes').exists()  # nothing half-built left behind


def test_manual_dir_flag_and_missing_annotation(tmp_path):
  manual = tmp_path / 'elsewhere'
  make_zips(str(manual), skip_instance_of=_stem('frankfurt', 0))
  with pytest.raises(errors.UserError, match='frankfurt_000000_000019_gtFine_instanceIds.png'):
    cityscapes.load_split('validation', data_dir=str(tmp_path / 'tfds'), config='quarter',
                          manual_dir=str(manual))


def test_bad_config_and_split():
  with pytest.raises(errors.UserError, match='full, half, quarter'):
    cityscapes.builder(config='eighth')
  with pytest.raises(errors.UserError, match='no split'):
    cityscapes.load_split('extra', config='quarter')


def test_image_costs_follow_the_study_rule_and_are_stored(built):
  """The study counts every distinct value of *_instanceIds.png, void included."""
  import json  # pylint: disable=g-import-not-at-top
  from segal_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from segal_jax import experiment  # pylint: disable=g-import-not-at-top
  data_dir, truth, splits = built
  split = splits['full', 'train']
  config = config_lib.ExperimentConfig(dataset='cityscapes', dataset_config='full',
                                       data_dir=data_dir)
  costs = experiment.image_costs(config, split)
  expected_train_id = np.full(256, 255, np.uint8)
  for label_id, train_id in TRAIN_IDS.items():
    expected_train_id[label_id] = train_id
  study, instances = [], []
  for image_id in split.ids:  # straight from the PNGs written into the zips
    _, _, label_ids, instance = truth[image_id]
    study.append(len(set(instance.ravel().tolist())))
    valid = (instance > 0) & (expected_train_id[label_ids] != 255)
    instances.append(len(set(instance[valid].ravel().tolist())))
  assert costs['study'].tolist() == study
  assert costs['instances'].tolist() == instances
  assert all(s > i for s, i in zip(study, instances))  # void ids count for the study
  # Stored beside the data set: a second start reads the file instead of decoding.
  path = os.path.join(data_dir, 'instance_counts', 'cityscapes', 'full.json')
  with open(path) as f:
    stored = json.load(f)
  stored['study'] = [7, 8]
  with open(path, 'w') as f:
    json.dump(stored, f)
  assert experiment.image_costs(config, split)['study'].tolist() == [7, 8]
