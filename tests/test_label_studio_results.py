"""Label Studio results to label arrays: polygons against pycocotools and
hand-drawn masks, brushes against hand-drawn masks, the configuration from a
class table."""

from xml.etree import ElementTree

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from segal_jax.data import classes
from segal_jax import errors
from segal_jax.labelling import brush_rle
from segal_jax.labelling import label_studio_results as results

TABLE = classes.from_json({'ignore': 250, 'classes': [
    {'name': 'soil', 'color': [120, 80, 40], 'thing': False, 'value': 3},
    {'name': 'weed', 'color': [0, 200, 0], 'thing': True, 'value': 17},
    {'name': 'stone', 'color': [128, 128, 128], 'thing': True, 'value': 40}]})


def _percent(points_px, height, width):
  return [[100.0 * x / width, 100.0 * y / height] for x, y in points_px]


def _coco(points_px, height, width):
  flat = np.asarray(points_px, np.float64).reshape(-1).tolist()
  return coco_mask.decode(coco_mask.frPyObjects([flat], height, width))[..., 0].astype(bool)


def test_rectangle_polygon_covers_the_pixels_inside_its_corners():
  h, w = 10, 12
  corners = [(2, 3), (7, 3), (7, 9), (2, 9)]  # x, y in pixels
  expected = np.zeros((h, w), bool)
  expected[3:9, 2:7] = True
  got = results.polygon_mask(_percent(corners, h, w), h, w)
  assert np.array_equal(got, expected)
  assert np.array_equal(got, _coco(corners, h, w))


def test_l_shaped_polygon_equals_pycocotools():
  h, w = 16, 20
  corners = [(1, 1), (12, 1), (12, 5), (6, 5), (6, 14), (1, 14)]
  assert np.array_equal(results.polygon_mask(_percent(corners, h, w), h, w),
                        _coco(corners, h, w))


def _distance_to_outline(x, y, pts):
  """[N] distances of points (x, y) to the closed polyline pts [K, 2]."""
  a, b = pts, np.roll(pts, -1, axis=0)
  p = np.stack([x, y], 1)[:, None, :]
  ab = b - a
  t = np.clip(((p - a) * ab).sum(-1) / (ab * ab).sum(-1), 0, 1)
  return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1).min(1)


def test_random_polygons_differ_from_pycocotools_only_on_the_boundary():
  rng = np.random.default_rng(0)
  h, w = 40, 60
  differ = total = 0
  for _ in range(50):
    k = rng.integers(3, 9)
    angle = np.sort(rng.uniform(0, 2 * np.pi, k))
    radius = rng.uniform(5, 18, k)
    cx, cy = rng.uniform(15, 45), rng.uniform(12, 28)
    pts = np.stack([cx + radius * np.cos(angle), cy + radius * np.sin(angle)], 1)
    ours = results.polygon_mask(_percent(pts, h, w), h, w)
    ref = _coco(pts, h, w)
    rows, cols = np.nonzero(ours != ref)
    assert (_distance_to_outline(cols + 0.5, rows + 0.5, pts) <= 1.0).all()
    differ += (ours != ref).sum()
    total += ref.sum()
  assert differ / total < 0.05


def _brush(mask, name):
  h, w = mask.shape
  return {'type': 'brushlabels', 'from_name': 'brush', 'to_name': 'image',
          'original_width': w, 'original_height': h,
          'value': {'format': 'rle', 'rle': brush_rle.encode(mask), 'brushlabels': [name]}}


def _polygon(points_px, name, h, w):
  return {'type': 'polygonlabels', 'from_name': 'label', 'to_name': 'image',
          'original_width': w, 'original_height': h,
          'value': {'points': _percent(points_px, h, w), 'polygonlabels': [name]}}


def test_label_of_paints_regions_in_order_in_png_values():
  h, w = 6, 8
  weed = np.zeros((h, w), bool)
  weed[1:4, 1:4] = True
  result = [_brush(np.ones((h, w), bool), 'soil'), _brush(weed, 'weed'),
            _polygon([(5, 0), (8, 0), (8, 2), (5, 2)], 'stone', h, w)]
  expected = np.full((h, w), 3, np.uint8)
  expected[1:4, 1:4] = 17
  expected[0:2, 5:8] = 40
  assert np.array_equal(results.label_of(result, TABLE, h, w), expected)


def test_label_of_nothing_drawn_is_the_ignore_value():
  assert np.array_equal(results.label_of([], TABLE, 2, 3), np.full((2, 3), 250, np.uint8))
  comment = {'type': 'textarea', 'from_name': 'notes', 'value': {'text': ['blurry']}}
  assert np.array_equal(results.label_of([comment], TABLE, 2, 3), np.full((2, 3), 250, np.uint8))


def test_brush_results_are_one_region_per_class_present():
  label = np.array([[0, 0, 2], [255, 2, 2]], np.uint8)
  out = results.brush_results(label, TABLE)
  assert [r['value']['brushlabels'] for r in out] == [['soil'], ['stone']]
  assert np.array_equal(brush_rle.decode(out[1]['value']['rle'], 2, 3),
                        [[False, False, True], [False, True, True]])
  assert np.array_equal(results.label_of(out, TABLE, 2, 3), [[3, 3, 40], [250, 40, 40]])


def test_unknown_class_is_one_line_naming_the_class_and_the_choices():
  result = [_brush(np.ones((2, 2), bool), 'truck')]
  with pytest.raises(errors.UserError) as e:
    results.label_of(result, TABLE, 2, 2, where='task 7 (a.png)')
  assert "task 7 (a.png), region 1 has the class 'truck'" in str(e.value)
  assert 'soil, weed, stone' in str(e.value) and '\n' not in str(e.value)


def test_region_drawn_on_another_size_or_with_another_tool_is_refused():
  with pytest.raises(errors.UserError, match='drawn on a 3x2 image, but the image is 4x2'):
    results.label_of([_brush(np.ones((2, 3), bool), 'soil')], TABLE, 2, 4)
  box = {'type': 'rectanglelabels', 'from_name': 'label',
         'value': {'rectanglelabels': ['soil']}}
  with pytest.raises(errors.UserError, match="'rectanglelabels' region"):
    results.label_of([box], TABLE, 2, 2)


def test_labelling_config_lists_the_table_in_both_tools():
  view = ElementTree.fromstring(results.labelling_config(TABLE))
  assert view.find('Image').get('value') == '$image'
  for tag, name in (('PolygonLabels', 'label'), ('BrushLabels', 'brush')):
    group = view.find(tag)
    assert (group.get('name'), group.get('toName')) == (name, 'image')
    assert [(l.get('value'), l.get('background')) for l in group.findall('Label')] == [
        ('soil', '#785028'), ('weed', '#00c800'), ('stone', '#808080')]
