"""Tests for the Cityscapes label table, against values typed from the official table."""

import numpy as np

from segal_jax.data import labels

# label id -> train id for every evaluated class (official table).
EXPECTED_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
                      23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
EXPECTED_NAMES = ('road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light',
                  'traffic sign', 'vegetation', 'terrain', 'sky', 'person', 'rider', 'car',
                  'truck', 'bus', 'train', 'motorcycle', 'bicycle')
EXPECTED_PALETTE = [(128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156),
                    (190, 153, 153), (153, 153, 153), (250, 170, 30), (220, 220, 0),
                    (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
                    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100),
                    (0, 0, 230), (119, 11, 32)]


def test_table_has_every_official_row():
  ids = [l.id for l in labels.LABELS]
  assert ids == list(range(34)) + [-1]
  assert labels.NAME_TO_LABEL['license plate'].train_id == -1
  assert labels.NAME_TO_LABEL['caravan'].has_instances
  assert labels.NAME_TO_LABEL['caravan'].ignore_in_eval
  assert labels.NAME_TO_LABEL['road'].category == 'flat'
  assert labels.NAME_TO_LABEL['person'].category_id == 6
  # A label is evaluated exactly when it has a real train id.
  for l in labels.LABELS:
    assert l.ignore_in_eval == (l.id not in EXPECTED_TRAIN_IDS)


def test_lookup_table_maps_every_id():
  lut = labels.ID_TO_TRAIN_ID
  assert lut.shape == (256,) and lut.dtype == np.uint8
  for i in range(256):
    assert lut[i] == EXPECTED_TRAIN_IDS.get(i, 255), i
  assert lut[7] == 0 and lut[26] == 13 and lut[33] == 18
  assert (lut[:7] == 255).all()


def test_train_id_to_id_inverts_the_lookup():
  assert labels.TRAIN_ID_TO_ID.tolist() == sorted(EXPECTED_TRAIN_IDS)
  np.testing.assert_array_equal(labels.ID_TO_TRAIN_ID[labels.TRAIN_ID_TO_ID], np.arange(19))


def test_names_palette_and_things_in_train_id_order():
  assert labels.CLASS_NAMES == EXPECTED_NAMES
  assert labels.NUM_CLASSES == 19 and labels.IGNORE == 255
  assert labels.PALETTE.dtype == np.uint8
  np.testing.assert_array_equal(labels.PALETTE, np.array(EXPECTED_PALETTE))
  assert labels.THING_TRAIN_IDS == (11, 12, 13, 14, 15, 16, 17, 18)
  assert labels.train_id('car') == 13 and labels.label_id('car') == 26


def test_colorize_hand_case():
  label = np.array([[0, 255], [13, 18]], np.uint8)
  out = labels.colorize(label)
  assert out.shape == (2, 2, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out, [[[128, 64, 128], [0, 0, 0]],
                                      [[0, 0, 142], [119, 11, 32]]])


def test_resize_nearest_hand_case():
  values = np.arange(9).reshape(3, 3)
  # 3 -> 2: centres at 0.75 and 2.25 source pixels -> rows/cols 0 and 2.
  np.testing.assert_array_equal(labels.resize_nearest(values, (2, 2)), [[0, 2], [6, 8]])
  np.testing.assert_array_equal(labels.resize_nearest(values, (3, 1)), [[1], [4], [7]])
