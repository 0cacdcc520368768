"""Tests for segal_jax.annotation.oracle: hand-built maps and a per-instance loop reference."""

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from segal_jax.annotation import clicks
from segal_jax.annotation import oracle
from segal_jax.data import labels as labels_lib

V = 255
# sky (stuff 23 -> train 10) on top; two cars (26001, 26002 -> 13); road (7 -> 0);
# unlabeled (0) and ego vehicle (1 -> void).
INSTANCE = np.array([
    [23, 23, 23, 23, 23, 23],
    [26001, 26001, 7, 7, 26002, 0],
    [26001, 26001, 7, 7, 26002, 0],
    [7, 7, 7, 7, 7, 1],
], np.int32)
LABEL = np.array([
    [10, 10, 10, 10, 10, 10],
    [13, 13, 0, 0, 13, V],
    [13, 13, 0, 0, 13, V],
    [0, 0, 0, 0, 0, V],
], np.uint8)
SEGMENTS = np.array([
    [0, 0, 0, 1, 1, 1],
    [2, 2, 3, 3, 4, 4],
    [2, 2, 3, 3, 4, 4],
    [2, 2, 5, 5, 5, 5],
], np.int32)

CAR1_AND_ROAD = np.array([
    [V, V, V, V, V, V],
    [13, 13, 0, 0, V, V],
    [13, 13, 0, 0, V, V],
    [0, 0, 0, 0, 0, V],
], np.uint8)


def annotate(chosen, annotated=None):
  return oracle.annotate_superpixels(LABEL, INSTANCE, SEGMENTS, np.array(chosen),
                                     annotated)


def test_thing_overlap_labels_the_whole_instance_and_stuff_the_whole_region():
  # Superpixel 2 touches car 26001 and the road: both are labelled entirely.
  partial, ann, cost = annotate([2])
  np.testing.assert_array_equal(partial, CAR1_AND_ROAD)
  np.testing.assert_array_equal(ann, [7, 26001])
  assert cost == 2 and partial.dtype == np.uint8


def test_superpixel_inside_stuff_labels_the_class_region():
  partial, ann, cost = annotate([1])
  want = np.full_like(LABEL, V)
  want[0] = 10
  np.testing.assert_array_equal(partial, want)
  np.testing.assert_array_equal(ann, [23])
  assert cost == 1


def test_void_never_costs_and_stays_unlabelled():
  # Superpixel 4: car 26002 and unlabeled pixels (instance 0).
  partial, ann, cost = annotate([4])
  want = np.full_like(LABEL, V)
  want[1:3, 4] = 13
  np.testing.assert_array_equal(partial, want)
  np.testing.assert_array_equal(ann, [26002])
  assert cost == 1
  # Superpixel 5 after road is known: road costs nothing again, ego vehicle
  # (label id 1, void) is no instance.
  _, ann, _ = annotate([2])
  partial, ann2, cost = annotate([5], ann)
  np.testing.assert_array_equal(partial, CAR1_AND_ROAD)
  np.testing.assert_array_equal(ann2, [7, 26001])
  assert cost == 0


def test_repeated_selection_costs_nothing_and_keeps_earlier_labels():
  _, ann, _ = annotate([2])
  partial, ann2, cost = annotate([2], ann)
  np.testing.assert_array_equal(partial, CAR1_AND_ROAD)
  np.testing.assert_array_equal(ann2, ann)
  assert cost == 0
  # Earlier instances stay labelled when a new one is added.
  partial, ann3, cost = annotate([1], ann)
  want = CAR1_AND_ROAD.copy()
  want[0] = 10
  np.testing.assert_array_equal(partial, want)
  np.testing.assert_array_equal(ann3, [7, 23, 26001])
  assert cost == 1


def test_instance_shared_by_chosen_superpixels_costs_once():
  partial, ann, cost = annotate([2, 3, 5])
  np.testing.assert_array_equal(partial, CAR1_AND_ROAD)
  assert cost == 2


def test_nothing_chosen_or_absent_ids():
  for chosen in ([], [99], [-1]):
    partial, ann, cost = annotate(chosen)
    np.testing.assert_array_equal(partial, np.full_like(LABEL, V))
    assert ann.size == 0 and cost == 0


def test_full_image_costs_every_instance():
  label, ann, cost = oracle.annotate_image(LABEL, INSTANCE)
  np.testing.assert_array_equal(label, LABEL)
  np.testing.assert_array_equal(ann, [7, 23, 26001, 26002])
  assert cost == 4
  assert oracle.count_instances(INSTANCE) == 4
  assert oracle.count_instances(INSTANCE, LABEL) == 4
  # All superpixels at once = the whole image, same cost.
  partial, _, cost = annotate(np.arange(6))
  np.testing.assert_array_equal(partial, LABEL)
  assert cost == 4


def test_label_void_pixels_of_an_instance_are_not_labelled():
  label = LABEL.copy()
  label[1, 0] = V  # one car pixel marked ignore in the ground truth
  partial, _, _ = oracle.annotate_superpixels(label, INSTANCE, SEGMENTS, [2])
  want = CAR1_AND_ROAD.copy()
  want[1, 0] = V
  np.testing.assert_array_equal(partial, want)


def test_large_instance_ids_use_compacted_tables():
  big = np.where(INSTANCE >= 1000, INSTANCE + 10**9, INSTANCE).astype(np.int64)
  partial, ann, cost = oracle.annotate_superpixels(LABEL, big, SEGMENTS, [2],
                                                   [10**9 + 26002])
  want = CAR1_AND_ROAD.copy()
  want[1:3, 4] = 13
  np.testing.assert_array_equal(partial, want)
  np.testing.assert_array_equal(ann, [7, 10**9 + 26001, 10**9 + 26002])
  assert cost == 2


def test_batch_helper_matches_single_calls():
  labels = np.stack([LABEL, LABEL])
  instances = np.stack([INSTANCE, INSTANCE])
  segments = np.stack([SEGMENTS, SEGMENTS])
  partial, ann, costs = oracle.annotate_batch(labels, instances, segments,
                                              [np.array([2]), np.array([4])])
  np.testing.assert_array_equal(partial[0], CAR1_AND_ROAD)
  np.testing.assert_array_equal(ann[1], [26002])
  np.testing.assert_array_equal(costs, [2, 1])


# --- Property test against a per-instance Python loop --------------------------


def loop_reference(label, instance, segments, chosen, annotated):
  """The protocol spelled out one instance at a time."""
  earlier = set(int(a) for a in annotated)
  new = set()
  for inst in np.unique(instance):
    mask = (instance == inst) & (label != V)
    if inst <= 0 or not mask.any():
      continue
    if np.isin(segments[mask], chosen).any() and int(inst) not in earlier:
      new.add(int(inst))
  partial = np.full(label.shape, V, np.uint8)
  for inst in earlier | new:
    mask = (instance == inst) & (label != V)
    partial[mask] = label[mask]
  return partial, sorted(earlier | new), len(new)


ID_POOL = np.array([0, 1, 4, 7, 8, 11, 21, 23, 24001, 24002, 26001, 26002, 26003,
                    29001, 33001])


@st.composite
def scenes(draw):
  seed = draw(st.integers(0, 2**31 - 1))
  rng = np.random.default_rng(seed)
  h, w = draw(st.sampled_from([(6, 8), (16, 24), (9, 31)]))
  block = draw(st.sampled_from([1, 2, 4]))
  gh, gw = -(-h // block), -(-w // block)
  instance = rng.choice(ID_POOL, size=(gh, gw))
  instance = np.kron(instance, np.ones((block, block), np.int64))[:h, :w]
  label_id = np.where(instance >= 1000, instance // 1000, instance)
  label = labels_lib.ID_TO_TRAIN_ID[label_id].copy()
  label[rng.random((h, w)) < 0.05] = V  # ignore pixels inside instances too
  sb = draw(st.sampled_from([2, 3, 5]))
  segments = np.arange(-(-h // sb) * -(-w // sb)).reshape(-(-h // sb), -(-w // sb))
  segments = np.kron(segments, np.ones((sb, sb), np.int64))[:h, :w]
  segments = rng.permutation(segments.max() + 1)[segments].astype(np.int32)
  n = int(segments.max()) + 1
  chosen = rng.choice(n, size=draw(st.integers(0, n)), replace=False)
  present = np.unique(instance)
  annotated = rng.choice(present, size=draw(st.integers(0, 3)))
  annotated = annotated[(annotated > 0)]
  return label, instance.astype(np.int32), segments, chosen, np.unique(annotated)


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(scenes())
def test_matches_per_instance_loop_on_random_maps(scene):
  label, instance, segments, chosen, annotated = scene
  # Earlier annotations follow the protocol: only valid instances get there.
  valid = set(np.unique(instance[(label != V) & (instance > 0)]).tolist())
  annotated = np.array([a for a in annotated if a in valid], np.int64)
  partial, ann, cost = oracle.annotate_superpixels(label, instance, segments, chosen,
                                                   annotated)
  want_partial, want_ann, want_cost = loop_reference(label, instance, segments,
                                                     chosen, annotated)
  np.testing.assert_array_equal(partial, want_partial)
  np.testing.assert_array_equal(ann, want_ann)
  assert cost == want_cost
  # Choosing everything costs exactly the image's instances (minus earlier).
  _, _, all_cost = oracle.annotate_superpixels(label, instance, segments,
                                               np.arange(segments.max() + 1))
  assert all_cost == oracle.count_instances(instance, label) == len(valid)


def test_matches_per_instance_loop_on_synthetic_city():
  scenes_lib = pytest.importorskip('segal_jax.data._scenes')
  from segal_jax.data import synthetic_city  # pylint: disable=g-import-not-at-top
  from segal_jax.scoring import superpixels  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for k in range(3):
    image, label, instance = scenes_lib.render_scene(
        synthetic_city.image_rng(0, 'train', k), 64, 128)
    segments = superpixels.watershed(image)
    chosen = rng.choice(segments.max() + 1, size=10, replace=False)
    got = oracle.annotate_superpixels(label, instance, segments, chosen)
    want = loop_reference(label, instance, segments, chosen, [])
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[2] == want[2] > 0
    # A second round with more superpixels pays only for the new instances.
    more = np.concatenate([chosen, rng.choice(segments.max() + 1, size=10)])
    again = oracle.annotate_superpixels(label, instance, segments, more, got[1])
    want_more = loop_reference(label, instance, segments, more, got[1])
    np.testing.assert_array_equal(again[0], want_more[0])
    assert again[2] == want_more[2]
    assert oracle.count_instances(instance) == oracle.count_instances(instance, label)


# --- cost rules, addable superpixels, budget filling ---

def test_cost_rules_on_the_hand_map():
  # Distinct values of INSTANCE: 0, 1, 7, 23, 26001, 26002 (void ones included).
  costs = oracle.image_costs(INSTANCE, LABEL)
  assert {k: costs[k] for k in ('study', 'instances')} == {'study': 6, 'instances': 4}
  # Clicks: the polygon clicks of sky, road and the two cars (void drawn by nobody).
  assert costs['clicks'] == sum(clicks.polygon_clicks(INSTANCE == i) for i in (23, 7, 26001, 26002))
  # Superpixel 4 touches car 2 and void 0; superpixel 1 sky and void 0 (hand-read).
  assert oracle.touched_ids(INSTANCE, LABEL, SEGMENTS, [4], 'study').tolist() == [0, 26002]
  assert oracle.touched_ids(INSTANCE, LABEL, SEGMENTS, [4], 'instances').tolist() == [26002]
  assert oracle.touched_ids(INSTANCE, LABEL, SEGMENTS, [5], 'study').tolist() == [1, 7]
  table = oracle.superpixel_ids(INSTANCE, LABEL, SEGMENTS, 'study')
  assert {k: v.tolist() for k, v in table.items()} == {
      0: [23], 1: [23], 2: [7, 26001], 3: [7], 4: [0, 26002], 5: [1, 7]}
  with pytest.raises(ValueError):
    oracle.cost_ids(INSTANCE, LABEL, 'pixels')


@hypothesis.settings(deadline=None, max_examples=30)
@hypothesis.given(st.integers(0, 2**16), st.sampled_from(oracle.COST_RULES))
def test_superpixel_ids_match_a_per_superpixel_loop(seed, rule):
  rng = np.random.default_rng(seed)
  instance = rng.choice([0, 1, 7, 23, 26001, 26002, 33000], (6, 7)).astype(np.int32)
  label = rng.choice([0, 13, 255], (6, 7)).astype(np.uint8)
  segments = rng.integers(0, 5, (6, 7))
  table = oracle.superpixel_ids(instance, label, segments, rule)
  for sp in range(5):
    inside = segments == sp
    if rule == 'study':
      want = set(instance[inside].tolist())
    else:
      want = {int(i) for i, l in zip(instance[inside], label[inside]) if i > 0 and l != 255}
    assert set(table.get(sp, np.zeros(0)).tolist()) == want
    assert set(oracle.touched_ids(instance, label, segments, [sp], rule).tolist()) == want


def test_addable_superpixels_excludes_void_and_labeled():
  # Nothing annotated: superpixels 0-5 each hold some instance pixel.
  assert oracle.addable_superpixels(LABEL, INSTANCE, SEGMENTS, [], 7).tolist() == [
      True] * 6 + [False]
  # Sky (23) and road (7) annotated: 0, 1, 3 are inside them; 5 is road + void;
  # 2 still holds car 1, 4 car 2.
  got = oracle.addable_superpixels(LABEL, INSTANCE, SEGMENTS, [7, 23], 6)
  assert got.tolist() == [False, False, True, False, True, False]
  # A superpixel of void pixels only adds nothing.
  segments = SEGMENTS.copy()
  segments[1:3, 5] = 6
  assert not oracle.addable_superpixels(LABEL, INSTANCE, segments, [], 7)[6]
  # Whatever a chosen superpixel touches is annotated: it is never addable again.
  _, annotated, _ = annotate([2, 4])
  got = oracle.addable_superpixels(LABEL, INSTANCE, SEGMENTS, annotated, 6)
  assert not got[2] and not got[4]


def test_fill_budget_hand_cases():
  units = [('a', [1, 2, 3]), ('b', [1, 2]), ('a', [3, 4]), ('c', [9])]
  # 3 (a) + 2 (b) = 5; a's second unit adds only id 4: 6; c does not fit in 6.
  assert oracle.fill_budget(units, 6) == ([0, 1, 2], [3, 2, 1])
  # Budget 4: b does not fit after a (3 + 2 > 4), a's second adds 1 -> 4.
  assert oracle.fill_budget(units, 4) == ([0, 2], [3, 1])
  # The study's rule buys the unit that crosses the budget.
  assert oracle.fill_budget(units, 4, overshoot=True) == ([0, 1], [3, 2])
  # Ids paid in earlier cycles cost nothing.
  assert oracle.fill_budget(units, 2, paid={'a': [1, 2, 3]}) == ([0, 1], [0, 2])
  assert oracle.fill_budget(iter(units), 1) == ([3], [1])


@hypothesis.settings(deadline=None, max_examples=60)
@hypothesis.given(st.lists(st.tuples(st.integers(0, 3), st.lists(st.integers(0, 6), max_size=5)),
                           max_size=12), st.integers(1, 15), st.booleans())
def test_fill_budget_never_exceeds_and_fills_greedily(units, budget, overshoot):
  taken, costs = oracle.fill_budget(units, budget, overshoot=overshoot)
  # Independent reference: replay with plain sets.
  paid, spent, want = {}, 0, []
  for pos, (g, ids) in enumerate(units):
    if spent >= budget:
      break
    new = set(ids) - paid.get(g, set())
    if overshoot or spent + len(new) <= budget:
      paid.setdefault(g, set()).update(new)
      spent += len(new)
      want.append(pos)
  assert taken == want and sum(costs) == spent
  if not overshoot:
    assert spent <= budget
