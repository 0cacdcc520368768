"""`python -m launch.run --al_annotator=label_studio` for two rounds against a
real Label Studio server, with two annotators played through its API.

A self-made image folder (32x64 images, three classes of its own, 6 labeled
and 8 unlabeled images, a hidden store of every label drawn as rectangles).
Round 1: a brush answer, a polygon answer and a skipped task: the run lists
the skipped one and keeps waiting; once it is answered the labels are taken
in, and two images added to the folder join the pool. Round 2: a wrong class
name is refused in one line and nothing is taken in; corrected, the run takes
everything in and finishes. `labels/` then equals the hidden store for every
requested image, the labelling record holds both annotators and their lead
times, and the token appears in no output and no file.

Needs a server started by `scripts/label_studio.sh start` (LABEL_STUDIO_URL,
LABEL_STUDIO_TOKEN, and the LOCAL_FILES_DOCUMENT_ROOT it was started with).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

import numpy as np
import pytest
from PIL import Image

from segal_jax.data import classes
from segal_jax.labelling import label_studio
from tests import _label_studio_play as play

pytestmark = [pytest.mark.slow, pytest.mark.label_studio]

H, W = 32, 64
TABLE_JSON = {'ignore': 255, 'classes': [
    {'name': 'soil', 'color': [120, 80, 40], 'thing': False, 'value': 3},
    {'name': 'leaf', 'color': [20, 160, 20], 'thing': True, 'value': 7},
    {'name': 'rust', 'color': [200, 90, 0], 'thing': True, 'value': 50}]}
TABLE = classes.from_json(TABLE_JSON)
VALUE = {c.name: c.value for c in TABLE.classes}
COLOR = {c.name: np.asarray(c.color) for c in TABLE.classes}


def _rectangles(k):
  """Image k's hidden labels: soil, a leaf and a rust spot that move with k."""
  x = 4 + (5 * k) % 36
  return [('soil', 0, 0, W, H), ('leaf', x, 6, x + 20, 26), ('rust', x + 6, 12 + k % 6,
                                                                x + 12, 18 + k % 6)]


def _add_image(folder, hidden, k, labeled):
  name = f'leaf_{k:02d}'
  label, _ = play.rects(_rectangles(k), H, W, VALUE)
  colors = np.zeros((H, W, 3))
  for c in TABLE.classes:
    colors[label == c.value] = COLOR[c.name]
  noise = np.random.default_rng(k).integers(-15, 15, (H, W, 3))
  Image.fromarray(np.clip(colors + noise, 0, 255).astype(np.uint8)).save(
      os.path.join(folder, 'images', name + '.png'))
  Image.fromarray(label).save(os.path.join(hidden, name + '.png'))
  if labeled:
    shutil.copy(os.path.join(hidden, name + '.png'), os.path.join(folder, 'labels'))
  return name


def _hidden(hidden, name):
  return np.asarray(Image.open(os.path.join(hidden, name + '.png')))


def _polygons(name):
  return play.rects(_rectangles(int(name.rsplit('_', 1)[1])), H, W, VALUE)[1]


@pytest.fixture
def world():
  """(client, project title, folder, hidden store, workdir); the project is
  deleted afterwards."""
  client = label_studio.Client.from_env(os.environ['LABEL_STUDIO_URL'])
  root = tempfile.mkdtemp(prefix='segal-loop-', dir=label_studio.files_root())
  folder, hidden = os.path.join(root, 'leaves'), os.path.join(root, 'hidden')
  for d in (os.path.join(folder, 'images'), os.path.join(folder, 'labels'), hidden):
    os.makedirs(d)
  with open(os.path.join(folder, 'classes.json'), 'w') as f:
    json.dump(TABLE_JSON, f)
  for k in range(14):
    _add_image(folder, hidden, k, labeled=k < 6)
  title = f'segal loop {uuid.uuid4().hex[:8]}'
  yield client, title, folder, hidden, os.path.join(root, 'work')
  project = label_studio.ensure_project(client, title, TABLE)
  client.request('DELETE', f'/api/projects/{project.id}')
  shutil.rmtree(root)


def _run(folder, workdir, title):
  """(exit status, stdout + stderr) of the run command."""
  command = [
      sys.executable, '-m', 'launch.run', '--flagfile=configs/base.flags',
      f'--dataset=image_folder:{folder}', '--al_annotator=label_studio',
      f'--label_studio_url={os.environ["LABEL_STUDIO_URL"]}', f'--label_studio_project={title}',
      f'--workdir={workdir}', '--al_strategies=mc_variance', '--al_budget=3', '--al_cycles=3',
      '--al_candidate_factor=0', '--width_multiplier=0.25', '--dropout_placement=head',
      '--train_epochs=1', '--train_min_steps=2', '--train_batch_size=4', '--train_crop=32,64',
      '--eval_batch_size=8', '--mc_passes=2', '--noprogress']
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  done = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=900)
  return done.returncode, done.stdout + done.stderr


def _requested(workdir, cycle):
  path = os.path.join(workdir, 'mc_variance', 'seed_0', 'requests', f'cycle_{cycle:02d}',
                      'request.json')
  with open(path) as f:
    return [item['name'] for item in json.load(f)['items']]


def _lines(out, prefix):
  return [line for line in out.splitlines() if line.startswith(prefix)]


def test_two_rounds_of_label_studio_answers_end_in_the_hidden_labels(world):
  client, title, folder, hidden, workdir = world
  outputs = []

  def run():
    rc, out = _run(folder, workdir, title)
    outputs.append(out)
    return rc, out

  rc, out = run()
  assert rc == 0, out
  first = _requested(workdir, 1)
  assert len(first) == 3 and 'Label Studio: 3 new task(s)' in out
  project = label_studio.ensure_project(client, title, TABLE)
  tasks = label_studio.tasks_by_name(client, project)
  assert sorted(tasks) == sorted(first)
  alice, bob = play.users(client, 'alice', 'bob')

  # Round 1: brush, polygons, and a skipped task.
  x, y, z = first
  play.annotate(client, tasks[x], alice, play.brush_regions(_hidden(hidden, x), TABLE), 41.5)
  play.annotate(client, tasks[y], bob, _polygons(y), 73.0)
  play.annotate(client, tasks[z], alice, [], 3.0, cancelled=True)
  rc, out = run()
  assert rc == 0, out
  waiting, = _lines(out, 'waiting: ')
  assert waiting.startswith(f'waiting: {z}: skipped or cancelled in Label Studio')
  assert not os.path.exists(os.path.join(folder, 'labels', x + '.png'))  # nothing taken yet

  # Answered; two new images join the folder before the rerun.
  play.annotate(client, tasks[z], alice, _polygons(z), 30.0)
  for k in (14, 15):
    _add_image(folder, hidden, k, labeled=False)
  rc, out = run()
  assert rc == 0, out
  assert 'folder: 2 new image(s) joined the unlabeled pool' in out
  assert 'took in the labels of cycle 1: 3 image(s) from 3 answer(s)' in out
  for name in first:
    assert np.array_equal(_hidden(hidden, name),
                          np.asarray(Image.open(os.path.join(folder, 'labels', name + '.png'))))
  second = _requested(workdir, 2)
  assert len(second) == 3 and not set(second) & set(first)
  tasks = label_studio.tasks_by_name(client, project)
  assert sorted(tasks) == sorted(first + second)

  # Round 2: a wrong class name is refused in one line; nothing is taken in.
  u, v, w = second
  wrong = play.annotate(client, tasks[u], bob,
                        play.brush_regions(_hidden(hidden, u), TABLE, names={'rust': 'mould'}),
                        12.0)
  play.annotate(client, tasks[v], alice, _polygons(v), 20.0)
  play.annotate(client, tasks[w], bob, play.brush_regions(_hidden(hidden, w), TABLE), 25.0)
  rc, out = run()
  assert rc == 1, out
  problem, = _lines(out, 'problem: ')
  assert f'({u})' in problem and "'mould'" in problem
  assert not any(f' {u}:' in line for line in _lines(out, 'waiting: '))
  assert _lines(out, 'error: ') and 'nothing was taken in' in out
  for name in second:
    assert not os.path.exists(os.path.join(folder, 'labels', name + '.png'))
  client.request('PATCH', f'/api/annotations/{wrong["id"]}/',
                 {'result': play.brush_regions(_hidden(hidden, u), TABLE), 'lead_time': 15.0})
  rc, out = run()
  assert rc == 0, out
  assert 'took in the labels of cycle 2' in out and 'results.md' in out

  # Every requested image's labels are the hidden ones; the rest are as they were.
  for name in first + second:
    assert np.array_equal(_hidden(hidden, name),
                          np.asarray(Image.open(os.path.join(folder, 'labels', name + '.png'))))
  labeled = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(folder, 'labels')))
  assert labeled == sorted([f'leaf_{k:02d}' for k in range(6)] + first + second)

  # The labelling record of each round: who, and the annotators' own time (lead times).
  with open(os.path.join(workdir, 'mc_variance', 'seed_0', 'metrics.jsonl')) as f:
    records = {r['cycle']: r for r in map(json.loads, f)}
  for cycle, seconds in ((1, 41.5 + 73.0 + 30.0), (2, 15.0 + 20.0 + 25.0)):
    assert records[cycle]['labelled_by'] == sorted([alice['email'], bob['email']])
    assert records[cycle]['labelling_time'] == 'annotators'
    assert records[cycle]['labelling_seconds'] == pytest.approx(seconds, abs=0.1)
    assert records[cycle]['seconds_per_unit'] == pytest.approx(seconds / 3, abs=0.01)
  # The token is in no output and no file written.
  token = os.environ[label_studio.TOKEN_ENV]
  assert not any(token in out for out in outputs)
  for d in (workdir, folder):
    for base, _, files in os.walk(d):
      for f in files:
        with open(os.path.join(base, f), 'rb') as fh:
          assert token.encode() not in fh.read(), os.path.join(base, f)
