"""Selection: top-k semantics, candidate sampling, strategy registry, and the units'
eligibility and budgets on a hand-made pool."""

import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from tests import _toy
from segal_jax.annotation import annotators
from segal_jax import config as config_lib
from segal_jax.errors import UserError
from segal_jax.selection import strategies as selection
from segal_jax.state import pool as pool_lib


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


# --- units: whole-pool superpixel ranking, eligibility and budgets on a hand-made pool ---

V = 255


class _Split:
  """Four copies of the oracle's hand map; image 3 is all void."""

  def __init__(self):
    from tests import test_oracle as hand  # pylint: disable=g-import-not-at-top
    self.labels = np.stack([hand.LABEL] * 3 + [np.full_like(hand.LABEL, V)])
    self.instances = np.stack([hand.INSTANCE] * 4)
    self.segments = np.stack([hand.SEGMENTS] * 4)
    self.ids = [str(i) for i in range(4)]
    self.images, self.mean, self.std = None, (0.5,) * 3, (0.2,) * 3

  def __len__(self):
    return len(self.labels)


SPLIT = _Split()
KEYS = {name: jax.random.key(k) for k, name in enumerate(('candidates', 'score', 'select'))}


def _pool():
  """Image 0 labeled whole; image 1 has superpixels 0 (sky) and 3 (road) annotated."""
  pool = pool_lib.PoolLabels(full=[0])
  annotators.get().annotate_superpixels(pool, SPLIT, SPLIT.segments, {1: [0, 3]})
  return pool


@pytest.fixture
def scored(monkeypatch):
  """Replaces the network's scores: superpixel s of image i scores 100 - 10 i + s,
  image i scores -i."""
  calls = []

  def fake(self, indices, num_segments=0):
    del self
    calls.append(np.asarray(indices).tolist())
    i = np.asarray(indices, np.float32)[:, None]
    if not num_segments:
      return -i[:, 0]
    return 100 - 10 * i + np.arange(num_segments, dtype=np.float32)[None, :]

  monkeypatch.setattr(selection.Request, 'score', fake)
  return calls


def _choose(pool, unit='superpixel', costs=(6, 6, 6, 6), keys=None, **config):
  config = config_lib.ExperimentConfig(**{'al_budget': 3, 'al_candidate_factor': 0.0,
                                          **config})
  request = selection.Request(selection.get('mc_variance'), pool, SPLIT, np.asarray(costs),
                              keys or KEYS, None, None, config, annotators.get(),
                              SPLIT.segments)
  return selection.choose(unit, request)


def _ranked(chosen):
  return [tuple(int(x) for x in name.split('/')) for name in chosen.names]


def test_whole_pool_ranked_and_unaddable_superpixels_excluded(scored):
  chosen = _choose(_pool())
  # Scored: every image not labeled whole that can still gain a label (image 3 is all void).
  assert scored == [[1, 2]]
  # Eligible by hand: image 1 only 2 (car 1) and 4 (car 2): 0 and 3 were chosen,
  # 1 lies in the annotated sky, 5 is road + void; image 2 all six.
  assert chosen.counts == {'scored_units': 8, 'scored_images': 2}
  assert _ranked(chosen) == [(1, 4), (1, 2), (2, 5)]
  assert chosen.picks == {1: [4, 2], 2: [5]}
  np.testing.assert_array_equal(chosen.scores, [94, 92, 85])


def test_sp_candidate_factor_scores_a_subset(scored):
  # Budget 3 of 6 superpixels an image: one image needed, 2 x that drawn from the
  # open images 1, 2, 3 (al_candidate_factor is for images only); 3 adds nothing.
  for key in range(6):
    keys = {**KEYS, 'candidates': jax.random.key(key)}
    drawn = selection.candidates(keys['candidates'], np.array([1, 2, 3]), 2).tolist()
    chosen = _choose(_pool(), keys=keys, sp_candidate_factor=2.0, al_candidate_factor=50.0)
    assert scored[-1] == [i for i in drawn if i != 3]
    assert chosen.counts['scored_images'] == len(scored[-1])


def test_eligible_mask_by_hand():
  got = selection.eligible_superpixels(annotators.get(), _pool(), SPLIT, SPLIT.segments,
                                       np.array([1, 2, 3]), np.array([6, 6, 6, 6]), 7)
  want = np.zeros((3, 7), bool)
  want[0, [2, 4]] = True
  want[1, :6] = True
  np.testing.assert_array_equal(got, want)
  exact = selection.eligible_superpixels(annotators.get(), _pool(), SPLIT, SPLIT.segments,
                                         np.array([1, 3]), np.array([6, 6, 6, 5]), 6,
                                         exact=True)
  np.testing.assert_array_equal(exact, [[True] * 6, [True] * 5 + [False]])


def test_study_exact_reselects_and_scores_every_image(scored):
  chosen = _choose(_pool(), al_study_exact=True)
  assert scored == [[1, 2, 3]]
  assert _ranked(chosen) == [(1, 5), (1, 4), (1, 3)]  # 3 was chosen before, 5 adds no label
  assert chosen.counts == {'scored_units': 18, 'scored_images': 3}


@pytest.mark.parametrize('budget_cost,exact,want', [
    # Image 1 has paid sky 23 and road 7 (study rule). (1, 4) touches {0, 26002}: 2;
    # (1, 2) touches {7, 26001}: 1 new; then (2, 5) touches {1, 7}: 2.
    (3, False, [(1, 4), (1, 2)]),
    (2, False, [(1, 4)]),
    (1, False, [(1, 2)]),          # (1, 4) costs 2 and is skipped
    # (2, 5) {1, 7} and (2, 4) {0, 26002} would make 5; (2, 3) {7} fits: 4.
    (4, False, [(1, 4), (1, 2), (2, 3)]),
    (1, True, [(1, 5)]),           # the study: rank order, (1, 5) pays for void 1
])
def test_cost_budget_by_hand(scored, budget_cost, exact, want):
  del scored
  pool = _pool()
  assert pool.paid == {1: [7, 23]}
  chosen = _choose(pool, al_budget_cost=budget_cost, al_study_exact=exact)
  assert _ranked(chosen) == want
  cost = annotators.get().annotate_superpixels(pool, SPLIT, SPLIT.segments, chosen.picks)
  assert cost <= budget_cost or exact


def test_image_cost_budget_skips_what_does_not_fit(scored):
  del scored
  costs = (5, 3, 4, 2)
  # Ranked 0, 1, 2, 3 (scores -index): 5 fits, 3 does not (8), 4 does not, 2 does (7).
  chosen = _choose(pool_lib.PoolLabels(), 'image', costs, al_budget=0, al_budget_cost=7)
  assert chosen.chosen.tolist() == [0, 3] and chosen.counts['scored_images'] == 4
  chosen = _choose(pool_lib.PoolLabels(), 'image', costs, al_budget=0, al_budget_cost=7,
                   al_study_exact=True)
  assert chosen.chosen.tolist() == [0, 1]  # the study's rule: 5 + 3 crosses 7


def test_candidate_count():
  assert selection.candidate_count(0, 10) == 0
  assert selection.candidate_count(3, 150) == 450
  assert selection.candidate_count(1.5, 3) == 5  # ceil(4.5)


# --- cost-aware ranking: score per expected click ---

@pytest.fixture
def expected(monkeypatch):
  """Expected clicks: superpixel s of image i costs s + 1, image i costs 10 - 3 i."""

  def fake(self, indices, num_segments=0):
    del self
    i = np.asarray(indices, np.float64)
    if not num_segments:
      return 10 - 3 * i
    return np.broadcast_to(np.arange(1, num_segments + 1, dtype=np.float64),
                           (len(i), num_segments))

  monkeypatch.setattr(selection.Request, 'expected_clicks', fake)


def test_score_per_click_orders_superpixels(scored, expected):
  del scored, expected
  # Scores 100 - 10 i + s per (1 + s) clicks. Eligible (hand, as above): (1, 2)
  # 92/3, (1, 4) 94/5, image 2's (2, s) (80 + s)/(1 + s): 80, 40.5, 27.3, 20.8, ...
  chosen = _choose(_pool(), al_rank='score_per_click')
  assert _ranked(chosen) == [(2, 0), (2, 1), (1, 2)]
  np.testing.assert_array_equal(chosen.scores, [80, 81, 92])  # the strategy's scores
  assert _ranked(_choose(_pool(), al_rank='score')) == [(1, 4), (1, 2), (2, 5)]


def test_score_per_click_orders_images(monkeypatch, expected):
  del expected
  monkeypatch.setattr(selection.Request, 'score',
                      lambda self, idx, n=0: np.ones(len(idx), np.float32))
  # Equal scores: the cheapest expected image first (3: 1 click, 2: 4, 1: 7, 0: 10).
  chosen = _choose(pool_lib.PoolLabels(), 'image', al_rank='score_per_click', al_budget=2)
  assert chosen.chosen.tolist() == [3, 2]


def test_true_loss_ranks_superpixels_by_numpy_mean_cross_entropy():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  split = _Split()
  split.images = np.random.default_rng(0).integers(0, 256, split.labels.shape + (3,), np.uint8)
  model = _toy.ConvModel(19)
  variables = model.init(jax.random.key(0), jnp.zeros((1,) + split.images.shape[1:]), train=False)
  config = config_lib.ExperimentConfig(al_budget=100, al_candidate_factor=0.0, eval_batch_size=2,
                                       progress=False)
  pool = _pool()
  request = selection.Request(selection.get('true_loss'), pool, split, np.array([6, 6, 6, 6]),
                              KEYS, model.apply, variables, config, annotators.get(),
                              split.segments)
  chosen = selection.choose('superpixel', request)
  # NumPy: each eligible superpixel's mean cross-entropy over its labeled pixels.
  x = (split.images / 255.0 - np.array(split.mean)) / np.array(split.std)
  logits = np.asarray(model.apply(variables, jnp.asarray(x, jnp.float32), train=False)[0],
                      np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  want = {}
  for i in (1, 2):
    eligible = selection.eligible_superpixels(annotators.get(), pool, split, split.segments,
                                              np.array([i]), np.array([6] * 4), 6)[0]
    valid = split.labels[i] != V
    ce = -np.take_along_axis(logp[i], np.where(valid, split.labels[i], 0)[..., None], -1)[..., 0]
    for sp in np.flatnonzero(eligible):
      inside = (split.segments[i] == sp) & valid
      want[(i, int(sp))] = ce[inside].mean()
  ranked = sorted(want, key=lambda unit: -want[unit])
  assert _ranked(chosen) == ranked
  np.testing.assert_allclose(chosen.scores, [want[u] for u in ranked], rtol=1e-4)
