"""Tests for segal_jax.training.train with a tiny conv + BatchNorm + dropout model."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segal_jax import errors
from segal_jax import parallel
from segal_jax.training import losses
from segal_jax.training import optim
from segal_jax.training import train

C = 4
H, W = 16, 32
MEAN = (0.5, 0.4, 0.3)
STD = (0.25, 0.25, 0.25)


class TinySeg(nn.Module):
  """Stand-in with the segmentation model's interface."""
  num_classes: int = C

  @nn.compact
  def __call__(self, x, *, train: bool, mc: bool = False):
    x = nn.Conv(8, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.relu(x)
    x = nn.Dropout(0.1, deterministic=not (train or mc))(x)
    return nn.Conv(self.num_classes, (1, 1))(x), {}


def _dataset(n, seed=0):
  """Images whose colour determines the label, so the task is learnable."""
  rng = np.random.default_rng(seed)
  label = rng.integers(0, C, size=(n, H, W)).astype(np.uint8)
  palette = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30]])
  image = palette[label] + rng.integers(-20, 20, size=(n, H, W, 3))
  return {'image': np.clip(image, 0, 255).astype(np.uint8), 'label': label}


def _inputs(crop, **augment):
  return train.InputSpec(MEAN, STD, crop, **augment)


def _source(data):
  def get_batch(ids):
    return {'image': data['image'][ids], 'label': data['label'][ids]}
  return get_batch


def _state(model=None, lr=0.1, total_steps=100, schedule='constant', seed=0):
  tx = optim.make_optimizer(lr=lr, total_steps=total_steps, schedule=schedule)
  return train.create_train_state(model or TinySeg(), jax.random.key(seed),
                                  image_shape=(H, W, 3), tx=tx)


def _reference_confusion(state, data):
  """NumPy normalisation + the model in eval mode + a NumPy confusion count."""
  x = (data['image'] / 255.0 - np.array(MEAN)) / np.array(STD)
  logits, _ = TinySeg().apply({'params': state.params, 'batch_stats': state.batch_stats},
                              jnp.asarray(x, jnp.float32), train=False)
  pred = np.asarray(logits).argmax(-1)
  keep = data['label'] != 255
  expected = np.zeros((C, C), np.int64)
  np.add.at(expected, (data['label'][keep], pred[keep]), 1)
  return expected


def test_train_step_decreases_loss_on_a_fixed_batch():
  state = _state(lr=0.2)
  batch = _dataset(4)
  losses = []
  for t in range(15):
    state, m = train.train_step(state, batch, jax.random.key(t),
                                inputs=_inputs((H, W), scale_range=(1.0, 1.0), flip=False))
    losses.append(float(m['loss']))
  assert float(m['lr']) == pytest.approx(0.2)
  assert losses[-1] < 0.5 * losses[0]
  assert int(state.step) == 15


def test_eval_step_confusion_matches_numpy():
  state = _state()
  data = _dataset(3, seed=1)
  data['label'][0, :4] = 255
  conf = train.eval_step({'params': state.params, 'batch_stats': state.batch_stats},
                         data, apply_fn=state.apply_fn, mean=MEAN, std=STD,
                         num_classes=C)
  np.testing.assert_array_equal(conf, _reference_confusion(state, data))


def test_fit_is_deterministic_and_key_dependent():
  data = _dataset(6)
  kw = dict(schedule=train.Schedule(epochs=2, batch_size=2), inputs=_inputs((12, 24)),
            runtime=train.Runtime(progress=False))
  init = _state()
  a, hist = train.fit(init, _source(data), np.arange(6), key=jax.random.key(1), **kw)
  # The initial state survives (train_step donates buffers, fit trains a copy).
  b, _ = train.fit(init, _source(data), np.arange(6), key=jax.random.key(1), **kw)
  c, _ = train.fit(_state(), _source(data), np.arange(6), key=jax.random.key(2), **kw)
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
  jax.tree.map(np.testing.assert_array_equal, a.batch_stats, b.batch_stats)
  diff = jax.tree.leaves(jax.tree.map(lambda x, y: np.abs(x - y).max(), a.params, c.params))
  assert max(diff) > 0
  assert len(hist['loss']) == 2 and int(a.step) == 2 * 3


def test_fit_with_fewer_images_than_batch_size():
  data = _dataset(3)
  state, hist = train.fit(_state(), _source(data), np.array([0, 2]),
                          schedule=train.Schedule(epochs=2, batch_size=4), key=jax.random.key(0),
                          inputs=_inputs((H, W)), runtime=train.Runtime(progress=False))
  assert int(state.step) == 2 and np.isfinite(hist['loss']).all()


def test_second_fit_and_evaluate_do_not_retrace(monkeypatch):
  # A crop used by no other test, so the first fit must trace the step once;
  # the steps may then be traced at most once in all.
  chex.clear_trace_counter()
  monkeypatch.setattr(train, '_train_step', chex.assert_max_traces(train._train_step, n=1))
  monkeypatch.setattr(train, '_eval_step', chex.assert_max_traces(train._eval_step, n=1))
  train._jitted_eval_step.cache_clear()  # pylint: disable=protected-access
  data = _dataset(4)
  kw = dict(schedule=train.Schedule(epochs=1, batch_size=2), inputs=_inputs((10, 14)),
            runtime=train.Runtime(progress=False))
  model = TinySeg(num_classes=C)
  state, _ = train.fit(_state(model), _source(data), np.arange(4),
                       key=jax.random.key(0), **kw)
  train.evaluate(state, _source(data), 4, batch_size=3, mean=MEAN, std=STD,
                 num_classes=C, progress=False)
  # A fresh state from an equal (not identical) model and a rebuilt optimizer.
  state, _ = train.fit(_state(TinySeg(num_classes=C), seed=5), _source(data),
                       np.arange(4), key=jax.random.key(9), **kw)
  train.evaluate(state, _source(data), 4, batch_size=3, mean=MEAN, std=STD,
                 num_classes=C, progress=False)
  # A trace more (of either step) would have raised: check the wrapper counts.
  with pytest.raises(AssertionError):
    train.jitted_train_step(parallel.default_mesh(), losses.segmentation_loss, (10, 15),
                            (0.5, 2.0), True)(
        jax.tree.map(jnp.copy, state), data, jax.random.key(0), jnp.asarray(MEAN),
        jnp.asarray(STD), jnp.zeros(0))


def test_evaluate_counts_each_image_once():
  data = _dataset(5, seed=2)
  data['label'][3, 0, :5] = 255
  state = _state()
  seen = []

  def source(ids):
    seen.extend(ids.tolist())
    return _source(data)(ids)

  result = train.evaluate(state, source, 5, batch_size=2, mean=MEAN, std=STD,
                          num_classes=C, progress=False)
  assert sorted(seen) == list(range(5))
  expected = _reference_confusion(state, data)
  np.testing.assert_array_equal(result['confusion'], expected)
  assert np.sum(result['confusion']) == 5 * H * W - 5
  tp = np.diag(expected)
  iou = tp / (expected.sum(0) + expected.sum(1) - tp)
  assert result['miou'] == pytest.approx(np.nanmean(iou))
  assert result['pixel_acc'] == pytest.approx(tp.sum() / expected.sum())


def test_fit_reports_non_finite_loss_with_epoch_and_step():
  data = _dataset(4)
  with pytest.raises(errors.UserError, match='epoch 0, step 1'):
    train.fit(_state(lr=float('nan')), _source(data), np.arange(4),
              schedule=train.Schedule(epochs=1, batch_size=2), key=jax.random.key(0),
              inputs=_inputs((H, W)), runtime=train.Runtime(progress=False))


def _overfit_images(tmp_path):
  """The first 8 training scenes of the tiny synthetic_city config (64 x 128)."""
  from segal_jax import data as data_lib  # pylint: disable=import-outside-toplevel
  split = data_lib.load('synthetic_city', 'train', config='tiny', data_dir=str(tmp_path))
  return split.images[:8], split.labels[:8]


@pytest.mark.slow
def test_small_drn_overfits_a_handful_of_images(tmp_path):
  # About 30 s on 2 CPU cores: 200 steps of batch 4 at 64 x 128.
  from segal_jax import models  # pylint: disable=import-outside-toplevel
  image, label = _overfit_images(tmp_path)
  data = {'image': image, 'label': label}
  model = models.DRNSeg(width_multiplier=0.25)
  tx = optim.make_optimizer(lr=0.05, total_steps=1000, schedule='constant')
  state = train.create_train_state(model, jax.random.key(0), image_shape=image.shape[1:],
                                   tx=tx)
  ev = dict(batch_size=8, mean=MEAN, std=STD, num_classes=19, progress=False)
  before = train.evaluate(state, _source(data), 8, **ev)
  state, hist = train.fit(state, _source(data), np.arange(8),
                          schedule=train.Schedule(epochs=100, batch_size=4),
                          key=jax.random.key(0), runtime=train.Runtime(progress=False),
                          inputs=_inputs(image.shape[1:3], scale_range=(1.0, 1.0), flip=False))
  after = train.evaluate(state, _source(data), 8, **ev)
  assert hist['loss'][-1] < 0.5 * hist['loss'][0]
  # The untrained network scores about 0.01 mIoU on these scenes; after 200 steps
  # about 0.39 (pixel accuracy 0.81), with the rare classes still at 0.
  assert after['miou'] > max(0.25, 10 * before['miou'])
  assert after['pixel_acc'] > 0.7


def test_train_step_accepts_partial_label_masks():
  # One allowed class per pixel is the same label as its class id: the same step.
  batch = _dataset(4, seed=3)
  batch['label'][0, :3] = 255
  onehot = ((batch['label'][..., None] == np.arange(C))
            & (batch['label'][..., None] != 255))
  kw = dict(inputs=_inputs((H, W), scale_range=(0.75, 1.25), flip=True))
  state = _state()
  a, ma = train.train_step(jax.tree.map(jnp.copy, state), batch, jax.random.key(5), **kw)
  b, mb = train.train_step(jax.tree.map(jnp.copy, state),
                           {'image': batch['image'], 'label': onehot}, jax.random.key(5), **kw)
  assert float(ma['loss']) == pytest.approx(float(mb['loss']), rel=1e-6)
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
  # Two allowed classes on some pixels: a smaller loss than either one alone.
  labeled = (batch['label'] != 255)[..., None]
  either = onehot | ((np.arange(C) == (batch['label'][..., None] + 1) % C) & labeled)
  _, mc = train.train_step(jax.tree.map(jnp.copy, state),
                           {'image': batch['image'], 'label': either}, jax.random.key(5), **kw)
  assert np.isfinite(float(mc['loss'])) and float(mc['loss']) < float(ma['loss'])


def test_weighted_epochs_draw_in_proportion_to_the_weights():
  indices = np.array([10, 11, 12, 13])
  weights = np.array([1.0, 0.0, 0.0, 3.0])
  draws = np.concatenate([train._epoch_batches(indices, 2, jax.random.key(e), weights).ravel()
                          for e in range(500)])
  assert len(draws) == 500 * 4 and set(draws) <= {10, 13}  # zero weight: never drawn
  share = np.mean(draws == 13)  # 2000 draws of p = 3/4: sd ~0.0097
  assert abs(share - 0.75) < 4.5 * np.sqrt(0.75 * 0.25 / len(draws))
  again = train._epoch_batches(indices, 2, jax.random.key(7), weights)
  np.testing.assert_array_equal(again, train._epoch_batches(indices, 2, jax.random.key(7), weights))
  # Equal weights are the plain epoch: every image once, the same permutation.
  np.testing.assert_array_equal(train._epoch_batches(indices, 2, jax.random.key(3), np.ones(4)),
                                train._epoch_batches(indices, 2, jax.random.key(3)))


def test_input_specs_of_equal_values_are_equal_and_share_a_step():
  a = train.InputSpec(np.array(MEAN), np.array(STD), np.array([H, W]), [1, 1.5], 1)
  b = train.InputSpec(MEAN, STD, (H, W), (1.0, 1.5), True)
  assert a == b and hash(a) == hash(b)
  assert a.crop == (H, W) and type(a.crop[0]) is int and a.flip is True
  # float32 statistics (a data set's) reach the step as the same float32 values.
  f32 = train.InputSpec(np.array(MEAN, np.float32), np.array(STD, np.float32), (H, W))
  np.testing.assert_array_equal(f32.normalisation()[0], np.array(MEAN, np.float32))
  mesh = parallel.default_mesh()
  assert a.step(mesh, losses.segmentation_loss) is b.step(mesh, losses.segmentation_loss)
