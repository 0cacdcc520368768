"""Tests of the pre-annotation formats: COCO polygons, id masks, heat maps."""

import os

import hypothesis
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import matplotlib
import numpy as np
from PIL import Image
import skimage.draw

from segal_jax.data import classes
from segal_jax.formats import annotation_files as annotations


def _vertices(polygon):
  return {(x, y) for x, y in np.asarray(polygon).reshape(-1, 2).tolist()}


def _rasterise(polygons, shape):
  """COCO polygons -> mask, by pixel centres (skimage's rule, shifted by 1/2)."""
  mask = np.zeros(shape, bool)
  for p in polygons:
    xy = np.asarray(p).reshape(-1, 2)
    rr, cc = skimage.draw.polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape)
    mask[rr, cc] ^= True
  return mask


def test_single_pixel_is_a_diamond_in_its_square():
  mask = np.zeros((5, 5), bool)
  mask[2, 3] = True  # Row 2, column 3: the square [3, 4) x [2, 3).
  (polygon,) = annotations.mask_polygons(mask)
  assert _vertices(polygon) == {(3.5, 2.0), (4.0, 2.5), (3.5, 3.0), (3.0, 2.5)}


def test_rectangle_is_an_octagon_without_collinear_vertices():
  mask = np.zeros((5, 6), bool)
  mask[1:3, 1:4] = True  # Covers x in [1, 4), y in [1, 3).
  (polygon,) = annotations.mask_polygons(mask)
  assert len(polygon) == 16
  assert _vertices(polygon) == {(1.5, 1.0), (3.5, 1.0), (4.0, 1.5), (4.0, 2.5), (3.5, 3.0),
                                (1.5, 3.0), (1.0, 2.5), (1.0, 1.5)}


def test_mask_touching_the_border_and_the_whole_image():
  mask = np.ones((3, 4), bool)
  polygons = annotations.mask_polygons(mask)
  assert len(polygons) == 1
  xy = np.asarray(polygons[0]).reshape(-1, 2)
  assert xy[:, 0].min() == 0.0 and xy[:, 0].max() == 4.0
  assert xy[:, 1].min() == 0.0 and xy[:, 1].max() == 3.0
  np.testing.assert_array_equal(_rasterise(polygons, mask.shape), mask)


def test_holes_are_kept_out_and_parts_are_separate():
  mask = np.zeros((9, 9), bool)
  mask[1:8, 1:8] = True
  mask[3:6, 3:6] = False  # A hole ...
  mask[4, 4] = True       # ... with an island in it.
  polygons = annotations.mask_polygons(mask)
  assert len(polygons) == 2  # The ring (one polygon through a cut) and the island.
  np.testing.assert_array_equal(_rasterise(polygons, mask.shape), mask)


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(hnp.arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12))))
def test_polygons_rasterise_back_to_the_mask(mask):
  np.testing.assert_array_equal(_rasterise(annotations.mask_polygons(mask), mask.shape), mask)


def test_coco_annotation_fields():
  mask = np.zeros((6, 8), bool)
  mask[2:5, 3:7] = True
  ann = annotations.coco_annotation(4, 2, mask, score=0.5, superpixel=9)
  assert ann['bbox'] == [3, 2, 4, 3] and ann['area'] == 12
  assert (ann['id'], ann['image_id'], ann['category_id'], ann['iscrowd']) == (4, 2, 1, 0)
  assert (ann['score'], ann['superpixel']) == (0.5, 9)
  doc = annotations.coco_document([{'id': 2}], [ann], 'test')
  assert doc['categories'] == [annotations.CATEGORY] and doc['annotations'] == [ann]


def test_categories_and_class_annotations_by_hand():
  table = classes.from_json({'classes': [
      {'name': 'sea', 'color': [0, 0, 200], 'thing': False, 'value': 5},
      {'name': 'boat', 'color': [250, 0, 0], 'thing': True, 'value': 7}]})
  assert annotations.categories(table) == [
      {'id': 1, 'name': 'sea', 'supercategory': 'stuff', 'color': [0, 0, 200]},
      {'id': 2, 'name': 'boat', 'supercategory': 'thing', 'color': [250, 0, 0]}]
  assert annotations.region_category(table)['id'] == 3
  label = np.array([[1, 0, 0, 1],
                    [0, 0, 255, 1],
                    [0, 1, 0, 0]], np.uint8)
  anns = annotations.label_annotations(label, 7, 10, table, source='model')
  # sea: one annotation of all its pixels; boats: the 8-connected regions in
  # raster order of their first pixel: (0,0); (0,3)+(1,3); (2,1).
  assert [a['id'] for a in anns] == [10, 11, 12, 13]
  assert [(a['category_id'], a['area']) for a in anns] == [(1, 7), (2, 1), (2, 2), (2, 1)]
  assert all(a['image_id'] == 7 and a['source'] == 'model' for a in anns)
  covered = [_rasterise(a['segmentation'], label.shape) for a in anns]
  np.testing.assert_array_equal(covered[0], label == 0)
  np.testing.assert_array_equal(covered[1] | covered[2] | covered[3], label == 1)


def test_id_mask_marks_only_chosen_superpixels():
  segments = np.array([[0, 1, 2], [2, 3, 0]])
  np.testing.assert_array_equal(annotations.id_mask(segments, [2, 0]),
                                [[1, 0, 3], [3, 0, 1]])
  assert annotations.id_mask(segments, [2]).dtype == np.uint8
  big = np.array([[300, 5]])
  out = annotations.id_mask(big, [300])
  assert out.dtype == np.uint16 and out.tolist() == [[301, 0]]


def test_png_round_trip(tmp_path):
  path = os.path.join(tmp_path, 'sub', 'm.png')
  for array in (np.arange(12, dtype=np.uint8).reshape(3, 4),
                np.array([[0, 300], [65535, 1]], np.uint16),
                np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)):
    annotations.write_png(path, array)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), array)
  assert os.listdir(os.path.dirname(path)) == ['m.png']  # No temporary left behind.


def test_heatmap_puts_the_image_beside_the_colours():
  image = np.random.default_rng(0).integers(0, 255, (4, 6, 3), dtype=np.uint8)
  values = np.zeros((4, 6))
  values[1, 2] = 3.0
  values[2, 2] = 1.5
  out = annotations.heatmap(image, values, cmap='viridis', gap=2)
  assert out.shape == (4, 14, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[:, :6], image)
  assert (out[:, 6:8] == 255).all()
  cmap = matplotlib.colormaps['viridis']
  colour = lambda v: np.round(np.asarray(cmap(v)[:3]) * 255)
  np.testing.assert_array_equal(out[1, 8 + 2], colour(1.0))  # The maximum.
  np.testing.assert_array_equal(out[2, 8 + 2], colour(0.5))
  np.testing.assert_array_equal(out[0, 8], colour(0.0))
  fixed = annotations.heatmap(image, values, cmap='viridis', vmax=6.0, gap=2)
  np.testing.assert_array_equal(fixed[1, 8 + 2], colour(0.5))
  blank = annotations.heatmap(image, np.zeros((4, 6)), cmap='viridis', gap=2)
  assert (blank[:, 8:] == colour(0.0)).all()
