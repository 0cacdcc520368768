"""The image_folder builder: round trips, splits, label mappings and clear errors."""

import json
import os

import numpy as np
import PIL.Image
import pytest

from segal_jax.data import image_folder
from segal_jax import errors

H, W = 12, 20


def _save(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  PIL.Image.fromarray(array).save(path)


def make_folder(root, names, *, instances=False, seed=0, label_values=None, ext='png'):
  """Writes images/labels(/instances) for `names`; returns {name: (image, label, inst)}."""
  rng = np.random.default_rng(seed)
  values = np.r_[0:19, 255] if label_values is None else np.asarray(label_values)
  truth = {}
  for name in names:
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    label = rng.choice(values, (H, W)).astype(np.uint8)
    instance = rng.integers(0, 34000, (H, W)).astype(np.uint16)
    _save(os.path.join(root, 'images', f'{name}.{ext}'), image)
    _save(os.path.join(root, 'labels', f'{name}.png'), label)
    if instances:
      _save(os.path.join(root, 'instances', f'{name}.png'), instance)
    truth[name] = (image, label, instance.astype(np.int32))
  return truth


def _load(root, split, tmp_path, **kw):
  return image_folder.load(str(root), split, data_dir=str(tmp_path / 'tfds'), **kw)


def test_round_trip_with_seeded_fraction_split(tmp_path):
  root = tmp_path / 'folder'
  truth = make_folder(root, [f'im{k}' for k in range(5)], instances=True)
  train = _load(root, 'train', tmp_path)
  val = _load(root, 'val', tmp_path)
  assert train.name == 'image_folder' and train.num_classes == 19
  assert len(val) == 1 and len(train) == 4  # round(5 * 0.2)
  assert sorted(train.ids + val.ids) == sorted(truth)
  for split in (train, val):
    for i, image_id in enumerate(split.ids):
      image, label, instance = truth[image_id]
      np.testing.assert_array_equal(split.images[i], image)
      np.testing.assert_array_equal(split.labels[i], label)
      np.testing.assert_array_equal(split.instances[i], instance)
  pixels = np.stack([truth[i][0] for i in train.ids]).reshape(-1, 3) / 255.0
  np.testing.assert_allclose(train.mean, pixels.mean(0), rtol=1e-9)
  np.testing.assert_allclose(train.std, pixels.std(0), rtol=1e-9)
  assert val.mean == train.mean
  # The partition is a function of the seed.
  again = image_folder.find_splits(str(root), 0.2, seed=0)
  assert [p.image_id for p in again['validation']] == list(val.ids)
  partitions = {tuple(p.image_id for p in image_folder.find_splits(str(root), 0.4, s)
                      ['validation']) for s in range(10)}
  assert len(partitions) > 1 and all(len(p) == 2 for p in partitions)


def test_sub_folder_split_and_jpeg_images(tmp_path):
  root = tmp_path / 'folder'
  make_folder(root, ['train/a/x', 'train/b', 'val/c'], ext='jpg')
  train = image_folder.load_split('train', path=str(root), data_dir=str(tmp_path / 'tfds'),
                                  config=None)
  val = image_folder.load_split('validation', path=str(root), data_dir=str(tmp_path / 'tfds'),
                                config=None)
  assert train.ids == ('train/a/x', 'train/b') and val.ids == ('val/c',)
  assert train.images.shape == (2, H, W, 3)


def test_cityscapes_ids_and_custom_mappings(tmp_path):
  root = tmp_path / 'folder'
  truth = make_folder(root, ['a', 'b', 'c'], label_values=np.arange(34))
  train = _load(root, 'train', tmp_path, label_mapping='cityscapes_ids', val_fraction=0.34)
  label_ids = truth[train.ids[0]][1]
  for label_id, train_id in ((7, 0), (8, 1), (26, 13), (33, 18), (0, 255), (6, 255), (9, 255)):
    assert set(np.unique(train.labels[0][label_ids == label_id])) == {train_id}
  # A user mapping (dict or JSON file) of values to train ids.
  root2 = tmp_path / 'folder2'
  truth = make_folder(root2, ['a', 'b'], label_values=[0, 1, 2])
  mapping_file = tmp_path / 'mapping.json'
  mapping_file.write_text(json.dumps({'0': 255, '1': 0, '2': 13}))
  for mapping in ({0: 255, 1: 0, 2: 13}, str(mapping_file)):
    split = _load(root2, 'train', tmp_path, label_mapping=mapping)
    raw = truth[split.ids[0]][1]
    np.testing.assert_array_equal(split.labels[0], np.array([255, 0, 13], np.uint8)[raw])


def test_derived_instances_hand_case():
  car, person, road, ign = 13, 11, 0, 255
  label = np.array([[car, car, road, car],
                    [road, road, road, car],
                    [person, road, ign, road],
                    [road, person, road, road]], np.uint8)
  want = np.array([[26000, 26000, 7, 26001],
                   [7, 7, 7, 26001],
                   [24000, 7, 0, 7],
                   [7, 24000, 7, 7]])  # the diagonal person pixels are 8-connected
  np.testing.assert_array_equal(image_folder.derive_instances(label), want)


def test_instances_derived_when_folder_has_none(tmp_path):
  root = tmp_path / 'folder'
  truth = make_folder(root, ['a', 'b'])
  split = _load(root, 'train', tmp_path)
  np.testing.assert_array_equal(split.instances[0],
                                image_folder.derive_instances(truth[split.ids[0]][1]))


def _expect_error(root, tmp_path, match, **kw):
  with pytest.raises(errors.UserError, match=match):
    _load(root, 'train', tmp_path, **kw)
  assert not list((tmp_path / 'tfds').glob('image_folder/*/*/dataset_info.json'))


def test_label_of_another_size_names_the_first_bad_file(tmp_path):
  root = tmp_path / 'folder'
  make_folder(root, ['a', 'b', 'c', 'd'])
  for name in ('b', 'd'):
    _save(os.path.join(root, 'labels', f'{name}.png'), np.zeros((H, W + 1), np.uint8))
  _expect_error(root, tmp_path, f'{root}/labels/b.png is {H}x{W + 1} but its image')


def test_unknown_label_value_names_the_file(tmp_path):
  root = tmp_path / 'folder'
  make_folder(root, ['a', 'b', 'c'])
  bad = np.zeros((H, W), np.uint8)
  bad[3, 4] = 19  # not a train id
  _save(os.path.join(root, 'labels', 'c.png'), bad)
  _expect_error(root, tmp_path, rf'{root}/labels/c.png holds label values \[19\]')
  # ... but 19 is the Cityscapes label id of traffic light (train id 6).
  kw = dict(label_mapping='cityscapes_ids', val_fraction=0.4)
  c = next(s for s in (_load(root, 'train', tmp_path, **kw), _load(root, 'val', tmp_path, **kw))
           if 'c' in s.ids)
  assert c.labels[c.ids.index('c')][3, 4] == 6


def test_missing_label_and_colour_label_are_errors(tmp_path):
  root = tmp_path / 'folder'
  make_folder(root, ['a', 'b'])
  os.remove(os.path.join(root, 'labels', 'b.png'))
  _expect_error(root, tmp_path, f'{root}/images/b.png has no {root}/labels/b.png')
  _save(os.path.join(root, 'labels', 'b.png'), np.zeros((H, W, 3), np.uint8))
  _expect_error(root, tmp_path, f'{root}/labels/b.png is a uint8')


def test_images_of_several_sizes_need_image_size(tmp_path):
  root = tmp_path / 'folder'
  make_folder(root, ['train/a', 'train/b', 'train/c', 'val/d'])
  _save(os.path.join(root, 'images', 'train', 'b.png'), np.zeros((2 * H, 2 * W, 3), np.uint8))
  _save(os.path.join(root, 'labels', 'train', 'b.png'), np.full((2 * H, 2 * W), 5, np.uint8))
  _expect_error(root, tmp_path, f'{root}/images/train/b.png is {2 * H}x{2 * W} but the first')
  split = image_folder.load_split('train', path=str(root), data_dir=str(tmp_path / 'tfds'),
                                  config=f'image_size={H // 2}x{W // 2}')
  assert split.images.shape == (3, H // 2, W // 2, 3)
  np.testing.assert_array_equal(split.labels[1], 5)


def test_options_and_hash():
  assert image_folder.parse_options(
      'label_mapping=cityscapes_ids, val_fraction=0.1,seed=3,image_size=256x512') == {
          'label_mapping': 'cityscapes_ids', 'val_fraction': 0.1, 'seed': 3,
          'image_size': (256, 512)}
  assert image_folder.parse_options(None) == {}
  for bad in ('colour=red', 'seed', 'seed=x'):
    with pytest.raises(errors.UserError, match='image_folder option'):
      image_folder.parse_options(bad)


def test_config_name_changes_with_options_and_files(tmp_path):
  root = tmp_path / 'folder'
  make_folder(root, ['a', 'b'])
  name = image_folder.config_for(str(root)).name
  assert image_folder.config_for(str(root)).name == name
  assert image_folder.config_for(str(root), seed=1).name != name
  assert image_folder.config_for(str(root), label_mapping='cityscapes_ids').name != name
  make_folder(root, ['c'])
  assert image_folder.config_for(str(root)).name != name
  with pytest.raises(errors.UserError, match='does not exist'):
    image_folder.config_for(str(tmp_path / 'nowhere'))


# A crop-disease table of its own: PNG values 10, 20, 30, 40; ignore 0.
CROP = {'ignore': 0, 'classes': [
    {'name': 'soil', 'color': [120, 80, 40], 'thing': False, 'value': 10},
    {'name': 'leaf', 'color': [0, 160, 0], 'thing': False, 'value': 20},
    {'name': 'rust', 'color': [200, 90, 0], 'thing': True, 'value': 30},
    {'name': 'mildew', 'color': [230, 230, 230], 'thing': True, 'value': 40}]}


def test_class_table_maps_values_and_derives_instances(tmp_path):
  root = tmp_path / 'folder'
  truth = make_folder(root, ['a', 'b', 'c'], label_values=[0, 10, 20, 30, 40])
  (root / 'classes.json').write_text(json.dumps(CROP))
  split = _load(root, 'train', tmp_path, val_fraction=0.34)
  assert split.num_classes == 4 and split.classes.names == ('soil', 'leaf', 'rust', 'mildew')
  assert split.labeled.tolist() == [True, True]
  raw = truth[split.ids[0]][1]
  want = np.full(256, 255, np.uint8)
  want[[10, 20, 30, 40]] = [0, 1, 2, 3]
  np.testing.assert_array_equal(split.labels[0], want[raw])
  # Hand case: stuff is class index + 1, things (class index + 1) * 1000 + k per
  # 8-connected region, ignore 0.
  table = split.classes
  label = np.array([[2, 2, 0, 3],
                    [1, 1, 1, 3],
                    [2, 0, 255, 1],
                    [0, 2, 1, 1]], np.uint8)
  np.testing.assert_array_equal(image_folder.derive_instances(label, table),
                                [[3000, 3000, 1, 4000],
                                 [2, 2, 2, 4000],
                                 [3001, 1, 0, 2],
                                 [1, 3001, 2, 2]])


def test_class_table_errors_and_hash(tmp_path):
  root = tmp_path / 'folder'
  make_folder(root, ['a', 'b'], label_values=[0, 10, 20, 30, 40, 50])
  (root / 'classes.json').write_text(json.dumps(CROP))
  _expect_error(root, tmp_path, rf'{root}/labels/\w.png holds label values \[50\] that the '
                'class table does not know')
  name = image_folder.config_for(str(root)).name
  more = json.loads(json.dumps(CROP))
  more['classes'].append({'name': 'blight', 'color': [9, 9, 9], 'thing': True, 'value': 50})
  (root / 'classes.json').write_text(json.dumps(more))
  assert image_folder.config_for(str(root)).name != name
  split = _load(root, 'train', tmp_path)
  assert split.num_classes == 5
  # The same table passed explicitly (a file elsewhere) builds the same data set.
  (tmp_path / 'other.json').write_text(json.dumps(more))
  os.remove(root / 'classes.json')
  assert image_folder.config_for(str(root), classes=str(tmp_path / 'other.json')).name == (
      image_folder.config_for(str(root), classes=split.classes).name)
  assert image_folder.config_for(str(root)).name != name  # Cityscapes again
  with pytest.raises(errors.UserError, match='label_mapping'):
    image_folder.config_for(str(root), classes=split.classes, label_mapping='cityscapes_ids')
  assert image_folder.parse_options('classes=/x/c.json,allow_unlabeled=true') == {
      'classes': '/x/c.json', 'allow_unlabeled': True}


def test_unlabeled_images_when_allowed(tmp_path):
  root = tmp_path / 'folder'
  truth = make_folder(root, ['train/a', 'train/b', 'train/c', 'val/d'], instances=True)
  os.remove(root / 'labels' / 'train' / 'b.png')  # its instance file stays, unused
  _expect_error(root, tmp_path, 'has no')  # off by default
  split = _load(root, 'train', tmp_path, allow_unlabeled=True)
  assert split.ids == ('train/a', 'train/b', 'train/c')
  assert split.labeled.tolist() == [True, False, True]
  np.testing.assert_array_equal(split.labels[1], 255)
  np.testing.assert_array_equal(split.instances[1], 0)
  np.testing.assert_array_equal(split.images[1], truth['train/b'][0])
  np.testing.assert_array_equal(split.labels[2], truth['train/c'][1])
  np.testing.assert_array_equal(split.instances[2], truth['train/c'][2])
  # A label added later: a new build, same pool indices.
  _save(os.path.join(root, 'labels', 'train', 'b.png'), truth['train/b'][1])
  again = _load(root, 'train', tmp_path, allow_unlabeled=True)
  assert again.ids == split.ids and again.labeled.all() and again.build != split.build
  np.testing.assert_array_equal(again.labels[1], truth['train/b'][1])


def test_folder_options_round_trip_and_classes_flag():
  from segal_jax import data  # pylint: disable=g-import-not-at-top
  options = {'val_fraction': 0.1, 'image_size': (8, 16), 'allow_unlabeled': True,
             'classes': '/x/c.json'}
  assert image_folder.parse_options(image_folder.format_options(options)) == options
  assert data.with_folder_options('image_folder:/d', 'default', classes='/c.json') == (
      'classes=/c.json')
  assert data.with_folder_options('image_folder:/d', 'seed=2', classes='/c.json') == (
      'seed=2,classes=/c.json')
  with pytest.raises(errors.UserError, match='is for image folders'):
    data.with_folder_options('synthetic_city', 'tiny', classes='/c.json')
