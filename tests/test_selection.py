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
