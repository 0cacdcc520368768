"""Tests for segal_jax.scoring.uncertainty against plain NumPy formulas."""

import functools
import importlib.util

import flax.linen as nn
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segal_jax import errors
from segal_jax.scoring import uncertainty

# --- NumPy references (written independently of the library) ---------------


def np_entropy(p):
  p = np.asarray(p, np.float64)
  safe = np.where(p > 0, p, 1.0)
  return -np.sum(p * np.log(safe), axis=-1)


def np_mc_mean_entropy(mc):
  return np_entropy(np.mean(np.asarray(mc, np.float64), axis=0))


def np_mc_variance(mc):
  mc = np.asarray(mc, np.float64)
  mean = mc.mean(axis=0)
  return ((mc - mean) ** 2).mean(axis=0).mean(axis=-1)


def np_bald(mc):
  return np_mc_mean_entropy(mc) - np_entropy(mc).mean(axis=0)


def np_margin(p):
  s = np.sort(np.asarray(p, np.float64), axis=-1)
  return 1.0 - (s[..., -1] - s[..., -2])


def np_least_confidence(p):
  return 1.0 - np.max(np.asarray(p, np.float64), axis=-1)


def np_softmax(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


# --- Hypothesis strategies ---------------------------------------------------


@st.composite
def mc_stacks(draw):
  """[D, N, C] float32 probabilities: softmaxes of wide-range logits (exact 0s
  and 1s appear at large scales), sometimes with one-hot rows."""
  # Few distinct shapes keep compilation out of the test time.
  d = draw(st.sampled_from([1, 3, 5]))
  n = 8
  c = draw(st.sampled_from([2, 5, 19]))
  seed = draw(st.integers(0, 2**31 - 1))
  scale = draw(st.sampled_from([0.1, 1.0, 10.0, 1000.0]))
  rng = np.random.default_rng(seed)
  p = np_softmax(rng.normal(size=(d, n, c)) * scale)
  if draw(st.booleans()):
    hot = rng.integers(0, c, size=(d, n))
    rows = rng.random((d, n)) < 0.5
    p[rows] = np.eye(c)[hot[rows]]
  return p.astype(np.float32)


SETTINGS = hypothesis.settings(max_examples=40, deadline=None)


@jax.jit
def _single(p):
  return (uncertainty.entropy(p), uncertainty.margin(p),
          uncertainty.least_confidence(p))


@jax.jit
def _mc(mc):
  return uncertainty.mc_variance(mc), uncertainty.mc_mean_entropy(mc), uncertainty.bald(mc)



@SETTINGS
@hypothesis.given(mc_stacks())
def test_single_pass_measures_match_numpy_and_ranges(mc):
  p = mc[0]
  c = p.shape[-1]
  h, m, lc = map(np.asarray, _single(p))
  for value in (h, m, lc):
    assert value.dtype == np.float32 and np.all(np.isfinite(value))
  np.testing.assert_allclose(h, np_entropy(p), atol=2e-6)
  np.testing.assert_allclose(m, np_margin(p), atol=2e-6)
  np.testing.assert_allclose(lc, np_least_confidence(p), atol=2e-6)
  assert np.all(h >= 0) and np.all(h <= np.log(c) + 1e-6)
  assert np.all(m >= 0) and np.all(m <= 1)
  assert np.all(lc >= 0) and np.all(lc <= 1 - 1 / c + 1e-6)


@SETTINGS
@hypothesis.given(mc_stacks())
def test_mc_measures_match_numpy_and_ranges(mc):
  c = mc.shape[-1]
  var, hm, mi = map(np.asarray, _mc(mc))
  for value in (var, hm, mi):
    assert value.dtype == np.float32 and np.all(np.isfinite(value))
  np.testing.assert_allclose(var, np_mc_variance(mc), atol=1e-6)
  np.testing.assert_allclose(hm, np_mc_mean_entropy(mc), atol=2e-6)
  np.testing.assert_allclose(mi, np.maximum(np_bald(mc), 0), atol=4e-6)
  assert np.all(var >= 0)
  assert np.all(hm >= 0) and np.all(hm <= np.log(c) + 1e-6)
  assert np.all(mi >= 0) and np.all(mi <= hm)


@SETTINGS
@hypothesis.given(mc_stacks())
def test_agreeing_passes_have_zero_variance_and_bald(mc):
  same = np.repeat(mc[:1], 3, axis=0)
  var, _, mi = _mc(same)
  np.testing.assert_array_equal(np.asarray(var), 0.0)
  np.testing.assert_allclose(np.asarray(mi), 0.0, atol=1e-6)


def test_one_hot_and_uniform_extremes():
  c = 5
  hot = jnp.eye(c)[None]  # [1, C, C]: every row one-hot
  for name in ('entropy', 'margin', 'least_confidence'):
    value = np.asarray(uncertainty.MEASURES[name].fn(hot[0]))
    np.testing.assert_array_equal(value, 0.0)
  uniform = jnp.full((3, c), 1.0 / c)
  np.testing.assert_allclose(uncertainty.entropy(uniform), np.log(c), rtol=1e-6)
  np.testing.assert_allclose(uncertainty.margin(uniform), 1.0, rtol=1e-6)
  # Two passes that disagree completely: var = (1/4 * 2 classes) / C.
  mc = jnp.stack([jnp.eye(c)[0], jnp.eye(c)[1]])[:, None]
  np.testing.assert_allclose(uncertainty.mc_variance(mc), [0.5 / c], rtol=1e-6)
  np.testing.assert_allclose(uncertainty.bald(mc), [np.log(2)], rtol=1e-6)
  for fn in (uncertainty.mc_variance, uncertainty.bald, uncertainty.mc_mean_entropy):
    assert np.all(np.isfinite(fn(jnp.concatenate([hot, hot]))))


def test_bf16_input_accumulates_in_float32():
  rng = np.random.default_rng(0)
  p = np_softmax(rng.normal(size=(4, 64, 19)))
  low = jnp.asarray(p, jnp.bfloat16)
  for name, m in uncertainty.MEASURES.items():
    value = m.fn(low if m.needs_mc else low[0])
    assert value.dtype == jnp.float32, name
  # Reference on the bf16-rounded values, in float64.
  rounded = np.asarray(low.astype(jnp.float32))
  np.testing.assert_allclose(uncertainty.mc_variance(low), np_mc_variance(rounded),
                             atol=1e-6)


def test_image_scores_with_and_without_mask():
  rng = np.random.default_rng(1)
  maps = rng.random((3, 4, 5)).astype(np.float32)
  valid = rng.random((3, 4, 5)) < 0.5
  valid[2] = False
  np.testing.assert_allclose(uncertainty.image_scores(maps), maps.mean(axis=(1, 2)),
                             rtol=1e-6)
  got = np.asarray(uncertainty.image_scores(maps, valid))
  for b in range(2):
    np.testing.assert_allclose(got[b], maps[b][valid[b]].mean(), rtol=1e-6)
  assert got[2] == 0.0


def test_unknown_measure_is_a_user_error():
  with pytest.raises(errors.UserError, match='unknown uncertainty measure'):
    uncertainty.mc_forward(TOY.apply, None, jnp.zeros((2, 8, 8, 3)), jax.random.key(0),
                           image_ids=jnp.arange(2), measures=('variance',))


# --- MC forward on a toy trunk/tail model -------------------------------------


class ToySeg(nn.Module):
  """conv/8 -> BN -> relu (trunk) | dropout -> conv 1x1 -> x8 bilinear (tail)."""
  num_classes: int = 4
  rate: float = 0.5

  def setup(self):
    self.conv = nn.Conv(6, (3, 3), strides=(8, 8))
    self.bn = nn.BatchNorm()
    self.drop = nn.Dropout(self.rate)
    self.head = nn.Conv(self.num_classes, (1, 1))

  def trunk(self, x, train=False):
    return nn.relu(self.bn(self.conv(x), use_running_average=not train))

  def tail(self, h, train=False, mc=False, upsample=True):
    del train
    logits = self.head(self.drop(h, deterministic=not mc))
    if upsample:
      b, hh, ww, c = logits.shape
      logits = jax.image.resize(logits, (b, hh * 8, ww * 8, c), 'bilinear')
    return logits

  def __call__(self, x, train=False, mc=False, upsample=True):
    return self.tail(self.trunk(x, train), train=train, mc=mc, upsample=upsample), {}


TOY = ToySeg()


@functools.lru_cache(maxsize=None)
def _forward(passes=3, measures=('mc_variance', 'mc_mean_entropy', 'bald'),
             chunk_size=None, logit_resolution=False, model=TOY):
  """mc_forward jitted once per static configuration."""
  return jax.jit(functools.partial(
      uncertainty.mc_forward, model.apply, passes=passes, measures=measures,
      chunk_size=chunk_size, logit_resolution=logit_resolution))


def _toy_setup(batch, size=(16, 24), seed=0):
  model = TOY
  images = jax.random.normal(jax.random.key(seed), (batch, *size, 3))
  variables = model.init(jax.random.key(1), images)
  # Non-trivial BatchNorm statistics so inference mode matters.
  stats = jax.tree.map(lambda x: x + 0.3, variables['batch_stats'])
  return model, {'params': variables['params'], 'batch_stats': stats}, images


MC_NAMES = ('mc_variance', 'mc_mean_entropy', 'bald')
NP_MC = {'mc_variance': np_mc_variance, 'mc_mean_entropy': np_mc_mean_entropy,
         'bald': lambda mc: np.maximum(np_bald(mc), 0)}


def _full_network_reference(model, variables, images, key, ids, passes):
  """Runs the whole network per image and pass with the documented keys."""
  out = {name: [] for name in MC_NAMES}
  apply = jax.jit(lambda x, k: model.apply(variables, x, train=False, mc=True,
                                           rngs={'dropout': k}))
  for i, image_id in enumerate(ids):
    probs = []
    for d in range(passes):
      k = jax.random.fold_in(jax.random.fold_in(key, image_id), d)
      logits, _ = apply(images[i][None], k)
      probs.append(np_softmax(np.asarray(logits[0])))
    for name in MC_NAMES:
      out[name].append(NP_MC[name](np.stack(probs)))
  return {name: np.stack(v) for name, v in out.items()}


def test_mc_forward_equals_whole_network_run_per_pass():
  model, variables, images = _toy_setup(2)
  key, ids, passes = jax.random.key(7), np.array([5, 11]), 3
  got = _forward(passes)(variables, images, key, image_ids=ids)
  want = _full_network_reference(model, variables, images, key, ids, passes)
  for name in MC_NAMES:
    assert got[name].shape == images.shape[:3] and got[name].dtype == jnp.float32
    np.testing.assert_allclose(got[name], want[name], atol=2e-6, err_msg=name)
  # Dropout is active: the passes do not all agree.
  assert float(jnp.max(got['mc_variance'])) > 1e-4


def test_single_pass_measures_use_the_deterministic_network():
  model, variables, images = _toy_setup(2)
  got = _forward(measures=('entropy', 'margin', 'least_confidence'))(
      variables, images, jax.random.key(0), image_ids=jnp.arange(2))
  probs = np_softmax(np.asarray(model.apply(variables, images)[0]))
  np.testing.assert_allclose(got['entropy'], np_entropy(probs), atol=2e-6)
  np.testing.assert_allclose(got['margin'], np_margin(probs), atol=2e-6)
  np.testing.assert_allclose(got['least_confidence'], np_least_confidence(probs),
                             atol=2e-6)


@pytest.mark.parametrize('chunk_size', [1, 3])
def test_chunked_equals_unchunked(chunk_size):
  _, variables, images = _toy_setup(2)
  args = (variables, images, jax.random.key(3))
  ids = jnp.array([4, 9])
  whole = _forward(7)(*args, image_ids=ids)
  chunked = _forward(7, chunk_size=chunk_size)(*args, image_ids=ids)
  for name in MC_NAMES:
    np.testing.assert_allclose(chunked[name], whole[name], atol=1e-6, err_msg=name)


def test_scores_do_not_depend_on_batch_neighbours():
  _, variables, images = _toy_setup(3)
  key, run = jax.random.key(2), _forward(3)
  together = run(variables, images[:2], key, image_ids=jnp.array([10, 20]))
  other = run(variables, images[2:0:-1], key, image_ids=jnp.array([30, 20]))
  for name in MC_NAMES:
    np.testing.assert_allclose(other[name][1], together[name][1], atol=1e-6)
    assert not np.allclose(other[name][0], together[name][0])


def test_logit_resolution_returns_input_size_maps_close_to_exact():
  _, variables, images = _toy_setup(2)
  args = (variables, images, jax.random.key(0))
  exact = _forward(3)(*args, image_ids=jnp.arange(2))
  approx = _forward(3, logit_resolution=True)(*args, image_ids=jnp.arange(2))
  for name in MC_NAMES:
    assert approx[name].shape == exact[name].shape
    assert np.all(np.isfinite(approx[name]))
    # Same keys, so the maps agree up to where the resize happens.
    r = np.corrcoef(np.ravel(approx[name]), np.ravel(exact[name]))[0, 1]
    assert r > 0.5, (name, r)


def _temp_bytes(passes, chunk_size, batch=1, size=(48, 48)):
  _, variables, images = _toy_setup(batch, size)
  compiled = _forward(passes, chunk_size=chunk_size).lower(variables, images, jax.random.key(0),
                      image_ids=jnp.arange(batch)).compile()
  analysis = compiled.memory_analysis()
  if analysis is None:
    pytest.skip('memory_analysis is unavailable on this backend')
  return analysis.temp_size_in_bytes


def test_chunked_peak_memory_does_not_grow_with_passes():
  # Toy at 48x48, 4 classes: one pass's probabilities are 36 KiB.
  small, large = _temp_bytes(4, 2), _temp_bytes(32, 2)
  assert large <= small * 1.05 + 4096, (small, large)
  # The measurement sees the per-chunk tensors (2 passes' logits at least).
  assert small >= 2 * 48 * 48 * 4 * 4, small


@pytest.mark.skipif(importlib.util.find_spec('segal_jax.models.drn') is None,
                    reason='segal_jax.models.drn not available')
@pytest.mark.slow
def test_mc_forward_on_drnseg_equals_whole_network():
  from segal_jax.models import drn  # pylint: disable=g-import-not-at-top
  model = drn.DRNSeg(width_multiplier=0.25)
  images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  variables = model.init(jax.random.key(1), images, train=False)
  key, ids, passes = jax.random.key(4), np.array([3, 8]), 3

  def forward(chunk_size):
    return jax.jit(functools.partial(
        uncertainty.mc_forward, model.apply, passes=passes, measures=MC_NAMES,
        chunk_size=chunk_size))(variables, images, key, image_ids=ids)

  got, chunked = forward(None), forward(2)
  want = _full_network_reference(model, variables, images, key, ids, passes)
  for name in MC_NAMES:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6,
                               err_msg=name)
    np.testing.assert_allclose(chunked[name], got[name], rtol=1e-5, atol=1e-6,
                               err_msg=name)
