"""Early stopping on a held-out slice: the rule, the split, the loss, the loop wiring."""

import dataclasses
import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segal_jax.training import stopping


@pytest.mark.parametrize('history, patience, min_delta, stop, best', [
    ([], 1, 0.0, False, None),
    ([1.0], 1, 0.0, False, 0),
    ([1.0, 0.9, 0.8], 2, 0.0, False, 2),
    ([1.0, 0.9, 0.95, 0.91], 2, 0.0, True, 1),      # two evaluations above 0.9
    ([1.0, 0.9, 0.95, 0.89], 2, 0.0, False, 3),     # the last one improves again
    ([1.0, 0.9, 0.9], 1, 0.0, True, 1),             # equal is not better
    ([1.0, 0.995, 0.994], 2, 0.01, True, 0),        # less than 1% better: not better
    ([1.0, 0.995, 0.994], 2, 0.0, False, 2),
    ([1.0, 0.995, 0.989], 1, 0.01, False, 2),       # 1% below the best, not the previous
    ([math.nan, math.nan], 2, 0.0, True, None),     # never a usable loss
    ([math.nan, 2.0, 3.0], 2, 0.0, False, 1),
])
def test_rule_on_hand_made_histories(history, patience, min_delta, stop, best):
  assert stopping.should_stop(history, patience, min_delta) is stop
  assert stopping.best_index(history, min_delta) == best


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 10.0), max_size=12), st.integers(1, 5))
def test_rule_matches_running_minimum_reference(history, patience):
  # With min_delta 0, an evaluation improves iff it is a strict new minimum.
  new_min = [i == 0 or h < min(history[:i]) for i, h in enumerate(history)]
  last = max((i for i, m in enumerate(new_min) if m), default=-1)
  assert stopping.should_stop(history, patience, 0.0) == (len(history) - 1 - last >= patience)


def test_holdout_split_is_seeded_disjoint_and_sized():
  labeled = np.array([3, 7, 9, 12, 20, 21, 30, 41, 50, 77])
  key = jax.random.key(0)
  trained, held = stopping.holdout_split(labeled, 0.2, key)
  assert len(held) == 2 and len(trained) == 8
  assert sorted(np.concatenate([trained, held]).tolist()) == labeled.tolist()
  again = stopping.holdout_split(labeled, 0.2, key)
  assert trained.tolist() == again[0].tolist() and held.tolist() == again[1].tolist()
  helds = {tuple(stopping.holdout_split(labeled, 0.2, jax.random.key(s))[1]) for s in range(8)}
  assert len(helds) > 1  # the seed chooses the slice
  assert len(stopping.holdout_split(labeled, 0.01, key)[1]) == 1   # at least one held out
  assert len(stopping.holdout_split(labeled, 0.99, key)[0]) == 1   # at least one trained
  assert len(stopping.holdout_split(labeled[:1], 0.5, key)[1]) == 0  # too few to hold out
  assert len(stopping.holdout_split(labeled, 0.0, key)[1]) == 0


def test_eval_every_epochs():
  assert stopping.eval_every_epochs(100, 125) == 1  # big set: every epoch
  assert stopping.eval_every_epochs(100, 5) == 20
  assert stopping.eval_every_epochs(100, 0) == 100


def _apply(variables, x, train=False, mc=False):
  del train, mc
  return x[..., :2] * variables['params']['w'] + variables['params']['b'], {}


def test_heldout_loss_matches_numpy_over_padded_batches():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (5, 4, 6, 3), dtype=np.uint8)
  labels = rng.integers(0, 2, (5, 4, 6)).astype(np.uint8)
  labels[1, :2] = 255
  variables = {'params': {'w': jnp.array([1.5, -0.5]), 'b': jnp.array([0.1, 0.3])}}
  mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
  source = lambda idx: {'image': images[idx], 'label': labels[idx]}
  idx = np.array([0, 1, 3, 4])
  got = stopping.heldout_loss(_apply, variables, source, idx, batch_size=3, mean=mean, std=std)
  x = (images[idx].astype(np.float64) / 255 - mean) / std
  logits = x[..., :2] * [1.5, -0.5] + [0.1, 0.3]
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  lab = labels[idx].astype(np.int64)
  mask = lab != 255
  want = -np.take_along_axis(logp, np.where(mask, lab, 0)[..., None], -1)[..., 0][mask].mean()
  np.testing.assert_allclose(got, want, rtol=1e-5)


@flax.struct.dataclass
class _State:
  params: dict
  batch_stats: dict


def test_tracker_keeps_best_variables_and_round_trips():
  losses = iter([3.0, 2.0, 2.5, 2.4, 9.9])
  make = lambda t: _State({'w': np.full(2, float(t))}, {'m': np.full(1, -float(t))})
  tracker = stopping.Tracker(lambda s: next(losses), every=2, patience=2, min_delta=0.0)
  stops = [tracker.on_epoch_end(e, make(e)) for e in range(8)]
  # Evaluated after epochs 1, 3, 5, 7; the best (2.0) was after epoch 3.
  assert stops == [False] * 7 + [True]
  assert tracker.history == [3.0, 2.0, 2.5, 2.4] and tracker.epochs == [1, 3, 5, 7]
  best = tracker.result(make(99))
  assert best.params['w'].tolist() == [3.0, 3.0] and best.batch_stats['m'].tolist() == [-3.0]
  resumed = stopping.Tracker(lambda s: 0.0, every=2, patience=2, min_delta=0.0)
  tree = tracker.pack(make(7))
  assert resumed.unpack(tree, tracker.to_json()) is tree['train']
  assert resumed.stopped() and resumed.result(make(99)).params['w'].tolist() == [3.0, 3.0]
  fresh = stopping.Tracker(lambda s: 0.0, every=1, patience=1, min_delta=0.0)
  assert fresh.result(make(5)).params['w'].tolist() == [5.0, 5.0]  # nothing evaluated yet


@pytest.mark.slow
def test_loop_stops_early_and_a_resumed_cycle_matches(tmp_path):
  from segal_jax import experiment  # pylint: disable=g-import-not-at-top
  from segal_jax import loop  # pylint: disable=g-import-not-at-top
  from test_loop import TINY  # pylint: disable=g-import-not-at-top
  # A 99% drop is never reached: each cycle stops after evaluations at epochs 0, 1, 2.
  config = dataclasses.replace(
      TINY, data_dir=str(tmp_path / 'tfds'), al_strategies=('random',), al_cycles=2,
      train_epochs=0, train_min_steps=40, stop_holdout=0.25, stop_patience=2,
      stop_min_delta=0.99, stop_every_steps=1, ckpt_every_epochs=1)
  reference = experiment.run(config, str(tmp_path / 'ref'), log=lambda *_: None)
  # Cycle 0: 6 images, 2 held out, 4 trained: one step an epoch, three epochs.
  # Cycle 1: 11 images, 3 held out, 8 trained: two steps an epoch.
  assert [r['train_steps'] for r in reference] == [3, 6]
  strip = lambda rs: [{k: v for k, v in r.items() if 'seconds' not in k} for r in rs]
  for stop_at in (2, 3):  # mid-cycle; at the epoch the cycle converges
    calls = []
    with pytest.raises(loop.Preempted):
      experiment.run(config, str(tmp_path / f'cut{stop_at}'), log=lambda *_: None,
                     should_stop=lambda: calls.append(1) or len(calls) == stop_at)
    resumed = experiment.run(config, str(tmp_path / f'cut{stop_at}'), log=lambda *_: None)
    assert strip(resumed) == strip(reference)
