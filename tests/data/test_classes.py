"""Class tables: the built-in Cityscapes table and checked classes.json files."""

import json

import numpy as np
import pytest

from segal_jax.data import classes
from segal_jax.errors import UserError

TABLE = {'ignore': 255, 'classes': [
    {'name': 'healthy', 'color': [0, 160, 0], 'thing': False, 'value': 10},
    {'name': 'rust', 'color': [200, 90, 0], 'thing': True, 'value': 20},
    {'name': 'soil', 'color': [90, 60, 30], 'thing': False, 'value': 0}]}


def test_cityscapes_table_matches_the_official_train_ids():
  t = classes.CITYSCAPES
  assert t.num_classes == 19 and t.names[0] == 'road' and t.names[13] == 'car'
  # Things: person, rider, car, truck, bus, train, motorcycle, bicycle.
  assert t.thing_ids == (11, 12, 13, 14, 15, 16, 17, 18)
  assert tuple(t.palette[13]) == (0, 0, 142)
  lut = t.lookup()
  assert lut[5] == 5 and lut[255] == 255 and lut[19] == -1


def test_custom_table_lookup_values_and_colours(tmp_path):
  (tmp_path / 'classes.json').write_text(json.dumps(TABLE))
  t = classes.load(str(tmp_path))
  assert t.names == ('healthy', 'rust', 'soil') and t.thing_ids == (1,)
  png = np.array([[10, 20], [0, 255]], np.uint8)
  idx = t.lookup()[png]
  np.testing.assert_array_equal(idx, [[0, 1], [2, 255]])
  assert t.lookup()[11] == -1
  np.testing.assert_array_equal(t.values()[idx], png)  # round trip
  np.testing.assert_array_equal(t.colorize(idx)[0, 1], [200, 90, 0])
  np.testing.assert_array_equal(t.colorize(idx)[1, 1], [0, 0, 0])
  assert classes.from_json(t.to_json()) == t


@pytest.mark.parametrize('change, words', [
    (lambda o: o['classes'][1].update(value=10), 'repeats'),
    (lambda o: o['classes'][0].update(value=255), 'value'),
    (lambda o: o['classes'][0].update(color=[0, 300, 0]), 'colour'),
    (lambda o: o['classes'][0].pop('thing'), 'lacks'),
    (lambda o: o.update(classes=[]), 'no classes'),
    (lambda o: o.pop('classes'), 'no "classes"'),
])
def test_bad_tables_are_one_clear_error(change, words):
  obj = json.loads(json.dumps(TABLE))
  change(obj)
  with pytest.raises(UserError, match=words):
    classes.from_json(obj)


def test_unreadable_file_names_it(tmp_path):
  (tmp_path / 'classes.json').write_text('{not json')
  with pytest.raises(UserError, match='classes.json'):
    classes.load(str(tmp_path))
