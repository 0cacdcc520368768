"""Bad input to the entry points: one clear line, a non-zero exit, nothing damaged.

Every case runs the real command in a subprocess against a work directory
that already holds a finished experiment (and, for launch.score, an output
folder that already holds a ranking); each asserts the exit status, that
stderr is exactly one `error: ...` line naming the problem, that no traceback
is printed, and that every existing file is byte-for-byte unchanged. The
cases cover the command line (flagfiles, unknown flags, each invalid value),
the data (missing folders and zips, label files that do not fit) and the
checkpoints (truncated, another architecture), plus unwritable outputs.

A representative few run in the fast suite; the rest are marked slow (each
subprocess imports JAX, 2-4 s).
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest

from launch import _app
from segal_jax import data
from segal_jax import models
from segal_jax.state import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = 'configs/synthetic/tiny.flags'  # relative: the commands run in ROOT
# A failed Orbax restore leaves callbacks that Python reports at garbage collection.
pytestmark = [
    pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning'),
    pytest.mark.filterwarnings('ignore:coroutine .* was never awaited:RuntimeWarning'),
]


# --- fixtures ---------------------------------------------------------------


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  """A data directory shared by the session, holding synthetic_city/tiny (64 train images)."""
  path = str(tmp_path_factory.getbasetemp() / 'tfds')
  data.load('synthetic_city', 'train', config='tiny', data_dir=path)
  return path


def _model_checkpoint(path, arch='drn_d_22', width=0.25):
  """A model checkpoint as launch.run writes it (zeros; only the shapes matter here)."""
  model = models.DRNSeg(arch=arch, num_classes=19, width_multiplier=width,
                        dropout_placement='head')
  shapes = jax.eval_shape(lambda: model.init({'params': jax.random.key(0)},
                                             jnp.zeros((1, 32, 32, 3)), train=False))
  variables = {k: jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes[k])
               for k in ('params', 'batch_stats')}
  checkpoint.save_model(path, variables, checkpoint.meta_for(
      model, mean=(0.3, 0.3, 0.3), std=(0.2, 0.2, 0.2), image_size=[64, 128]))
  return path


def _truncate_data_files(directory):
  """Cuts every array data file of a checkpoint to half its length (an interrupted copy)."""
  cut = 0
  for root, _, files in os.walk(directory):
    if os.path.basename(root) == 'd':
      for name in files:
        path = os.path.join(root, name)
        os.truncate(path, os.path.getsize(path) // 2)
        cut += 1
  assert cut, f'no data files under {directory}'


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
  root = tmp_path_factory.mktemp('ckpt')
  good = _model_checkpoint(str(root / 'drn_d_22'))
  truncated = str(root / 'truncated')
  shutil.copytree(good, truncated)
  _truncate_data_files(truncated)
  return {'good': good, 'truncated': truncated,
          'drn_c_26': _model_checkpoint(str(root / 'drn_c_26'), arch='drn_c_26'),
          'wide': _model_checkpoint(str(root / 'wide'), width=1.0)}


def _write(path, content):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb' if isinstance(content, bytes) else 'w') as f:
    f.write(content)


@pytest.fixture
def workdir(tmp_path):
  """A work directory holding a finished experiment (launch.run's layout)."""
  path = str(tmp_path / 'experiment')
  record = {'strategy': 'mc_variance', 'seed': 0, 'cycle': 0, 'unit': 'image',
            'labeled_images': 8, 'cost_instances': 148, 'miou': 0.25}
  run = os.path.join(path, 'mc_variance', 'seed_0')
  _write(os.path.join(path, 'config.json'), json.dumps({'dataset': 'synthetic_city'}))
  _write(os.path.join(path, 'results.md'), '| cycle | labeled | mc_variance |\n')
  _write(os.path.join(path, 'miou_vs_images.png'), b'\x89PNG\r\n\x1a\n not really')
  _write(os.path.join(run, 'metrics.jsonl'), json.dumps(record) + '\n')
  _write(os.path.join(run, 'selection_cycle01.csv'), 'name,entropy_value\nsynth_train_000003,0.5\n')
  _write(os.path.join(run, 'al_state.json'), json.dumps(
      {'fingerprint': 'from-another-run', 'pool': {'full': [1, 2]}, 'records': [record]}))
  return path


def _snapshot(directory):
  """{relative path: bytes} of every file under `directory`."""
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      with open(os.path.join(root, name), 'rb') as f:
        out[os.path.relpath(os.path.join(root, name), directory)] = f.read()
  return out


def _image_folder(root, *, label_value=1, label_size=(32, 64)):
  """images/ and labels/ of 4 images; image 2's label has `label_value` and `label_size`."""
  for sub in ('images', 'labels'):
    os.makedirs(os.path.join(root, sub))
  for i in range(4):
    PIL.Image.fromarray(np.full((32, 64, 3), 40 * i, np.uint8)).save(
        os.path.join(root, 'images', f'im{i}.png'))
    label = (np.full(label_size, label_value, np.uint8) if i == 2
             else np.zeros((32, 64), np.uint8))
    PIL.Image.fromarray(label).save(os.path.join(root, 'labels', f'im{i}.png'))
  return root


# --- helpers ----------------------------------------------------------------


def _cli(module, *args, tfds=None):
  env = dict(os.environ)
  if tfds:
    env['TFDS_DATA_DIR'] = tfds
  return subprocess.run([sys.executable, '-m', module, *args], capture_output=True, text=True,
                        check=False, cwd=ROOT, env=env, timeout=300)


def _assert_one_line_error(result, *words, code=None):
  """Non-zero exit (or `code`), no traceback, stderr = one `error:` line holding `words`."""
  output = result.stdout + result.stderr
  assert 'Traceback' not in output, output
  assert result.returncode != 0, output
  if code is not None:
    assert result.returncode == code, output
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  line = lines[0]
  assert line.startswith('error: '), line
  for w in words:
    assert w in line, (w, line)
  return line


def _run_fails(workdir, *flags, words=(), code=1, tfds=None):
  """launch.run on the tiny config with `flags` fails cleanly and leaves `workdir` intact."""
  before = _snapshot(workdir)
  result = _cli('launch.run', f'--flagfile={TINY}', f'--workdir={workdir}', '--noprogress',
                *flags, tfds=tfds)
  line = _assert_one_line_error(result, *words, code=code)
  assert _snapshot(workdir) == before
  return line


# --- launch.run: the command line --------------------------------------------


def test_malformed_flagfile_line_names_file_and_line(workdir, tmp_path):
  flagfile = str(tmp_path / 'exp.flags')
  _write(flagfile, f'# my experiment\n--flagfile={TINY}\n\nal_budget 3\n')
  line = _run_fails(workdir, f'--flagfile={flagfile}',
                    words=(flagfile, 'line 4', 'al_budget 3', '--name=value'), code=2)
  assert 'is not a flag' in line


def test_unknown_flag(workdir):
  _run_fails(workdir, '--al_budgte=3', words=('al_budgte', '--helpfull'), code=2)


@pytest.mark.slow
@pytest.mark.parametrize('flagfile_text, words', [
    ('--al_budget 3\n', ('line 1', '--al_budget 3', '--name=value')),  # space, not =
    ('--flagfile=does/not/exist.flags\n', ('does/not/exist.flags', 'included by')),
])
def test_more_flagfile_problems(workdir, tmp_path, flagfile_text, words):
  flagfile = str(tmp_path / 'exp.flags')
  _write(flagfile, flagfile_text)
  _run_fails(workdir, f'--flagfile={flagfile}', words=words, code=2)


@pytest.mark.slow
def test_missing_flagfile_and_stray_argument(workdir):
  _run_fails(workdir, '--flagfile=configs/nope.flags', words=('configs/nope.flags', 'cannot read'),
             code=2)
  _run_fails(workdir, 'al_budget=3', words=('unexpected arguments', '--name=value'), code=2)


@pytest.mark.slow
def test_value_of_the_wrong_type(workdir):
  _run_fails(workdir, '--mc_passes=ten', words=('--mc_passes', 'ten'), code=2)
  _run_fails(workdir, '--al_seeds=0,x', words=('--al_seeds', 'list of integers'))


# --- launch.run: invalid values ----------------------------------------------


@pytest.mark.parametrize('flag, words', [
    ('--sp_segments=0', ('--sp_segments=0', 'at least 1')),
    ('--dropout_placement=none', ('mc_variance', 'needs MC dropout', '--dropout_placement')),
])
def test_invalid_values_fast(workdir, flag, words):
  _run_fails(workdir, flag, words=words)


@pytest.mark.slow
@pytest.mark.parametrize('flag, words', [
    ('--mc_passes=0', ('--mc_passes=0', 'at least 1')),
    ('--al_strategies=random,most_uncertain', ('most_uncertain', 'mc_variance')),
    ('--train_batch_size=0', ('--train_batch_size=0', 'at least 1')),
    ('--al_initial=-4', ('--al_initial=-4', 'at least 1')),
    ('--al_budget=-1', ('--al_budget=-1', 'negative')),
    ('--al_budget=0', ('--al_budget=0', 'selects nothing')),
    ('--al_unit=pixel', ('--al_unit=pixel', 'superpixel')),
    ('--dataset=mnist', ('mnist', 'synthetic_city', 'image_folder:PATH')),
    ('--arch=resnet50', ('--arch=resnet50', 'drn_d_22')),
    ('--train_crop=64', ('--train_crop=64', 'height,width')),
    ('--dropout_rate=1.5', ('--dropout_rate=1.5', '[0, 1)')),
])
def test_invalid_values(workdir, flag, words):
  _run_fails(workdir, flag, words=words)


@pytest.mark.slow
def test_budget_larger_than_pool(workdir, tfds_dir):
  # tiny has 64 training images; 8 + (3 - 1) x 40 = 88 of them would be labeled.
  _run_fails(workdir, '--al_budget=40', '--al_cycles=3', tfds=tfds_dir,
             words=('88 images', 'only 64', '--al_budget'))


# --- launch.run: data ----------------------------------------------------------


def test_missing_image_folder(workdir, tmp_path):
  missing = str(tmp_path / 'my_photos')
  _run_fails(workdir, f'--dataset=image_folder:{missing}', '--dataset_config=',
             tfds=str(tmp_path / 'tfds'), words=(missing, 'does not exist'))


def test_an_image_folder_needs_no_dataset_config(workdir, tmp_path):
  # The default --dataset_config names a synthetic_city size; a folder ignores it
  # (and is then refused for what is really wrong with it).
  missing = str(tmp_path / 'my_photos')
  _run_fails(workdir, f'--dataset=image_folder:{missing}', tfds=str(tmp_path / 'tfds'),
             words=(missing, 'does not exist'))


@pytest.mark.slow
def test_missing_cityscapes_zips(workdir, tmp_path):
  _run_fails(workdir, '--dataset=cityscapes', '--dataset_config=quarter',
             tfds=str(tmp_path / 'tfds'),
             words=('leftImg8bit_trainvaltest.zip', 'gtFine_trainvaltest.zip', 'download'))


@pytest.mark.slow
def test_label_of_another_size(workdir, tmp_path):
  folder = _image_folder(str(tmp_path / 'photos'), label_size=(16, 64))
  _run_fails(workdir, f'--dataset=image_folder:{folder}', '--dataset_config=',
             tfds=str(tmp_path / 'tfds'),
             words=(os.path.join(folder, 'labels', 'im2.png'), '16x64', '32x64'))


@pytest.mark.slow
def test_unknown_label_id(workdir, tmp_path):
  folder = _image_folder(str(tmp_path / 'photos'), label_value=77)
  _run_fails(workdir, f'--dataset=image_folder:{folder}', '--dataset_config=',
             tfds=str(tmp_path / 'tfds'),
             words=(os.path.join(folder, 'labels', 'im2.png'), '[77]', 'label_mapping'))


def test_label_studio_without_token_or_server_is_one_line_before_training(workdir, tmp_path,
                                                                          monkeypatch):
  folder = _image_folder(str(tmp_path / 'photos'))
  flags = (f'--dataset=image_folder:{folder}', '--al_annotator=label_studio',
           '--al_strategies=mc_variance')
  monkeypatch.delenv('LABEL_STUDIO_TOKEN', raising=False)
  _run_fails(workdir, *flags, words=('LABEL_STUDIO_TOKEN', 'which is not set', 'export'))
  monkeypatch.setenv('LABEL_STUDIO_TOKEN', 'not-a-token-of-anyone')
  with socket.socket() as s:  # a port nothing listens on
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  line = _run_fails(workdir, *flags, f'--label_studio_url=http://127.0.0.1:{port}',
                    words=(f'Label Studio does not answer at http://127.0.0.1:{port}',
                           'scripts/label_studio.sh start'))
  assert 'not-a-token-of-anyone' not in line


# --- launch.run: checkpoints and outputs --------------------------------------


def test_init_checkpoint_of_another_architecture(workdir, checkpoints):
  # Checked up front (config.validate), before any data is built.
  _run_fails(workdir, f'--init_checkpoint={checkpoints["drn_c_26"]}',
             words=(checkpoints['drn_c_26'], 'does not fit drn_d_22', 'saved for drn_c_26',
                    '--arch'))


@pytest.mark.slow
def test_init_checkpoint_of_another_width(workdir, checkpoints):
  _run_fails(workdir, f'--init_checkpoint={checkpoints["wide"]}',
             words=('does not fit drn_d_22 with width 0.25', '--width_multiplier'))


@pytest.mark.slow
def test_truncated_init_checkpoint(workdir, checkpoints):
  _run_fails(workdir, f'--init_checkpoint={checkpoints["truncated"]}',
             words=(checkpoints['truncated'], 'unreadable or incomplete'))


def test_unwritable_workdir(tmp_path):
  # Tests run as root, which ignores permissions: a path through a regular file
  # cannot be created by anyone.
  blocker = str(tmp_path / 'results.md')
  _write(blocker, 'kept\n')
  result = _cli('launch.run', f'--flagfile={TINY}', f'--workdir={blocker}/run', '--noprogress')
  _assert_one_line_error(result, f'{blocker}/run', 'Not a directory', 'choose another path')
  with open(blocker) as f:
    assert f.read() == 'kept\n'


@pytest.mark.slow
def test_rerun_with_other_flags_keeps_the_finished_experiment(workdir, tfds_dir):
  # The finished run was made with other flags (its al_state.json's fingerprint).
  _run_fails(workdir, '--al_strategies=mc_variance', tfds=tfds_dir,
             words=('different configuration', '--workdir'))


@pytest.fixture(scope='module')
def diverging_run(tfds_dir, tmp_path_factory):
  """launch.run whose loss becomes NaN in the first steps (trains, so slow)."""
  workdir = str(tmp_path_factory.mktemp('diverging'))
  result = _cli('launch.run', f'--flagfile={TINY}', f'--workdir={workdir}', '--noprogress',
                '--al_strategies=mc_variance', '--train_lr=1e12', tfds=tfds_dir)
  return result


@pytest.mark.slow
def test_diverging_loss_stops_with_one_line(diverging_run):
  _assert_one_line_error(diverging_run, 'loss became nan', 'step', 'learning rate')


@pytest.mark.slow
def test_diverging_loss_names_the_cycle(diverging_run):
  line = _assert_one_line_error(diverging_run)
  assert 'cycle 0' in line and 'mc_variance' in line, line


# --- launch.score ------------------------------------------------------------


@pytest.fixture
def score_out(tmp_path):
  """An output folder that already holds a ranking."""
  out = str(tmp_path / 'out')
  _write(os.path.join(out, 'ranking.csv'), 'name,entropy_value\nold.png,0.9\n')
  return out


@pytest.fixture(scope='module')
def images(tmp_path_factory):
  folder = tmp_path_factory.mktemp('images')
  for i in range(2):
    PIL.Image.fromarray(np.full((64, 128, 3), 60 * i, np.uint8)).save(folder / f'a{i}.png')
  return str(folder)


def _score_fails(out, *flags, words=(), code=1):
  before = _snapshot(out)
  result = _cli('launch.score', f'--out={out}', '--noprogress', *flags)
  line = _assert_one_line_error(result, *words, code=code)
  assert _snapshot(out) == before
  return line


def test_score_empty_image_folder(score_out, checkpoints, tmp_path):
  empty = str(tmp_path / 'empty')
  os.makedirs(empty)
  _score_fails(score_out, f'--checkpoint={checkpoints["good"]}', f'--images={empty}',
               words=(empty, 'holds no', '--images'))


@pytest.mark.slow
def test_score_truncated_checkpoint(score_out, checkpoints, images):
  _score_fails(score_out, f'--checkpoint={checkpoints["truncated"]}', f'--images={images}',
               words=(checkpoints['truncated'], 'unreadable or incomplete', 'write it again'))


@pytest.mark.slow
def test_score_truncated_checkpoint_message_is_short(score_out, checkpoints, images):
  line = _score_fails(score_out, f'--checkpoint={checkpoints["truncated"]}',
                      f'--images={images}')
  assert len(line) < 400, line


@pytest.mark.slow
def test_score_checkpoint_of_another_architecture(score_out, checkpoints, images):
  _score_fails(score_out, f'--checkpoint={checkpoints["good"]}', f'--images={images}',
               '--arch=drn_d_38', words=('does not fit drn_d_38', 'saved for drn_d_22'))


@pytest.mark.slow
def test_score_bad_values(score_out, checkpoints, images):
  common = (f'--checkpoint={checkpoints["good"]}', f'--images={images}')
  _score_fails(score_out, *common, '--mc_passes=0', words=('--mc_passes=0',))
  _score_fails(score_out, *common, '--strategy=most_uncertain',
               words=('most_uncertain', 'mc_variance'))
  _score_fails(score_out, *common, '--resize=big', words=('--resize=big', '512x1024'))


@pytest.mark.slow
def test_score_output_under_a_file(checkpoints, images, tmp_path):
  blocker = str(tmp_path / 'ranking.csv')
  _write(blocker, 'kept\n')
  result = _cli('launch.score', f'--out={blocker}/out', '--noprogress',
                f'--checkpoint={checkpoints["good"]}', f'--images={images}')
  _assert_one_line_error(result, f'{blocker}/out', 'Not a directory')
  with open(blocker) as f:
    assert f.read() == 'kept\n'


# --- launch.report and launch.convert ----------------------------------------


@pytest.mark.slow
def test_report_required_flag_and_empty_workdir(tmp_path):
  _assert_one_line_error(_cli('launch.report'), '--workdir is required', code=2)
  _assert_one_line_error(_cli('launch.report', f'--workdir={tmp_path}/none'),
                         'no finished cycle', '--workdir')


@pytest.mark.slow
def test_report_corrupt_metrics(workdir):
  path = os.path.join(workdir, 'mc_variance', 'seed_0', 'metrics.jsonl')
  with open(path, 'a') as f:
    f.write('{"strategy": "mc_var')  # e.g. a copy cut short
  before = _snapshot(workdir)
  result = _cli('launch.report', f'--workdir={workdir}')
  _assert_one_line_error(result, path)
  assert _snapshot(workdir) == before


@pytest.mark.slow
def test_convert_unreadable_source_keeps_existing_output(checkpoints, tmp_path):
  source = str(tmp_path / 'drn_d_22.pth')
  _write(source, b'not a pickle')
  before = _snapshot(checkpoints['good'])
  result = _cli('launch.convert', f'--source={source}', f'--out={checkpoints["good"]}')
  _assert_one_line_error(result, source)
  assert _snapshot(checkpoints['good']) == before


# --- tracebacks on request ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize('flag', ['--debug', '--verbosity=1'])
def test_traceback_on_request(workdir, flag):
  result = _cli('launch.run', f'--flagfile={TINY}', f'--workdir={workdir}', '--mc_passes=0',
                flag)
  assert result.returncode != 0
  assert 'Traceback' in result.stderr
  assert 'UserError: --mc_passes=0 must be at least 1' in result.stderr


# --- the helpers of launch/_app.py, in-process --------------------------------


def test_flagfile_problem_follows_includes(tmp_path):
  inner = str(tmp_path / 'inner.flags')
  outer = str(tmp_path / 'outer.flags')
  _write(inner, '// comment\n--al_budget=3\n\n   \n  --mc_passes=2\n# --x y\n--bad flag\n')
  _write(outer, f'--flagfile={inner}\n--al_cycles=2\n')
  assert _app.flagfile_problem([f'--flagfile={outer}']) == (
      f"{inner} line 7: '--bad flag' is not a flag; write one --name=value per line "
      '(comments start with # at the beginning of a line)')
  assert _app.flagfile_problem(['--flagfile', outer]).startswith(f'{inner} line 7')
  # Values may hold spaces; a file that includes itself is absl's to warn about.
  _write(inner, f'--flagfile={outer}\n--dataset_config=label_mapping=my map.json\n')
  assert _app.flagfile_problem([f'--flagfile={outer}', '--al_budget', '3']) is None
  # After `--` nothing is a flag.
  assert _app.flagfile_problem(['--', '--flagfile=nowhere']) is None


def test_os_error_message_names_path_and_fix():
  e = NotADirectoryError(20, 'Not a directory', '/data/results.md/run')
  assert _app.os_error_message(e) == (
      'cannot use /data/results.md/run (Not a directory); part of that path is a file, '
      'not a folder: choose another path.')
  e = OSError(28, 'No space left on device', '/data/run/al_state.json')
  assert 'rerun the same command to resume' in _app.os_error_message(e)


def _shipped_flagfiles():
  root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')
  return sorted(os.path.relpath(os.path.join(d, f), os.path.dirname(root))
                for d, _, files in os.walk(root) for f in files if f.endswith('.flags'))


@pytest.mark.parametrize('flagfile', _shipped_flagfiles())
def test_every_shipped_flagfile_reads_cleanly(flagfile, monkeypatch):
  from launch import _app  # pylint: disable=import-outside-toplevel
  monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert _app.flagfile_problem([f'--flagfile={flagfile}']) is None
