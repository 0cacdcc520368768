"""Tests for segal_jax.selection.arrange: class weights by hand, and the steps between ranking
and buying on the hand-made pool of test_selection (scores and unit outputs replaced)."""

import dataclasses
import math

import numpy as np
import pytest

from benchmarks import _reference as reference
from segal_jax.annotation import annotators
from segal_jax import config as config_lib
from segal_jax.errors import UserError
from segal_jax.selection import arrange as acquisition
from tests.test_selection import SPLIT, _choose, _pool, _ranked, scored  # pylint: disable=unused-import

S = 6  # superpixels of the hand map


def test_class_weights_by_hand():
  # 6, 3, 1, 0 labeled pixels: shares 0.6, 0.3, 0.1, 0.
  np.testing.assert_allclose(acquisition.class_weights([6, 3, 1, 0]),
                             [math.exp(-0.6), math.exp(-0.3), math.exp(-0.1), 1.0])
  np.testing.assert_array_equal(acquisition.class_weights([0, 0]), [1.0, 1.0])


def test_balance_weights_each_unit_by_its_class():
  w = np.array([0.5, 0.25, 1.0])
  got = acquisition.balance(np.array([[2.0, 4.0], [8.0, 3.0]]), np.array([[0, 1], [-1, 2]]), w)
  np.testing.assert_allclose(got, [[1.0, 1.0], [8.0, 3.0]])


def test_class_counts_of_the_hand_pool():
  # Image 0 labeled whole: road (0) 9 px, sky (10) 6, car (13) 6; image 1 through
  # superpixels 0 (sky: 6 px) and 3 (road instance 7: 9 px).
  counts = acquisition.class_counts(annotators.get(), _pool(), SPLIT, 19)
  want = np.zeros(19, np.int64)
  want[[0, 10, 13]] = [18, 12, 6]
  np.testing.assert_array_equal(counts, want)


# Unit outputs replacing the network's: classes of superpixels 0..5 (both images),
# and 2-d features.
CLASSES = np.array([0, 13, 10, 0, 13, 10])
FEATURES = np.random.default_rng(0).normal(size=(2, S, 2)).astype(np.float32)


@pytest.fixture
def outputs(monkeypatch):
  monkeypatch.setattr(SPLIT, 'num_classes', 19, raising=False)

  def fake(r, cand, num_segments):
    del r
    assert num_segments == S
    n = len(cand)
    return {'segment_classes': np.tile(CLASSES, (n, 1)), 'segment_features': FEATURES[:n]}

  monkeypatch.setattr(acquisition, '_unit_outputs', fake)


# Eligible units (test_selection): image 1 superpixels 2, 4; image 2 all six. The fake
# score of (i, s) is 100 - 10 i + s.
ELIGIBLE = [(1, 2), (1, 4)] + [(2, s) for s in range(S)]


def _score(i, s):
  return 100 - 10 * i + s


def test_class_balance_ranks_by_weighted_score(scored, outputs):
  chosen = _choose(_pool(), al_class_balance=True, al_budget=4)
  # Shares of the labeled pixels: road 18/36, sky 12/36, car 6/36.
  weight = {0: math.exp(-18 / 36), 10: math.exp(-12 / 36), 13: math.exp(-6 / 36)}
  weighted = {u: _score(*u) * weight[CLASSES[u[1]]] for u in ELIGIBLE}
  want = sorted(ELIGIBLE, key=lambda u: -weighted[u])[:4]
  assert _ranked(chosen) == want
  np.testing.assert_allclose(chosen.scores, [weighted[u] for u in want], rtol=1e-6)


def test_per_image_cap(scored, outputs):
  chosen = _choose(_pool(), al_per_image_cap=1, al_budget=3)
  assert _ranked(chosen) == [(1, 4), (2, 5)]  # one per image, the best of each
  chosen = _choose(_pool(), al_per_image_cap=2, al_budget=3)
  assert _ranked(chosen) == [(1, 4), (1, 2), (2, 5)]


def test_kcenter_picks_the_numpy_reference_among_the_best_candidates(scored, outputs):
  chosen = _choose(_pool(), al_diversity='kcenter', al_diversity_factor=2.0, al_budget=3)
  ranked = sorted(ELIGIBLE, key=lambda u: -_score(*u))[:6]  # 2 x budget candidates
  feats = np.stack([FEATURES[i - 1, s] for i, s in ranked])
  want = [ranked[j] for j in reference.kcenter_greedy(feats, 3)]
  assert _ranked(chosen) == want


def test_steps_off_leave_the_ranking_unchanged(scored, outputs):
  assert not acquisition.active(config_lib.ExperimentConfig())
  assert _ranked(_choose(_pool(), al_budget=4)) == sorted(ELIGIBLE, key=lambda u: -_score(*u))[:4]


@pytest.mark.parametrize('change,match', [
    ({'al_diversity': 'badge'}, 'al_diversity'),
    ({'al_per_image_cap': -1}, 'al_per_image_cap'),
    ({'al_feature_dim': 0}, 'al_feature_dim'),
    ({'al_class_balance': True, 'al_unit': 'image'}, 'al_unit=superpixel'),
    ({'al_unit': 'superpixel', 'al_diversity': 'kcenter', 'al_diversity_factor': 0.5},
     'al_diversity_factor'),
    ({'al_unit': 'superpixel', 'al_diversity': 'kcenter', 'al_budget': 0}, 'al_budget'),
])
def test_config_errors_are_one_line(change, match):
  config = dataclasses.replace(config_lib.ExperimentConfig(), **change)
  with pytest.raises(UserError, match=match) as e:
    config_lib.validate(config)
  assert '\n' not in str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize('change', [{'al_class_balance': True}, {'al_per_image_cap': 3},
                                    {'al_diversity': 'kcenter', 'al_diversity_chunk': 7}])
def test_tiny_superpixel_experiment_with_each_step(tmp_path, change):
  import csv  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  from segal_jax import experiment  # pylint: disable=g-import-not-at-top
  from tests.test_loop import TINY  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(TINY, data_dir=str(tmp_path / 'tfds'), al_unit='superpixel',
                               al_strategies=('mc_variance',), al_initial=4, al_budget=10,
                               al_cycles=2, sp_segments=20, sp_workers=1, **change)
  records = experiment.run(config, str(tmp_path / 'run'), log=lambda *_: None)
  assert [r['superpixels'] for r in records] == [0, 10]
  run_dir = experiment.run_dir(str(tmp_path / 'run'), 'mc_variance', 0)
  with open(os.path.join(run_dir, 'selection_cycle01.csv')) as f:
    rows = list(csv.reader(f))[1:]
  names = [r[0] for r in rows]
  assert len(names) == len(set(names)) == 10
  images = [n.split('/')[0] for n in names]
  cap = change.get('al_per_image_cap', 0)
  assert not cap or max(images.count(i) for i in set(images)) <= cap


def test_reorder_picks_what_the_numpy_selection_picks():
  rng = np.random.default_rng(5)
  n, classes = 30, 7
  scores = rng.random((n, S), np.float32)
  cls = rng.integers(0, classes, (n, S))
  feats = rng.normal(size=(n, S, 4)).astype(np.float32)
  counts = rng.integers(0, 100, classes)
  from segal_jax.selection import strategies as selection  # pylint: disable=g-import-not-at-top
  ranked = selection.top_k(scores, scores.size)
  _, got = acquisition.reorder(scores, ranked, classes=cls,
                               weights=acquisition.class_weights(counts), cap=2,
                               features=feats, picks=12, factor=3.0, chunk=5)
  want = reference.select_units(scores.ravel(), cls.ravel(), np.arange(n * S) // S,
                                feats.reshape(-1, 4), counts, 12, 2, 3.0)
  np.testing.assert_array_equal(got[:12], want)
