"""Tests of model checkpoints and the run checkpointer (Orbax), with the run
state saved through it (`run_state`)."""

import logging
import json
import os

import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from segal_jax.data import cityscapes
from segal_jax.data import classes
from segal_jax.errors import UserError
from segal_jax import models
from segal_jax.state import checkpoint
from segal_jax.state import run_state

ARCH, WIDTH, CLASSES = 'drn_d_22', 0.25, 5


@pytest.fixture(scope='module')
def variables():
  # Random values of the right shapes (no need to run the initialisers); every
  # leaf differs, so a mix-up of leaves or collections cannot pass.
  model = models.DRNSeg(arch=ARCH, num_classes=CLASSES, width_multiplier=WIDTH)
  shapes = jax.eval_shape(lambda: model.init({'params': jax.random.key(1)},
                                             jnp.zeros((1, 16, 16, 3)), train=False))
  rng = np.random.default_rng(0)
  return {k: jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes[k])
          for k in ('params', 'batch_stats')}


# A failed Orbax restore (the corruption tests) leaves coroutines and callbacks
# behind that Python reports at garbage collection, often during a later test.
pytestmark = [
    pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning'),
    pytest.mark.filterwarnings('ignore:coroutine .* was never awaited:RuntimeWarning'),
]


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _corrupt(path):
  with open(path, 'wb') as f:
    f.write(b'\x00 not what Orbax wrote')


def test_model_round_trip(tmp_path, variables):
  meta = checkpoint.meta_for(
      models.DRNSeg(arch=ARCH, num_classes=CLASSES, width_multiplier=WIDTH,
                    dropout_placement='head', dropout_rate=0.3, output_stride=4),
      mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), image_size=[64, 128])
  out = os.path.join(tmp_path, 'model')
  checkpoint.save_model(out, variables, meta)
  model, restored, loaded = checkpoint.load_model(out)
  _assert_trees_equal(restored, variables)
  assert loaded == {'arch': ARCH, 'num_classes': CLASSES, 'width_multiplier': WIDTH,
                    'dropout_placement': 'head', 'dropout_rate': 0.3, 'output_stride': 4,
                    'mean': [0.1, 0.2, 0.3], 'std': [0.4, 0.5, 0.6], 'image_size': [64, 128],
                    'classes': None}  # 5 classes without a table: unknown
  assert (model.arch, model.num_classes, model.width_multiplier, model.dropout_placement,
          model.dropout_rate, model.output_stride) == (ARCH, CLASSES, WIDTH, 'head', 0.3, 4)
  # Arguments override the stored meta (e.g. another dropout rate for scoring).
  model, _, loaded = checkpoint.load_model(out, dropout_rate=0.1, arch=None)
  assert model.dropout_rate == 0.1 and loaded['dropout_rate'] == 0.1
  with pytest.raises(UserError, match='not empty'):
    checkpoint.save_model(out, variables, meta)


def _table(names, shift=0):
  return classes.from_json({'classes': [
      {'name': n, 'color': [k, 0, 0], 'thing': k < 2, 'value': k + shift}
      for k, n in enumerate(names)]})


def test_class_table_travels_and_other_tables_are_refused(tmp_path, variables):
  table = _table(('a', 'b', 'c', 'd', 'e'))
  model = models.DRNSeg(arch=ARCH, num_classes=CLASSES, width_multiplier=WIDTH)
  out = os.path.join(tmp_path, 'model')
  checkpoint.save_model(out, variables, checkpoint.meta_for(model, mean=(0.5,) * 3,
                                                            std=(0.2,) * 3, classes=table))
  _, _, meta = checkpoint.load_model(out, classes=table)
  assert classes.from_json(meta['classes']) == table
  for other in (_table(('a', 'b', 'c', 'd', 'x')), _table(('a', 'b', 'c', 'd', 'e'), shift=1),
                classes.CITYSCAPES):
    with pytest.raises(UserError, match=r'predicts 5 classes \(a, b, c, d, e\) but the data '
                       rf'has {other.num_classes} classes \({other.names[0]}, '):
      checkpoint.load_model(out, classes=other)
  # Without a stored table: Cityscapes' at 19 classes, else any table of its size.
  bare = os.path.join(tmp_path, 'bare')
  checkpoint.save_model(bare, variables, {'arch': ARCH, 'width_multiplier': WIDTH})
  _, _, meta = checkpoint.load_model(bare, classes=table)
  assert classes.from_json(meta['classes']) == table
  with pytest.raises(UserError, match='predicts 5 unnamed classes but the data has 19'):
    checkpoint.load_model(bare, classes=classes.CITYSCAPES)
  assert checkpoint.class_table({'num_classes': 19}) == classes.CITYSCAPES


def test_converted_directory_without_meta_loads(tmp_path, variables):
  # What launch.convert wrote before it stored meta: a bare standard checkpoint.
  out = os.path.join(tmp_path, 'converted')
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(out, variables)
  ckpt.wait_until_finished()
  model, restored, meta = checkpoint.load_model(out, arch=ARCH)
  _assert_trees_equal(restored, variables)
  # Classes and width read from the classifier; the rest defaults.
  assert (model.num_classes, model.width_multiplier) == (CLASSES, WIDTH)
  assert (meta['dropout_placement'], meta['dropout_rate']) == ('stages', 0.5)
  assert model.output_stride == 8 and meta['output_stride'] == 8
  assert meta['mean'] == list(cityscapes.MEAN) and meta['std'] == list(cityscapes.STD)


def test_architecture_is_inferred_when_not_given(tmp_path, variables):
  out = os.path.join(tmp_path, 'converted')
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(out, variables)
  ckpt.wait_until_finished()
  assert checkpoint.load_model(out)[0].arch == ARCH


def test_convert_style_partial_meta(tmp_path, variables):
  out = os.path.join(tmp_path, 'converted')
  checkpoint.save_model(out, variables, {'arch': ARCH, 'num_classes': CLASSES,
                                         'width_multiplier': WIDTH})
  model, restored, meta = checkpoint.load_model(out, dropout_placement='head')
  _assert_trees_equal(restored, variables)
  assert model.arch == ARCH and model.dropout_placement == 'head'
  assert meta['mean'] == list(cityscapes.MEAN)


def test_wrong_architecture_is_a_user_error(tmp_path, variables):
  out = os.path.join(tmp_path, 'model')
  checkpoint.save_model(out, variables, {'arch': ARCH, 'num_classes': CLASSES,
                                         'width_multiplier': WIDTH})
  # D-38 has three blocks in stage 3 where D-22 has two.
  with pytest.raises(UserError, match=r'does not fit drn_d_38.*saved for drn_d_22.*--arch'):
    checkpoint.load_model(out, arch='drn_d_38')
  with pytest.raises(UserError, match=r'does not fit .* width 0.5'):
    checkpoint.load_model(out, width_multiplier=0.5)
  with pytest.raises(UserError, match='unknown DRN architecture'):
    checkpoint.load_model(out, arch='resnet50')


def test_missing_and_corrupt_directories_are_user_errors(tmp_path, variables):
  with pytest.raises(UserError, match='no checkpoint at .*nowhere'):
    checkpoint.load_model(os.path.join(tmp_path, 'nowhere'))
  os.makedirs(os.path.join(tmp_path, 'empty'))
  with pytest.raises(UserError, match='not a model checkpoint'):
    checkpoint.load_model(os.path.join(tmp_path, 'empty'))
  out = os.path.join(tmp_path, 'model')
  checkpoint.save_model(out, variables, {'arch': ARCH})
  _corrupt(os.path.join(out, 'manifest.ocdbt'))
  with pytest.raises(UserError, match='unreadable or incomplete'):
    checkpoint.load_model(out)


class _Tiny(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(3)(x)
    return nn.BatchNorm(use_running_average=True)(x)


class _State(train_state.TrainState):
  batch_stats: dict
  rng: jax.Array


def _train_state(seed):
  model = _Tiny()
  v = model.init(jax.random.key(seed), jnp.ones((1, 4)))
  state = _State.create(apply_fn=model.apply, params=v['params'], tx=optax.sgd(0.1, 0.9),
                        batch_stats=v['batch_stats'], rng=jax.random.key(seed))
  grads = jax.tree.map(jnp.ones_like, state.params)
  return state.apply_gradients(grads=grads)  # Non-zero momentum, step 1.


def _assert_states_equal(a, b):
  _assert_trees_equal((a.params, a.batch_stats, a.opt_state, a.step),
                      (b.params, b.batch_stats, b.opt_state, b.step))
  np.testing.assert_array_equal(jax.random.key_data(a.rng), jax.random.key_data(b.rng))


def test_run_checkpointer_round_trip_and_stale_steps(tmp_path):
  directory = os.path.join(tmp_path, 'checkpoints')
  template = _train_state(0)
  with checkpoint.RunCheckpointer(directory, max_to_keep=3) as ckpt:
    assert ckpt.restore_latest(template) is None
    for step in (1, 2, 3):
      ckpt.save(step, _train_state(step), {'labeled': list(range(step)), 'cycle': step})
  with checkpoint.RunCheckpointer(directory, max_to_keep=3) as ckpt:
    step, state, al = ckpt.restore_latest(template)
    assert step == 3 and al == {'labeled': [0, 1, 2], 'cycle': 3}
    _assert_states_equal(state, _train_state(3))
    assert jax.tree.structure(state) == jax.tree.structure(template)
    # Redoing step 2 drops the steps after it.
    ckpt.save(2, _train_state(7), {'redo': True})
    ckpt.wait()
    assert ckpt.all_steps() == [1, 2]
    step, state, al = ckpt.restore_latest(template)
    assert step == 2 and al == {'redo': True}
    _assert_states_equal(state, _train_state(7))


def test_run_checkpointer_keeps_max_to_keep(tmp_path):
  with checkpoint.RunCheckpointer(os.path.join(tmp_path, 'c'), max_to_keep=2) as ckpt:
    for step in range(4):
      ckpt.save(step, {'x': np.full(2, step)}, {'s': step})
    ckpt.wait()
    assert ckpt.all_steps() == [2, 3]


def test_corrupt_latest_step_falls_back_with_a_warning(tmp_path, caplog):
  directory = os.path.join(tmp_path, 'checkpoints')
  template = _train_state(0)
  with checkpoint.RunCheckpointer(directory) as ckpt:
    ckpt.save(1, _train_state(1), {'cycle': 1})
    ckpt.save(2, _train_state(2), {'cycle': 2})
  _corrupt(os.path.join(directory, '2', 'train_state', 'manifest.ocdbt'))
  with caplog.at_level(logging.WARNING):
    with checkpoint.RunCheckpointer(directory) as ckpt:
      step, state, al = ckpt.restore_latest(template)
  assert step == 1 and al == {'cycle': 1}
  _assert_states_equal(state, _train_state(1))
  assert any('step 2' in r.getMessage() and 'falling back' in r.getMessage()
             for r in caplog.records)
  # A broken active-learning state counts too; with nothing left it is an error.
  _corrupt(os.path.join(directory, '1', 'al_state', 'metadata'))
  with checkpoint.RunCheckpointer(directory) as ckpt:
    with pytest.raises(UserError, match='no checkpoint .* can be restored'):
      ckpt.restore_latest(template)


def test_al_state_must_be_json(tmp_path):
  with checkpoint.RunCheckpointer(os.path.join(tmp_path, 'c')) as ckpt:
    with pytest.raises(TypeError, match='al_state'):
      ckpt.save(0, {'x': np.zeros(2)}, {'bad': object()})


def test_run_state_round_trip_legacy_file_and_other_configuration(tmp_path):
  run_dir = str(tmp_path / 'run')
  os.makedirs(run_dir)
  assert run_state.load_run_state(run_dir, 'fp') is None
  # A run directory of the earlier layout resumes from its al_state.json.
  legacy = {'fingerprint': 'fp', 'pool': {'full': [3, 1]}, 'records': [{'cycle': 0}]}
  with open(os.path.join(run_dir, run_state.LEGACY_STATE_FILE), 'w') as f:
    json.dump(legacy, f)
  state = run_state.load_run_state(run_dir, 'fp')
  assert (state.fingerprint, state.pool, state.records) == ('fp', {'full': [3, 1]}, [{'cycle': 0}])
  assert state.next_cycle == 1
  # Saving the next state writes one Orbax step (the run state only) and drops the file.
  state.records.append({'cycle': 1})
  state.pool = {'full': [1, 2, 3]}
  run_state.save_run_state(run_dir, state)
  assert not os.path.exists(os.path.join(run_dir, run_state.LEGACY_STATE_FILE))
  ckpt = checkpoint.RunCheckpointer(os.path.join(run_dir, run_state.RUN_CHECKPOINTS))
  assert ckpt.all_steps() == [2 * run_state.STEPS_PER_CYCLE - 1]
  step, train_state, al = ckpt.restore_latest(_train_state(0))
  assert train_state is None and al['cycle'] == 2 and al['pool'] == {'full': [1, 2, 3]}
  ckpt.close()
  again = run_state.load_run_state(run_dir, 'fp')
  assert again.records == [{'cycle': 0}, {'cycle': 1}] and again.pool == {'full': [1, 2, 3]}
  with pytest.raises(UserError, match='different configuration'):
    run_state.load_run_state(run_dir, 'another')
