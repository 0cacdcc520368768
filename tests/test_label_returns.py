"""label_returns: every returned file checked, one line per problem, nothing lost."""

import json
import os

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
import pytest

from segal_jax.data import classes
from segal_jax.labelling import returns as label_returns

TABLE = classes.from_json({'ignore': 255, 'classes': [
    {'name': 'soil', 'color': [90, 60, 30], 'thing': False, 'value': 10},
    {'name': 'leaf', 'color': [0, 160, 0], 'thing': False, 'value': 20},
    {'name': 'rust', 'color': [200, 90, 0], 'thing': True, 'value': 30}]})
H, W = 8, 10


def _png(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.asarray(array, np.uint8)).save(path)


def _setup(tmp_path, *, regions=False):
  """A folder with images a, b, c, d; c labeled before; a and b requested."""
  folder, req = str(tmp_path / 'folder'), str(tmp_path / 'req')
  for n in 'abcd':
    _png(os.path.join(folder, 'images', n + '.png'), np.zeros((H, W, 3)))
  _png(os.path.join(folder, 'labels', 'c.png'), np.full((H, W), 10))
  items = []
  for i, n in enumerate('ab'):
    item = {'name': n, 'index': i, 'label': os.path.join(folder, 'labels', n + '.png'),
            'height': H, 'width': W, 'superpixels': None, 'copy': f'images/{n}.png'}
    if regions:  # the region is the left half, superpixel 0
      mask = np.zeros((H, W), np.uint8)
      mask[:, :W // 2] = 1
      _png(os.path.join(req, 'masks', n + '.png'), mask)
      item.update(superpixels=[0], mask=f'masks/{n}.png')
    items.append(item)
  os.makedirs(os.path.join(req, label_returns.RETURNED), exist_ok=True)
  request = {'cycle': 1, 'unit': 'superpixel' if regions else 'image',
             'requested_at': '2026-01-01T00:00:00+00:00', 'classes': TABLE.to_json(),
             'items': items, 'labeled': ['c']}
  return folder, req, request


def _one_line(lines):
  assert lines and all('\n' not in line for line in lines)


def test_good_pngs_are_answers(tmp_path):
  folder, req, request = _setup(tmp_path)
  a = np.full((H, W), 20, np.uint8)
  a[0, 0] = 255
  _png(os.path.join(folder, 'labels', 'a.png'), a)
  _png(os.path.join(folder, 'labels', 'b.png'), np.full((H, W), 30))
  out = label_returns.check(request, req, folder)
  assert out.complete
  np.testing.assert_array_equal(out.answers['a'].label, a)
  assert out.answers['a'].pixels == H * W - 1 and out.answers['a'].kind == 'png'


@pytest.mark.parametrize('case', ['size', 'value', 'corrupt', 'rgb'])
def test_a_bad_png_is_one_line_and_not_taken(tmp_path, case):
  folder, req, request = _setup(tmp_path)
  path = os.path.join(folder, 'labels', 'a.png')
  if case == 'size':
    _png(path, np.full((H, W + 1), 20))
  elif case == 'value':
    _png(path, np.full((H, W), 21))
  elif case == 'rgb':
    _png(path, np.zeros((H, W, 3)))
  else:
    with open(path, 'wb') as f:
      f.write(b'\x89PNG not really')
  _png(os.path.join(folder, 'labels', 'b.png'), np.full((H, W), 30))
  out = label_returns.check(request, req, folder)
  assert len(out.problems) == 1 and 'labels/a.png' in out.problems[0]
  _one_line(out.problems)
  assert 'a' not in out.answers and out.unanswered == ['a: it is not labeled yet (' + path + ')']


def test_unanswered_unrequested_and_lost(tmp_path):
  folder, req, request = _setup(tmp_path)
  _png(os.path.join(folder, 'labels', 'a.png'), np.full((H, W), 20))
  _png(os.path.join(folder, 'labels', 'd.png'), np.full((H, W), 20))  # not requested
  os.remove(os.path.join(folder, 'labels', 'c.png'))  # labeled before, gone
  out = label_returns.check(request, req, folder)
  assert len(out.problems) == 2
  assert out.problems[0].startswith('labels/d.png: d was not requested')
  assert out.problems[1].startswith('labels/c.png, labeled before cycle 1, is gone')
  assert len(out.unanswered) == 1 and out.unanswered[0].startswith('b:')
  _one_line(out.problems + out.unanswered)


def _coco(path, images, anns, categories=None):
  cats = categories or [{'id': i + 7, 'name': c.name} for i, c in enumerate(TABLE.classes)]
  with open(path, 'w') as f:
    json.dump({'images': images, 'annotations': anns, 'categories': cats}, f)


def test_coco_polygons_and_rle_decode(tmp_path):
  folder, req, request = _setup(tmp_path)
  rle_mask = np.zeros((H, W), np.uint8, order='F')
  rle_mask[2:5, 3:9] = 1
  rle = mask_utils.encode(np.asfortranarray(rle_mask))
  rle['counts'] = rle['counts'].decode()
  images = [{'id': 1, 'file_name': 'images/1f2e3d-a.png', 'height': H, 'width': W},
            {'id': 2, 'file_name': 'b.png', 'height': H, 'width': W},
            {'id': 3, 'file_name': 'd.png', 'height': H, 'width': W}]  # exported, untouched
  anns = [{'id': 1, 'image_id': 1, 'category_id': 8, 'iscrowd': 0, 'area': 80,
           'bbox': [0, 0, W, H], 'segmentation': [[0, 0, W, 0, W, H, 0, H]]},
          {'id': 2, 'image_id': 2, 'category_id': 9, 'iscrowd': 1, 'area': 18,
           'bbox': [3, 2, 6, 3], 'segmentation': rle}]
  _coco(os.path.join(req, 'returned', 'export.json'), images, anns)
  out = label_returns.check(request, req, folder)
  assert out.complete, out.problems + out.unanswered
  np.testing.assert_array_equal(out.answers['a'].label, np.full((H, W), 20))
  np.testing.assert_array_equal(out.answers['b'].label, np.where(rle_mask > 0, 30, 255))
  assert out.answers['b'].kind == 'coco' and out.answers['b'].pixels == 18


@pytest.mark.parametrize('case', ['category', 'unrequested', 'corrupt', 'size'])
def test_a_bad_coco_file_is_not_taken_at_all(tmp_path, case):
  folder, req, request = _setup(tmp_path)
  whole = [[0, 0, W, 0, W, H, 0, H]]
  images = [{'id': 1, 'file_name': 'a.png', 'height': H, 'width': W},
            {'id': 2, 'file_name': 'b.png', 'height': H, 'width': W}]
  anns = [{'id': k + 1, 'image_id': k + 1, 'category_id': 7, 'iscrowd': 0, 'area': 80,
           'bbox': [0, 0, W, H], 'segmentation': whole} for k in range(2)]
  cats = None
  if case == 'category':
    cats = [{'id': 7, 'name': 'mildew'}]
  elif case == 'unrequested':
    images.append({'id': 3, 'file_name': 'd.png', 'height': H, 'width': W})
    anns.append({**anns[0], 'id': 3, 'image_id': 3})
  elif case == 'size':
    images[1]['height'] = H + 2
  path = os.path.join(req, 'returned', 'export.json')
  _coco(path, images, anns, cats)
  if case == 'corrupt':
    with open(path, 'w') as f:
      f.write('{"images": [')
  out = label_returns.check(request, req, folder)
  assert len(out.problems) == 1 and 'returned/export.json' in out.problems[0]
  _one_line(out.problems)
  assert not out.answers and len(out.unanswered) == 2


def test_regions_accept_partial_labels_and_keep_earlier_ones(tmp_path):
  folder, req, request = _setup(tmp_path, regions=True)
  previous = np.full((H, W), 255, np.uint8)
  previous[:, -2:] = 30  # labeled in an earlier cycle
  _png(os.path.join(req, 'previous', 'a.png'), previous)
  request['items'][0]['previous'] = 'previous/a.png'
  _png(os.path.join(folder, 'labels', 'a.png'), previous)
  returned = np.full((H, W), 255, np.uint8)
  returned[:3, :W // 2] = 20  # part of the region only
  _png(os.path.join(folder, 'labels', 'b.png'), np.where(np.arange(W) >= W // 2, 10, 255)
       [None].repeat(H, 0))  # outside the region only: not an answer
  out = label_returns.check(request, req, folder)
  assert not out.problems and [u[0] for u in out.unanswered] == ['a', 'b']
  _png(os.path.join(folder, 'labels', 'a.png'), returned)  # earlier labels erased by the tool
  _png(os.path.join(folder, 'labels', 'b.png'), returned)
  out = label_returns.check(request, req, folder)
  assert out.complete
  np.testing.assert_array_equal(out.answers['a'].label, np.where(returned == 255, previous,
                                                                 returned))
  assert out.answers['a'].pixels == 3 * (W // 2)


def test_a_whole_image_answer_to_a_region_request_is_cut_to_the_regions(tmp_path):
  folder, req, request = _setup(tmp_path, regions=True)
  previous = np.full((H, W), 255, np.uint8)
  previous[:2, :3] = 30  # labeled in an earlier cycle, inside the region
  previous[:, -1] = 10  # and outside it
  _png(os.path.join(req, 'previous', 'a.png'), previous)
  request['items'][0]['previous'] = 'previous/a.png'
  whole = np.full((H, W), 20, np.uint8)  # every pixel labeled, earlier ones changed
  _png(os.path.join(folder, 'labels', 'a.png'), whole)
  _png(os.path.join(folder, 'labels', 'b.png'), whole)
  out = label_returns.check(request, req, folder)
  assert out.complete, out.problems + out.unanswered
  expected_a = previous.copy()  # by hand: new labels on the unlabeled pixels of the left half
  expected_a[2:, :W // 2] = 20
  expected_a[:2, 3:W // 2] = 20
  np.testing.assert_array_equal(out.answers['a'].label, expected_a)
  assert out.answers['a'].pixels == H * (W // 2) - 6
  assert out.answers['a'].cut == H * W - (H * (W // 2) - 6)
  expected_b = np.full((H, W), 255, np.uint8)
  expected_b[:, :W // 2] = 20
  np.testing.assert_array_equal(out.answers['b'].label, expected_b)
  assert (out.answers['b'].pixels, out.answers['b'].cut) == (H * W // 2, H * W // 2)
  assert [n.split(':')[0] for n in out.notes] == ['a', 'b']
  assert f'{H * W // 2} labeled pixel(s) outside the requested regions' in out.notes[1]
  _one_line(out.notes)


def test_a_coco_export_with_images_of_earlier_cycles_answers_the_requested_ones(tmp_path):
  folder, req, request = _setup(tmp_path)
  whole = [[0, 0, W, 0, W, H, 0, H]]
  images = [{'id': k + 1, 'file_name': f'{n}.png', 'height': H, 'width': W}
            for k, n in enumerate('abc')]  # c: labeled in an earlier cycle
  anns = [{'id': k + 1, 'image_id': k + 1, 'category_id': 7 + k, 'iscrowd': 0, 'area': H * W,
           'bbox': [0, 0, W, H], 'segmentation': whole} for k in range(3)]
  _coco(os.path.join(req, 'returned', 'project.json'), images, anns)
  out = label_returns.check(request, req, folder)
  assert out.complete, out.problems + out.unanswered
  np.testing.assert_array_equal(out.answers['a'].label, np.full((H, W), 10))
  np.testing.assert_array_equal(out.answers['b'].label, np.full((H, W), 20))
  assert 'c' not in out.answers
  assert out.notes == ['returned/project.json: 1 image(s) labeled in earlier cycles left as '
                       'they are (c.png)']


def test_a_label_under_a_new_name_for_a_withdrawn_request_says_renamed(tmp_path):
  folder, req, request = _setup(tmp_path)
  request = dict(request, items=request['items'][1:], withdrawn=['a'])
  _png(os.path.join(folder, 'labels', 'b.png'), np.full((H, W), 20))
  _png(os.path.join(folder, 'labels', 'a2.png'), np.full((H, W), 20))
  out = label_returns.check(request, req, folder)
  assert out.problems == [
      'labels/a2.png: a2 was not requested in cycle 1; a left the folder and a renamed image '
      'counts as a removed image plus a new one, so this does not answer its request: rename '
      'the image and its label back to answer it, or move it out of labels/ (only requested '
      'images are taken in)']
