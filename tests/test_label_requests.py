"""label_requests: the files annotation tools import, checked by hand-computed cases."""

from xml.etree import ElementTree

import numpy as np

from segal_jax.annotation import annotators
from segal_jax.data import _split
from segal_jax.data import classes
from segal_jax.labelling import requests as label_requests
from segal_jax.labelling import returns as label_returns
from segal_jax.labelling import session as human
from segal_jax.state import pool as pool_lib

TABLE = classes.from_json({'ignore': 255, 'classes': [
    {'name': 'soil', 'color': [255, 0, 16], 'thing': False, 'value': 10},
    {'name': 'rust', 'color': [0, 160, 0], 'thing': True, 'value': 20}]})
# A 40 x 20 image; a 10 x 5 rectangle of rust at x 4..14, y 2..7.
COCO = {'images': [{'id': 1, 'file_name': 'images/leaf_1.png', 'width': 40, 'height': 20}],
        'annotations': [{'id': 1, 'image_id': 1, 'category_id': 2,
                         'segmentation': [[4, 2, 14, 2, 14, 7, 4, 7]]}],
        'categories': [{'id': 1, 'name': 'soil'}, {'id': 2, 'name': 'rust'}]}


def test_label_studio_tasks_are_in_percent_of_the_image():
  task, = label_requests.label_studio_tasks(COCO, '/req', cycle=3)
  assert task['data']['image'] == '/data/local-files/?d=req/images/leaf_1.png'
  prediction, = task['predictions']
  assert prediction['model_version'] == 'cycle_03'
  result, = prediction['result']
  assert result['type'] == 'polygonlabels' and result['value']['polygonlabels'] == ['rust']
  assert result['value']['points'] == [[10.0, 10.0], [35.0, 10.0], [35.0, 35.0], [10.0, 35.0]]
  assert (result['original_width'], result['original_height']) == (40, 20)


def test_cvat_xml_polygons():
  root = ElementTree.fromstring(label_requests.cvat_xml(COCO, TABLE))
  assert root.find('version').text == '1.1'
  assert [l.find('name').text for l in root.iter('label')] == ['soil', 'rust']
  image, = root.iter('image')
  assert (image.get('name'), image.get('width'), image.get('height')) == ('leaf_1.png', '40', '20')
  polygon, = image.iter('polygon')
  assert polygon.get('label') == 'rust'
  assert polygon.get('points') == '4.00,2.00;14.00,2.00;14.00,7.00;4.00,7.00'


def test_instructions_name_every_file_and_the_rerun():
  record = {'cycle': 2, 'unit': 'image', 'folder': '/f', 'classes': TABLE.to_json(),
            'items': [{'image': '/f/images/a.jpg', 'label': '/f/labels/a.png'}]}
  text = label_requests.instructions(record, '/w/requests/cycle_02')
  assert '/f/images/a.jpg -> /f/labels/a.png' in text
  assert '/w/requests/cycle_02/returned/' in text and 'rerun the same command' in text


def test_labelling_record_time_per_unit():
  pending = {'cycle': 1, 'unit': 'superpixel', 'requested_at': '2026-01-01T10:00:00+00:00',
             'items': [{'name': 'a', 'superpixels': [1, 4, 5]}, {'name': 'b', 'superpixels': [2]}]}
  label = np.zeros((2, 2), np.uint8)
  outcome = label_returns.Outcome(answers={
      'a': label_returns.Answer('a', label, '/f/labels/a.png', 'png', 'ana',
                                '2026-01-01T10:02:00+00:00', 4),
      'b': label_returns.Answer('b', label, '/r/x.json', 'coco', 'bo',
                                '2026-01-01T10:06:00+00:00', 1)})
  record = human.labelling_record(pending, outcome)
  assert record['returned_at'] == '2026-01-01T10:06:00+00:00'
  assert record['summary'] == {'labelled_units': 4, 'labelling_seconds': 360.0,
                               'seconds_per_unit': 90.0, 'labelling_time': 'request to return',
                               'labelled_by': ['ana', 'bo']}
  assert [(i['name'], i['units'], i['kind']) for i in record['items']] == [
      ('a', 3, 'png'), ('b', 1, 'coco')]


def test_labelling_record_takes_the_annotators_own_time_when_every_answer_has_it():
  pending = {'cycle': 2, 'unit': 'image', 'requested_at': '2026-01-01T10:00:00+00:00',
             'items': [{'name': 'a', 'superpixels': None}, {'name': 'b', 'superpixels': None}]}
  label = np.zeros((2, 2), np.uint8)
  answer = lambda name, who, at, seconds: label_returns.Answer(
      name, label, f'Label Studio task 1 ({name})', 'label_studio', who, at, 4, 0, seconds)
  timed = label_returns.Outcome(answers={
      'a': answer('a', 'ana@x', '2026-01-01T11:00:00+00:00', 41.5),
      'b': answer('b', 'bo@x', '2026-01-01T12:00:00+00:00', 73.0)})
  summary = human.labelling_record(pending, timed)['summary']
  # 41.5 + 73 s of labelling, not the two hours from request to return.
  assert (summary['labelling_seconds'], summary['seconds_per_unit'], summary['labelling_time']) == (
      114.5, 57.25, 'annotators')
  assert [i['seconds'] for i in human.labelling_record(pending, timed)['items']] == [41.5, 73.0]
  timed.answers['b'] = answer('b', 'bo@x', '2026-01-01T12:00:00+00:00', None)
  summary = human.labelling_record(pending, timed)['summary']
  assert (summary['labelling_seconds'], summary['labelling_time']) == (7200.0, 'request to return')


def test_people_take_the_folders_labels_and_request_open_regions():
  labels = np.full((2, 2, 4), 255, np.uint8)
  labels[0, :, :2] = 1  # image 0: its left half is labeled
  split = _split.Split('f', ('a', 'b'), np.zeros((2, 2, 4, 3), np.uint8), labels,
                       np.zeros((2, 2, 4), np.int32), (0, 0, 0), (1, 1, 1), TABLE,
                       labeled=[True, False])
  segments = np.array([[[0, 0, 1, 1], [2, 2, 3, 3]]] * 2)
  people = annotators.get('human')
  pool = pool_lib.PoolLabels(full=[0])
  np.testing.assert_array_equal(people.labels(pool, split, np.array([0, 1])), labels)
  # Superpixels 0 and 2 are labeled; 3 was requested before.
  pool.chosen[0] = [3]
  np.testing.assert_array_equal(people.addable_superpixels(pool, split, segments, 0, 5),
                                [False, True, False, False, False])
  assert people.annotate_superpixels(pool, split, segments, {1: [0, 2]}) == 2
  assert people.cost(pool, people.image_costs(split)) == 1 + 2
  assert people.labeled_counts(pool, split, [0, 1]) == (4, 0)
