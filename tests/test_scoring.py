"""Tests for segal_jax.scoring.scorer, the one scorer, against NumPy references."""

import jax
import numpy as np

from tests import _toy
from segal_jax.scoring import scorer as scoring


def test_true_loss_scores_equal_numpy_cross_entropy():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  model = _toy.ConvModel(5)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (6, 8, 10, 3), dtype=np.uint8)
  labels = rng.integers(0, 5, (6, 8, 10), dtype=np.uint8)
  labels[0, :4] = 255
  labels[3] = 255  # nothing labeled: score 0
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 10, 3)), train=False)
  mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
  idx = np.array([5, 0, 3, 2, 1])
  got = scoring.score_images(model.apply, variables, images, idx, jax.random.key(1),
                             settings=scoring.Settings('true_loss', mean=mean, std=std),
                             batches=scoring.Batches(2, progress=False), labels=labels)['scores']
  x = (images[idx] / 255.0 - np.array(mean)) / np.array(std)
  logits = np.asarray(model.apply(variables, jnp.asarray(x, jnp.float32), train=False)[0],
                      np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  for row, i in enumerate(idx):
    valid = labels[i] != 255
    ce = -np.take_along_axis(logp[row], np.where(valid, labels[i], 0)[..., None], -1)[..., 0]
    want = ce[valid].mean() if valid.any() else 0.0
    np.testing.assert_allclose(got[row], want, rtol=1e-4, atol=1e-6)



def test_true_loss_superpixel_means_equal_numpy_over_labeled_pixels():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  model = _toy.ConvModel(4)
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (3, 6, 8, 3), dtype=np.uint8)
  labels = rng.integers(0, 4, (3, 6, 8), dtype=np.uint8)
  labels[:, :2, :3] = 255  # void inside superpixel 0: left out of its mean, not counted as 0
  labels[1, :3, :4] = 255  # superpixel 0 of image 1 all void: mean 0, count 0
  segments = np.broadcast_to(np.array([[0] * 4 + [1] * 4] * 3 + [[2] * 4 + [3] * 4] * 3),
                             (3, 6, 8)).astype(np.int32)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 6, 8, 3)), train=False)
  idx = np.array([2, 0, 1])
  got = scoring.score_images(model.apply, variables, images, idx, jax.random.key(1),
                             settings=scoring.Settings('true_loss', num_segments=5),
                             batches=scoring.Batches(2, progress=False), labels=labels,
                             segments=segments)
  logits = np.asarray(model.apply(variables, jnp.asarray(images[idx] / 255.0, jnp.float32),
                                  train=False)[0], np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  for row, i in enumerate(idx):
    valid = labels[i] != 255
    ce = -np.take_along_axis(logp[row], np.where(valid, labels[i], 0)[..., None], -1)[..., 0]
    for sp in range(5):
      inside = (segments[i] == sp) & valid
      want = ce[inside].mean() if inside.any() else 0.0
      np.testing.assert_allclose(got['segment_means'][row, sp], want, rtol=1e-4, atol=1e-6)
      assert got['segment_counts'][row, sp] == inside.sum()
  assert got['segment_counts'][2, 0] == 0  # image 1 (row 2): superpixel 0 all void


def test_equal_settings_share_one_compiled_scorer():
  from segal_jax import parallel  # pylint: disable=g-import-not-at-top
  a = scoring.Settings('mc_variance', passes=3, chunk=0, mean=[0.5, 0.4, 0.3], std=(1, 1, 1))
  b = scoring.Settings('mc_variance', passes=3, chunk=None, mean=(0.5, 0.4, 0.3),
                       std=(1.0, 1.0, 1.0))
  assert a == b and hash(a) == hash(b)
  mesh = parallel.default_mesh()
  apply_fn = lambda *args, **kw: None
  assert scoring.jitted(apply_fn, a, mesh) is scoring.jitted(apply_fn, b, mesh)
  assert scoring.jitted(apply_fn, a, mesh) is not scoring.jitted(
      apply_fn, scoring.Settings('mc_variance', passes=4), mesh)


def test_unit_outputs_equal_numpy_dominant_class_and_pooled_features():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  class Toy(nn.Module):  # logits at full resolution, 'stage_8' at half
    @nn.compact
    def __call__(self, x, *, train, mc=False):
      del train, mc
      low = nn.avg_pool(nn.Conv(6, (3, 3))(x), (2, 2), (2, 2))
      return nn.Conv(4, (3, 3))(x), {'features': {'stage_8': low}}

  model = Toy()
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 8, 10, 3)).astype(np.float32)
  segments = rng.integers(0, 5, (2, 8, 10)).astype(np.int32)
  segments[1][segments[1] == 3] = 0  # superpixel 3 of image 1 is empty
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 10, 3)), train=False)
  key = jax.random.key(3)
  settings = scoring.Settings('entropy', num_segments=6, unit_classes=True, unit_features=3)
  got = jax.jit(lambda v, x, s: scoring.unit_outputs(model.apply, v, x, key, s, settings))(
      variables, x, segments)
  logits, extras = model.apply(variables, x, train=False)
  logits, low = np.asarray(logits), np.asarray(extras['features']['stage_8'], np.float64)
  proj = np.asarray(jax.random.normal(jax.random.fold_in(key, scoring._PROJECTION_SALT),  # pylint: disable=protected-access
                                      (6, 3)), np.float64) / np.sqrt(3)
  up = np.repeat(np.repeat(low @ proj, 2, axis=1), 2, axis=2)  # nearest, x2
  pred = logits.argmax(-1)
  for b in range(2):
    for s in range(6):
      inside = segments[b] == s
      if not inside.any():
        assert got['segment_classes'][b, s] == -1
        np.testing.assert_array_equal(got['segment_features'][b, s], 0)
        continue
      votes = np.bincount(pred[b][inside], minlength=4)
      assert got['segment_classes'][b, s] == np.argmax(votes)
      np.testing.assert_allclose(got['segment_features'][b, s], up[b][inside].mean(0),
                                 rtol=1e-4, atol=1e-5)
