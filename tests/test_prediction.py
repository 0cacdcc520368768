"""launch.predict: masks in the table's PNG values, overlays, COCO; bad input in one line."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import skimage.draw
import skimage.measure

from segal_jax.data import classes
from segal_jax.errors import UserError
from segal_jax.inference import prediction
from segal_jax import models
from segal_jax.state import checkpoint
from tests.test_folder_scoring import he_variables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 32, 48
MEAN, STD = (0.4, 0.45, 0.5), (0.2, 0.25, 0.3)
# PNG values far from class indices, so a mask written in indices cannot pass.
TABLE = classes.from_json({'ignore': 0, 'classes': [
    {'name': 'soil', 'color': [120, 80, 40], 'thing': False, 'value': 10},
    {'name': 'leaf', 'color': [0, 160, 0], 'thing': False, 'value': 20},
    {'name': 'rust', 'color': [200, 90, 0], 'thing': True, 'value': 30},
    {'name': 'mildew', 'color': [230, 230, 230], 'thing': True, 'value': 40}]})
VALUES = np.array([10, 20, 30, 40])


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp('predict')
  model = models.DRNSeg(arch='drn_d_22', num_classes=4, width_multiplier=0.125,
                        dropout_placement='head')
  variables = he_variables(model, seed=3)
  # Class biases that make every class win somewhere.
  variables['params']['seg']['bias'] = np.array([0.0, 0.3, -0.2, 0.1], np.float32)
  ckpt = str(root / 'model')
  checkpoint.save_model(ckpt, variables, checkpoint.meta_for(
      model, mean=MEAN, std=STD, classes=TABLE, image_size=[H, W]))
  folder = root / 'images'
  folder.mkdir()
  rng = np.random.default_rng(0)
  images = {}
  for name in ('a.png', 'b.jpg'):
    image = (rng.random((H // 4, W // 4, 3)) * 255).astype(np.uint8).repeat(4, 0).repeat(4, 1)
    Image.fromarray(image).save(folder / name, quality=100)
    images[name] = np.asarray(Image.open(folder / name).convert('RGB'))
  Image.fromarray(images['a.png']).resize((2 * W, 2 * H)).save(folder / 'big.png')
  (folder / 'broken.png').write_bytes(b'not a png')
  return dict(model=model, variables=variables, ckpt=ckpt, folder=str(folder), images=images,
              root=root)


def _reference(setup, images):
  """[n, H, W] argmax of the network's logits, normalised here with NumPy."""
  x = (np.stack(images) / 255.0 - np.array(MEAN)) / np.array(STD)
  logits, _ = setup['model'].apply(setup['variables'], jnp.asarray(x, jnp.float32),
                                   train=False)
  return np.argmax(np.asarray(logits), axis=-1)


def _rasterise(polygons, shape):
  mask = np.zeros(shape, bool)
  for p in polygons:
    xy = np.asarray(p).reshape(-1, 2)
    rr, cc = skimage.draw.polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape)  # COCO -> centres
    mask[rr, cc] ^= True
  return mask


def test_masks_overlays_and_coco(setup, tmp_path):
  model, variables, meta = checkpoint.load_model(setup['ckpt'])
  out = str(tmp_path / 'out')
  result = prediction.predict_folder(model, variables, meta, setup['folder'], out,
                                     size=(H, W), batch_size=2, progress=False,
                                     log=lambda *_: None)
  assert result['predicted'] == ['a.png', 'b.jpg', 'big.png']
  assert [n for n, _ in result['unreadable']] == ['broken.png']
  with open(os.path.join(out, 'predictions.json')) as f:
    coco = json.load(f)
  assert [(c['id'], c['name'], c['supercategory']) for c in coco['categories']] == [
      (1, 'soil', 'stuff'), (2, 'leaf', 'stuff'), (3, 'rust', 'thing'), (4, 'mildew', 'thing')]
  by_name = {im['file_name']: im for im in coco['images']}
  seen = set()
  wants = _reference(setup, list(setup['images'].values()))
  for (name, image), want in zip(setup['images'].items(), wants):
    seen.update(np.unique(want).tolist())
    mask = np.asarray(Image.open(os.path.join(out, 'masks', name[:-4] + '.png')))
    np.testing.assert_array_equal(mask, VALUES[want])
    overlay = np.asarray(Image.open(os.path.join(out, 'overlays', name[:-4] + '.png')))
    colour = TABLE.palette[want].astype(np.float64)
    np.testing.assert_allclose(overlay, np.round(0.5 * image + 0.5 * colour), atol=0.5)
    # COCO: each stuff class one annotation, each 8-connected thing region one;
    # the polygons give back the mask.
    im = by_name[name]
    assert (im['height'], im['width']) == (H, W)
    anns = [a for a in coco['annotations'] if a['image_id'] == im['id']]
    for c in range(4):
      mine = [a for a in anns if a['category_id'] == c + 1]
      if c < 2:
        assert len(mine) == int((want == c).any())
      else:
        assert len(mine) == skimage.measure.label(want == c, connectivity=2).max()
      covered = np.zeros((H, W), bool)
      for a in mine:
        region = _rasterise(a['segmentation'], (H, W))
        assert a['area'] == region.sum() and not (covered & region).any()
        covered |= region
      np.testing.assert_array_equal(covered, want == c)
  assert len(seen) >= 2
  assert len({a['id'] for a in coco['annotations']}) == len(coco['annotations'])
  big = np.asarray(Image.open(os.path.join(out, 'masks', 'big.png')))
  assert big.shape == (2 * H, 2 * W) and set(np.unique(big)) <= set(VALUES.tolist())


def test_a_model_without_class_names_is_refused(setup, tmp_path):
  model, variables, meta = checkpoint.load_model(setup['ckpt'])
  with pytest.raises(UserError, match='no names'):
    prediction.predict_folder(model, variables, {**meta, 'classes': None}, setup['folder'],
                              str(tmp_path / 'out'), size=(H, W), progress=False)


@pytest.mark.slow
def test_command_line_bad_input_is_one_line(setup, tmp_path):
  other = tmp_path / 'classes.json'
  other.write_text(json.dumps(classes.CITYSCAPES.to_json()))
  proc = subprocess.run(
      [sys.executable, '-m', 'launch.predict', f'--checkpoint={setup["ckpt"]}',
       f'--images={setup["folder"]}', f'--out={tmp_path / "out"}', f'--classes={other}'],
      cwd=ROOT, capture_output=True, text=True, check=False)
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: the checkpoint at'), proc.stderr
  assert '4 classes (soil, leaf, rust, mildew)' in lines[0] and '19 classes' in lines[0]
  assert not (tmp_path / 'out').exists()
