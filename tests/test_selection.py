"""Selection: top-k semantics, candidate sampling and strategy registry."""

import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from segal_jax import selection
from segal_jax.errors import UserError


def test_top_k_hand_case():
  scores = np.array([0.1, 0.9, 0.5, 0.9, 0.3])
  # 0.9 twice: the lower index wins the tie.
  np.testing.assert_array_equal(selection.top_k(scores, 3), [1, 3, 2])
  exclude = np.array([False, True, False, False, False])
  np.testing.assert_array_equal(selection.top_k(scores, 3, exclude=exclude), [3, 2, 4])


def test_top_k_units_2d_flat_indices():
  scores = np.array([[0.2, 0.8], [0.7, 0.1]])
  labeled = np.array([[False, True], [False, False]])
  np.testing.assert_array_equal(selection.top_k(scores, 2, exclude=labeled), [2, 0])


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 60), elements=st.sampled_from([0.0, 0.25, 0.5, 1.0])),
       st.integers(0, 70), st.data())
def test_top_k_properties(scores, k, data):
  exclude = data.draw(hnp.arrays(bool, scores.shape))
  got = selection.top_k(scores, k, exclude=exclude)
  eligible = np.flatnonzero(~exclude)
  assert len(got) == min(k, len(eligible))
  assert not exclude[got].any()
  assert len(set(got.tolist())) == len(got)
  # Reference: a stable sort of (-score, index) over the eligible units.
  ref = sorted(eligible.tolist(), key=lambda i: (-scores[i], i))[:k]
  np.testing.assert_array_equal(got, ref)


def test_candidates_subset_and_deterministic():
  unlabeled = np.array([3, 5, 8, 13, 21, 34])
  key = jax.random.key(0)
  a = selection.candidates(key, unlabeled, 4)
  b = selection.candidates(key, unlabeled, 4)
  np.testing.assert_array_equal(a, b)
  assert len(a) == 4 and set(a) <= set(unlabeled)
  np.testing.assert_array_equal(selection.candidates(key, unlabeled, 0), unlabeled)
  np.testing.assert_array_equal(selection.candidates(key, unlabeled, 10), unlabeled)


def test_unknown_strategy_is_user_error():
  with pytest.raises(UserError, match='unknown strategy'):
    selection.get('entropyy')


def test_true_loss_scores_equal_numpy_cross_entropy():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  class Toy(nn.Module):
    @nn.compact
    def __call__(self, x, *, train, mc=False):
      del train, mc
      return nn.Conv(5, (3, 3))(x)

  model = Toy()
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (6, 8, 10, 3), dtype=np.uint8)
  labels = rng.integers(0, 5, (6, 8, 10), dtype=np.uint8)
  labels[0, :4] = 255
  labels[3] = 255  # nothing labeled: score 0
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 10, 3)), train=False)
  mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
  idx = np.array([5, 0, 3, 2, 1])
  got = selection.score_images(model.apply, variables, images, idx, jax.random.key(1),
                               strategy=selection.get('true_loss'), passes=1, chunk=None,
                               mean=mean, std=std, batch_size=2, progress=False, labels=labels)
  x = (images[idx] / 255.0 - np.array(mean)) / np.array(std)
  logits = np.asarray(model.apply(variables, jnp.asarray(x, jnp.float32), train=False), np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  for row, i in enumerate(idx):
    valid = labels[i] != 255
    ce = -np.take_along_axis(logp[row], np.where(valid, labels[i], 0)[..., None], -1)[..., 0]
    want = ce[valid].mean() if valid.any() else 0.0
    np.testing.assert_allclose(got[row], want, rtol=1e-4, atol=1e-6)
