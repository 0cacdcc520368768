"""The active-learning loop end to end on the tiny synthetic set."""

import csv
import dataclasses
import functools
import os
import types

import numpy as np
import pytest

from segal_jax import config as config_lib
from segal_jax.data import classes
from segal_jax.errors import UserError
from segal_jax import experiment
from segal_jax import loop
from segal_jax import models
from segal_jax.selection import strategies as selection
from segal_jax.state import checkpoint
from segal_jax.state import pool as pool_lib
from segal_jax.state import run_state

TINY = config_lib.ExperimentConfig(
    dataset='synthetic_city', dataset_config='tiny', width_multiplier=0.25,
    train_epochs=1, train_min_steps=2, train_batch_size=4, train_crop=(32, 64),
    eval_batch_size=8, al_strategies=('random', 'mc_variance'), al_seeds=(0,),
    al_initial=6, al_budget=5, al_cycles=3, mc_passes=3, progress=False)


def _saved_state(run_dir, config):
  """The run state as saved (fingerprint, pool, records), read back through run_state."""
  state = run_state.load_run_state(run_dir, config.fingerprint())
  return {'fingerprint': state.fingerprint, 'pool': state.pool, 'records': state.records}


def test_train_schedule_epochs_and_steps():
  c = dataclasses.replace(TINY, train_epochs=3, train_min_steps=0, train_batch_size=4)
  assert loop.train_schedule(c, 10) == (3, 6)      # 2 steps an epoch
  assert loop.train_schedule(c, 3) == (3, 3)       # fewer images than a batch: 1 step
  c = dataclasses.replace(c, train_min_steps=20)
  assert loop.train_schedule(c, 10) == (10, 20)    # more epochs to reach the minimum


def test_train_length_follows_the_cost():
  c = dataclasses.replace(TINY, train_epochs=50, train_min_steps=0, train_batch_size=8)
  # 50 whole images (cost 10 each) and 100 partly labeled ones whose labels
  # cost 650, 50 images of the mean cost 13: worth 100 images.
  costs = np.array([10] * 50 + [16] * 50 + [13] * 900)
  pool = pool_lib.PoolLabels(full=list(range(50)),
                             annotated={i: [7] for i in range(100, 200)},
                             paid={i: list(range(6)) for i in range(100, 200)})
  pool.paid[100].append(6)
  cost = 500 + 601
  assert loop.length_worth(pool, cost, costs) == pytest.approx((50 + 601 / 13.0) / 150)
  worth = loop.length_worth(pool, 500 + 650, costs)
  assert worth == pytest.approx(100 / 150)
  # Whole images alone are worth one each, whatever they cost.
  assert loop.length_worth(pool_lib.PoolLabels(full=[0, 60]), 26, costs) == 1.0
  assert loop.train_schedule(c, 150, worth=worth) == (50, 50 * 18)  # 'images': unchanged
  c = dataclasses.replace(c, train_length='cost')
  assert loop.train_schedule(c, 150, worth=worth) == (33, 33 * 18)  # ~ 50 epochs of 100 images
  assert loop.train_schedule(c, 100, worth=1.0) == (50, 50 * 12)
  c = dataclasses.replace(c, train_min_steps=1000)
  assert loop.train_schedule(c, 150, worth=worth) == (56, 56 * 18)  # the minimum still holds


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  workdir = str(tmp_path_factory.mktemp('run'))
  config = dataclasses.replace(TINY, data_dir=data_dir)
  records = experiment.run(config, workdir, log=lambda *_: None)
  return config, workdir, records


@pytest.mark.slow
def test_experiment_outputs_and_budgets(tiny_run):
  config, workdir, records = tiny_run
  assert len(records) == 2 * config.al_cycles
  ids = experiment.load_data(config)[0].ids
  initial_sets = []
  for strategy in config.al_strategies:
    run_dir = experiment.run_dir(workdir, strategy, 0)
    state = _saved_state(run_dir, config)
    rs = [r for r in records if r['strategy'] == strategy]
    assert [r['labeled_images'] for r in rs] == [6, 11, 16]
    assert all(0.0 <= r['miou'] <= 1.0 and len(r['per_class_iou']) == 19 for r in rs)
    assert [r['cost_instances'] for r in rs] == sorted(r['cost_instances'] for r in rs)
    labeled = set()
    for cycle in (1, 2):
      with open(os.path.join(run_dir, f'selection_cycle{cycle:02d}.csv')) as f:
        rows = list(csv.reader(f))
      assert rows[0] == ['name', 'entropy_value']
      chosen = [r[0] for r in rows[1:]]
      assert len(chosen) == config.al_budget == len(set(chosen))
      assert not labeled & set(chosen)
      labeled |= set(chosen)
      scores = [float(r[1]) for r in rows[1:]]
      assert scores == sorted(scores, reverse=True)
    final = {ids[i] for i in state['pool']['full']}
    assert len(final) == 16
    assert labeled <= final
    initial_sets.append(final - labeled)
  # The same seed gives every strategy the same initial set.
  assert initial_sets[0] == initial_sets[1] and len(initial_sets[0]) == config.al_initial
  assert os.path.getsize(os.path.join(workdir, 'miou_vs_images.png')) > 0
  assert '| cycle |' in open(os.path.join(workdir, 'results.md')).read()


@pytest.mark.slow
def test_rerun_resumes_without_work_and_refuses_changed_flags(tiny_run):
  config, workdir, records = tiny_run
  again = experiment.run(config, workdir, log=lambda *_: None)
  assert again == records  # every cycle was finished: nothing is recomputed
  with pytest.raises(UserError, match='different configuration'):
    experiment.run(dataclasses.replace(config, train_lr=0.5), workdir, log=lambda *_: None)


def _unshared(records):
  """Records without timings and without the mark of a loaded first cycle."""
  return [{k: v for k, v in r.items() if 'seconds' not in k and 'shared' not in k}
          for r in records]


@pytest.mark.slow
def test_same_seed_same_selections(tiny_run, tmp_path):
  config, workdir, records = tiny_run
  other = experiment.run(dataclasses.replace(config, al_strategies=('mc_variance',)),
                         str(tmp_path), log=lambda *_: None)
  ours = [r for r in records if r['strategy'] == 'mc_variance']
  # In the two-strategy run mc_variance loaded random's first cycle; alone it
  # trained its own: the records are the same.
  assert ours[0]['first_cycle_shared'] and 'first_cycle_shared' not in other[0]
  assert not any('first_cycle_shared' in r for r in records if r['strategy'] == 'random')
  assert _unshared(other) == _unshared(ours)
  for cycle in (1, 2):
    name = f'selection_cycle{cycle:02d}.csv'
    a = open(os.path.join(experiment.run_dir(workdir, 'mc_variance', 0), name)).read()
    b = open(os.path.join(experiment.run_dir(str(tmp_path), 'mc_variance', 0), name)).read()
    assert a == b


def _strip(records):
  return [{k: v for k, v in r.items() if 'seconds' not in k} for r in records]


@pytest.mark.slow
def test_preempted_run_resumes_to_identical_results(tiny_run, tmp_path):
  """The command of `tiny_run`, stopped in random's first cycle (which
  mc_variance then loads as the seed's shared one) and again in its second,
  and rerun: every record is the uninterrupted run's, the mark of a shared
  first cycle included, and so is every selection."""
  config, workdir, records = tiny_run
  config = dataclasses.replace(config, ckpt_every_epochs=1)
  logs = []
  # Epochs per cycle: 2, 1, 1. The first stop is after epoch 0 of cycle 0 (so
  # its epoch 1 trains from the checkpoint); the second, in the rerun, after
  # epoch 0 of cycle 1.
  for stop_at in (1, 2):
    calls = []

    def stop(stop_at=stop_at, calls=calls):
      calls.append(1)
      return len(calls) == stop_at

    with pytest.raises(loop.Preempted, match='rerun the same command'):
      experiment.run(config, str(tmp_path), log=logs.append, should_stop=stop)
    ckpts = os.path.join(experiment.run_dir(str(tmp_path), 'random', 0), 'checkpoints')
    assert os.listdir(ckpts)  # the training state was saved before stopping
  resumed = experiment.run(config, str(tmp_path), log=logs.append)
  for resumed_epoch in ('random s0 c0 train: resuming at epoch 1 of 2',
                        'random s0 c1 train: resuming at epoch 1 of 1'):
    assert resumed_epoch in logs, logs
  assert _strip(resumed) == _strip(records)
  assert resumed[config.al_cycles]['first_cycle_shared']  # mc_variance's cycle 0
  for strategy in config.al_strategies:
    for cycle in (1, 2):
      name = f'selection_cycle{cycle:02d}.csv'
      a = open(os.path.join(experiment.run_dir(workdir, strategy, 0), name)).read()
      b = open(os.path.join(experiment.run_dir(str(tmp_path), strategy, 0), name)).read()
      assert a == b, (strategy, name)


def test_shared_first_cycle_knows_the_run_that_trained_it(tmp_path):
  """A rerun of the run that kept the seed's first cycle (stopped before the
  cycle was saved) loads it as its own model, not marked shared, as if it had
  never stopped; another strategy or configuration loads it as shared, and
  every run loads as shared a model kept without the name of its trainer."""
  import jax  # pylint: disable=g-import-not-at-top
  from segal_jax import data  # pylint: disable=g-import-not-at-top
  from segal_jax.loop import cycle_models  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(TINY, width_multiplier=0.125)
  model = loop.build_model(config, 19)
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(7),
                          jax.ShapeDtypeStruct((1, 32, 64, 3), np.float32))
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)
  split = data.Split('f', ('a',), np.zeros((1, 32, 64, 3), np.uint8), None, None,
                     (0.5,) * 3, (0.2,) * 3)
  directory, key = str(tmp_path / 'shared'), config.first_cycle_fingerprint('classes')
  me = cycle_models.trainer(config, 'random')
  cycle_models.save_shared(directory, key, model, types.SimpleNamespace(**variables), 12,
                           split, config, me)
  load = lambda by, k=key, d=directory: cycle_models.load_shared(d, k, config, model, by)
  ts, steps, shared = load(me)
  assert steps == 12 and shared is False
  got = {'params': ts.params, 'batch_stats': ts.batch_stats}
  assert jax.tree.structure(got) == jax.tree.structure(variables)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  superpixels = dataclasses.replace(config, al_unit='superpixel')  # the same first cycle
  assert superpixels.first_cycle_fingerprint('classes') == key
  assert load(cycle_models.trainer(config, 'mc_variance'))[2] is True
  assert load(cycle_models.trainer(superpixels, 'random'))[2] is True
  assert load(me, 'another configuration') is None
  before = str(tmp_path / 'kept_before_trainers_were_recorded')
  checkpoint.save_model(before, variables, checkpoint.meta_for(
      model, mean=split.mean, std=split.std, fingerprint=key, steps=12, cycle=0))
  assert load(me, d=before)[2] is True


def test_image_costs_are_cached_per_build(tmp_path):
  from segal_jax import data  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(TINY, data_dir=str(tmp_path), dataset='image_folder:/f',
                               dataset_config='')
  label = np.zeros((1, 2, 3), np.uint8)
  one = np.array([[[1, 1, 2], [1, 1, 2]]], np.int32)  # two ids: cost 2 under both rules
  three = np.array([[[1, 2, 3], [1, 2, 3]]], np.int32)
  split = lambda instances, build: data.Split('f', ('a',), None, label, instances,
                                              (0.5,) * 3, (0.2,) * 3, build=build)
  assert experiment.image_costs(config, split(one, 'h1'))['instances'].tolist() == [2]
  # The cache answers for the same build even if the arrays were to differ...
  assert experiment.image_costs(config, split(three, 'h1'))['instances'].tolist() == [2]
  # ... and a new build (labels added, classes.json changed) is counted again.
  assert experiment.image_costs(config, split(three, 'h2'))['instances'].tolist() == [3]


def test_init_checkpoint_loads_and_checks_arch(tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  from segal_jax.state import checkpoint  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(TINY, width_multiplier=0.125)
  model = loop.build_model(config, 19)
  variables = model.init(jax.random.key(7), np.zeros((1, 32, 64, 3), np.float32), train=False)
  path = str(tmp_path / 'init')
  checkpoint.save_model(path, variables, checkpoint.meta_for(model, mean=(0.5,) * 3,
                                                             std=(0.2,) * 3))
  with_init = dataclasses.replace(config, init_checkpoint=path)
  logs = []
  got = loop.initial_variables(with_init, classes.CITYSCAPES, logs.append)
  assert not logs and jax.tree.structure(got) == jax.tree.structure(variables)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert loop.initial_variables(config, classes.CITYSCAPES) is None
  with pytest.raises(UserError):
    loop.initial_variables(dataclasses.replace(config, init_checkpoint=path, arch='drn_c_26'),
                           classes.CITYSCAPES)
  # A 4-class task: the 19-class trunk bit for bit, no classifier (it starts fresh).
  four = classes.from_json({'classes': [
      {'name': n, 'color': [k, k, k], 'thing': k % 2 == 1, 'value': k}
      for k, n in enumerate(('soil', 'leaf', 'rust', 'mildew'))]})
  got = loop.initial_variables(with_init, four, logs.append)
  assert len(logs) == 1 and 'starting a fresh classifier' in logs[0]
  assert '19 classes' in logs[0] and '4 classes (soil, leaf, rust, mildew)' in logs[0]
  assert set(got['params']) == set(variables['params']) - {'seg'}
  trunk = {**variables, 'params': {k: v for k, v in variables['params'].items() if k != 'seg'}}
  assert jax.tree.structure(got) == jax.tree.structure(trunk)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(trunk)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_superpixel_experiment_budgets_costs_and_disjointness(tmp_path):
  from segal_jax.annotation import oracle  # pylint: disable=g-import-not-at-top
  from segal_jax.state import pool as pool_lib  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(TINY, data_dir=str(tmp_path / 'tfds'), al_unit='superpixel',
                               al_initial=4, al_budget=30, al_cycles=3, sp_segments=20,
                               sp_workers=1)
  workdir = str(tmp_path / 'run')
  records = experiment.run(config, workdir, log=lambda *_: None)
  train_split, _, costs = experiment.load_data(config)
  segments, counts = experiment.pool_superpixels(config, train_split)
  assert counts.tolist() == [int(s.max()) + 1 for s in segments]
  for strategy in config.al_strategies:
    rs = [r for r in records if r['strategy'] == strategy]
    assert [r['superpixels'] for r in rs] == [0, 30, 60]
    assert [r['full_images'] for r in rs] == [4, 4, 4]
    run_dir = experiment.run_dir(workdir, strategy, 0)
    labels = pool_lib.PoolLabels.from_json(_saved_state(run_dir, config)['pool'])
    # Chosen superpixels: exactly the budget, never twice, never in a full image,
    # never one that could add no label; every open image scored each cycle.
    units = set()
    full = {train_split.ids[i] for i in labels.full}
    for cycle in (1, 2):
      with open(os.path.join(run_dir, f'selection_cycle{cycle:02d}.csv')) as f:
        rows = list(csv.reader(f))[1:]
      chosen = {r[0] for r in rows}
      assert len(rows) == len(chosen) == 30 and not units & chosen
      assert not {c.split('/')[0] for c in chosen} & full
      open_ = _open_superpixels(train_split, segments, units, labels.full)
      assert all(open_[c] for c in chosen)
      record = rs[cycle - 1]
      assert record['scored_images'] == len({k.split('/')[0] for k, v in open_.items() if v})
      assert record['scored_images'] == len(train_split) - len(full)  # the whole pool
      assert record['scored_units'] == sum(open_.values())
      assert record['bought_units'] == 30 and record['new_cost'] > 0
      assert record['new_labeled_pixels'] > 0 and record['new_instances'] > 0
      units |= chosen
    assert sum(len(v) for v in labels.chosen.values()) == 60
    figures = os.listdir(os.path.join(run_dir, 'figures'))
    assert 'cycle01_superpixels.png' in figures
    assert ('cycle01_uncertainty.png' in figures) == (strategy != 'random')
    assert not set(labels.chosen) & set(labels.full)
    # Cost (the study's rule): full images' distinct instance-map ids plus, per
    # partial image, the distinct ids under its chosen superpixels (NumPy).
    expected = sum(len(np.unique(train_split.instances[i])) for i in labels.full)
    for i, sps in labels.chosen.items():
      _, ids, _ = oracle.annotate_superpixels(train_split.labels[i], train_split.instances[i],
                                              segments[i], sps)
      assert ids.tolist() == labels.annotated[i]
      expected += len(np.unique(train_split.instances[i][np.isin(segments[i], sps)]))
    assert rs[-1]['cost_instances'] == expected
    assert int(costs[labels.full].sum()) == sum(
        len(np.unique(train_split.instances[i])) for i in labels.full)


def _open_superpixels(split, segments, chosen, full):
  """{'image id/superpixel': True if it holds a non-void pixel outside every
  instance annotated through the `chosen` ones}, plain NumPy, every image not full."""
  by_image = {}
  for name in chosen:
    image_id, sp = name.split('/')
    by_image.setdefault(image_id, []).append(int(sp))
  out = {}
  for i, image_id in enumerate(split.ids):
    if i in full:
      continue
    label, instance, seg = split.labels[i], split.instances[i], segments[i]
    valid = (instance > 0) & (label != 255)
    picked = np.isin(seg, by_image.get(image_id, []))
    annotated = np.unique(instance[picked & valid])
    open_pixels = valid & ~np.isin(instance, annotated)
    for sp in np.unique(seg):
      out[f'{image_id}/{sp}'] = bool(open_pixels[seg == sp].any())
  return out


@pytest.mark.slow
@pytest.mark.parametrize('unit,exact', [('image', False), ('superpixel', False),
                                        ('superpixel', True)])
def test_cost_budget_never_exceeds_the_budget(tmp_path, unit, exact):
  config = dataclasses.replace(TINY, data_dir=str(tmp_path / 'tfds'), al_unit=unit,
                               al_initial=4, al_budget_cost=60, al_cycles=3, sp_segments=20,
                               sp_workers=1, al_strategies=('mc_variance',),
                               al_study_exact=exact)
  records = experiment.run(config, str(tmp_path / 'run'), log=lambda *_: None)
  spent = np.diff([r['cost_instances'] for r in records])
  assert [r['new_cost'] for r in records[:-1]] == spent.tolist()
  _, _, costs = experiment.load_data(config)
  if exact:  # the study's rule: buy until the budget is reached, crossing it by < one unit
    assert all(60 <= s < 60 + costs.max() for s in spent), spent
  else:  # skip what does not fit: never above the budget, and filled
    assert all(60 - costs.max() < s <= 60 for s in spent), spent


@pytest.mark.slow
def test_every_strategy_runs_and_respects_the_budget(tmp_path):
  from segal_jax.selection import strategies as selection  # pylint: disable=g-import-not-at-top
  strategies = tuple(s for s in selection.STRATEGIES if s not in ('full', 'random'))
  config = dataclasses.replace(TINY, data_dir=str(tmp_path / 'tfds'), al_cycles=2,
                               al_strategies=strategies)
  records = experiment.run(config, str(tmp_path / 'run'), log=lambda *_: None)
  assert {r['strategy'] for r in records} == set(strategies)
  for r in records:
    assert r['labeled_images'] == config.al_initial + r['cycle'] * config.al_budget
    assert 0.0 <= r['miou'] <= 1.0


@pytest.mark.slow
def test_warm_start_trains_fewer_steps_from_the_previous_model(tmp_path):
  config = dataclasses.replace(TINY, data_dir=str(tmp_path / 'tfds'), warm_start=True,
                               warm_start_fraction=0.5, train_min_steps=8,
                               al_strategies=('random',))
  records = experiment.run(config, str(tmp_path / 'run'), log=lambda *_: None)
  cold = [loop.train_schedule(config, r['labeled_images'])[1] for r in records]
  assert records[0]['train_steps'] == cold[0]
  assert [r['train_steps'] for r in records[1:]] == [
      loop.train_schedule(config, r['labeled_images'], warm=True)[1] for r in records[1:]]
  assert all(r['train_steps'] < c for r, c in zip(records[1:], cold[1:]))


@pytest.mark.slow
def test_warm_start_from_a_shared_first_cycle(tmp_path):
  """The benchmark's protocol (configs/bench/image.flags): every strategy of a
  seed loads the shared first cycle and warm-starts the next from it, which
  gives the records of a run that trained its own first cycle."""
  config = dataclasses.replace(TINY, data_dir=str(tmp_path / 'tfds'), warm_start=True,
                               warm_start_fraction=1.0, train_min_steps=6)
  both = experiment.run(config, str(tmp_path / 'both'), log=lambda *_: None)
  alone = experiment.run(dataclasses.replace(config, al_strategies=('mc_variance',)),
                         str(tmp_path / 'alone'), log=lambda *_: None)
  ours = [r for r in both if r['strategy'] == 'mc_variance']
  assert ours[0]['first_cycle_shared'] and 'first_cycle_shared' not in alone[0]
  assert _unshared(alone) == _unshared(ours)
  # Warm: the later cycles train the minimum from the previous model, not from scratch.
  assert [r['train_steps'] for r in ours] == [
      loop.train_schedule(config, r['labeled_images'], warm=r['cycle'] > 0)[1] for r in ours]


@pytest.mark.slow
def test_superpixel_cost_budget_differs_between_strategies(tmp_path):
  # The candidate images must hold more than the budget, or every strategy
  # ends up buying all their superpixels and the runs coincide.
  config = dataclasses.replace(TINY, data_dir=str(tmp_path / 'tfds'), al_unit='superpixel',
                               al_initial=4, al_budget_cost=40, al_cycles=2, sp_segments=20,
                               sp_workers=1, al_strategies=('random', 'mc_variance'))
  records = experiment.run(config, str(tmp_path / 'run'), log=lambda *_: None)
  last = {r['strategy']: r for r in records if r['cycle'] == 1}
  assert last['random']['superpixels'] != last['mc_variance']['superpixels'] or (
      last['random']['cost_instances'] != last['mc_variance']['cost_instances'])
  for r in last.values():
    assert r['cost_instances'] - records[0]['cost_instances'] >= 40


LP = dataclasses.replace(TINY, al_strategies=('loss_prediction',))


def test_validate_rejects_loss_prediction_with_superpixels():
  with pytest.raises(UserError, match='loss_prediction'):
    experiment.validate(dataclasses.replace(LP, al_unit='superpixel'))
  experiment.validate(LP)
  assert selection.get('loss_prediction').measure == selection.LOSS_PREDICTION
  assert not selection.get('loss_prediction').mc
  assert isinstance(loop.build_model(LP, 19, 'loss_prediction'), models.DRNSegWithLossHead)
  assert type(loop.build_model(LP, 19, 'random')) is models.DRNSeg  # pylint: disable=unidiomatic-typecheck


@pytest.mark.slow
def test_experiment_runs_loss_prediction(tmp_path):
  config = dataclasses.replace(LP, data_dir=str(tmp_path / 'tfds'), lp_detach_epoch=2,
                               train_min_steps=6)
  workdir = str(tmp_path / 'run')
  records = experiment.run(config, workdir, log=lambda *_: None)
  assert [r['labeled_images'] for r in records] == [6, 11, 16]
  for r in records:
    assert 0.0 <= r['ranking_accuracy'] <= 1.0
  run_dir = experiment.run_dir(workdir, 'loss_prediction', 0)
  labeled = set()
  for cycle in (1, 2):
    with open(os.path.join(run_dir, f'selection_cycle{cycle:02d}.csv')) as f:
      chosen = [line.split(',')[0] for line in f.read().splitlines()[1:]]
    assert len(chosen) == len(set(chosen)) == config.al_budget
    assert not labeled & set(chosen)
    labeled |= set(chosen)
  state = _saved_state(run_dir, config)
  ids = experiment.load_data(config)[0].ids
  final = {ids[i] for i in state['pool']['full']}
  assert labeled <= final and len(final) == 16
  # The saved model is a plain segmentation network (usable by launch.score).
  from segal_jax.state import checkpoint  # pylint: disable=g-import-not-at-top
  model, _, _ = checkpoint.load_model(os.path.join(run_dir, 'models', 'cycle_02'))
  assert type(model) is models.DRNSeg  # pylint: disable=unidiomatic-typecheck



@pytest.mark.slow
@pytest.mark.parametrize('protocol', ['dominant_label', 'multi_class', 'points',
                                      'instance_overlap'])
def test_protocols_spend_click_budgets(tmp_path, protocol):
  config = dataclasses.replace(TINY, data_dir=str(tmp_path / 'tfds'), al_unit='superpixel',
                               al_protocol=protocol, al_cost_rule='clicks', al_initial=4,
                               al_budget_cost=40, al_cycles=3, sp_segments=20, sp_workers=1,
                               al_strategies=('mc_variance',), al_rank='score_per_click',
                               noise_flip=0.1)
  records = experiment.run(config, str(tmp_path / 'run'), log=lambda *_: None)
  clicks = [r['cost_clicks'] for r in records]
  # Every click budget is spent without exceeding it, and the clicks recorded grow by it.
  assert [r['new_cost'] for r in records[:-1]] == np.diff(clicks).tolist()
  assert all(0 < s <= 40 for s in np.diff(clicks)), clicks
  assert [r['labeled_images'] for r in records] == sorted(r['labeled_images'] for r in records)
  assert records[-1]['labeled_images'] > records[0]['labeled_images']
  assert all(0 <= r['label_error'] < 1 for r in records)
  assert records[0]['unit'] == f'superpixel/{protocol}/per_click/noisy'.replace(
      '/instance_overlap', '')


@pytest.mark.slow
def test_first_cycle_shared_between_flagfiles(tiny_run, tmp_path):
  """--al_shared_dir: a run that buys superpixels in clicks loads the first
  cycle an image run trained, and gets the same cycle-0 model; a noisy
  annotator (other labels) trains its own."""
  config, workdir, records = tiny_run
  root = os.path.join(workdir, 'shared')
  images = [r for r in records if r['strategy'] == 'random']
  superpixels = dataclasses.replace(
      config, al_unit='superpixel', al_protocol='dominant_label', al_budget_cost=20,
      al_cycles=2, al_strategies=('random',), al_shared_dir=root)
  ours = experiment.run(superpixels, str(tmp_path / 'sp'), log=lambda *_: None)
  assert ours[0]['first_cycle_shared']
  assert ours[0]['miou'] == images[0]['miou'] and ours[0]['train_steps'] == images[0]['train_steps']
  assert ours[1]['unit'] == 'superpixel/dominant_label' and ours[1]['superpixels'] > 0
  noisy = experiment.run(dataclasses.replace(superpixels, noise_flip=0.5),
                         str(tmp_path / 'noisy'), log=lambda *_: None)
  assert 'first_cycle_shared' not in noisy[0]


def test_unit_name_tells_apart_every_selection_rule():
  base = dataclasses.replace(TINY, al_unit='superpixel')
  assert loop.unit_name(base) == 'superpixel'
  assert loop.unit_name(dataclasses.replace(
      base, al_protocol='dominant_label', al_class_balance=True, al_per_image_cap=3,
      al_diversity='kcenter', noise_flip=0.1)) == 'superpixel/dominant_label/balanced/cap3/kcenter/noisy'
  assert loop.unit_name(dataclasses.replace(base, al_rank='score_per_click')) == 'superpixel/per_click'


def test_labeled_share_counts_labeled_pixels_by_hand():
  ignore = 255
  maps = np.full((3, 2, 4), ignore, np.uint8)
  maps[0] = 1          # whole image: 8 of 8
  maps[1, 0, :3] = 2   # 3 of 8
  masks = np.zeros((1, 2, 4, 3), bool)
  masks[0, 1, 1, [0, 2]] = True  # one pixel may be class 0 or 2: 1 of 8
  np.testing.assert_allclose(loop.labeled_share(lambda idx: maps[idx], [0, 1, 2], chunk=2),
                             [1.0, 3 / 8, 0.0])
  np.testing.assert_allclose(loop.labeled_share(lambda idx: masks[idx], [0]), [1 / 8])
  # An image labeled whole weighs 1 whatever its void; its labels are not read.
  maps[2, 0, 0] = 3
  np.testing.assert_allclose(loop.labeled_share(lambda idx: maps[idx], [2, 1], full=[2]),
                             [1.0, 3 / 8])


@pytest.mark.slow
def test_sampling_by_labeled_pixels(tiny_run, tmp_path):
  """--train_sampling=labeled_pixels: whole images alone (cycle 0) train as
  plain epochs do, to the bit; partly labeled images then change the model."""
  config, _, records = tiny_run
  sampled = dataclasses.replace(config, al_unit='superpixel', al_budget=20,
                                al_strategies=('random',), train_sampling='labeled_pixels')
  ours = experiment.run(sampled, str(tmp_path), log=lambda *_: None)
  plain = experiment.run(dataclasses.replace(sampled, train_sampling='images'),
                         str(tmp_path / 'plain'), log=lambda *_: None)
  random_first = next(r for r in records if r['strategy'] == 'random' and r['cycle'] == 0)
  assert ours[0]['miou'] == plain[0]['miou'] == random_first['miou']
  assert ours[1]['superpixels'] == plain[1]['superpixels'] > 0  # the same purchases
  assert ours[1]['miou'] != plain[1]['miou']
