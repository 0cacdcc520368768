"""Two rounds with a real Label Studio server and two annotators played
through its API: a brush answer, polygon answers, a skipped task and a wrong
class name; the answers come back equal to the hidden labels.

Needs a server started by `scripts/label_studio.sh start` (LABEL_STUDIO_URL,
LABEL_STUDIO_TOKEN, and the LOCAL_FILES_DOCUMENT_ROOT it was started with) and
its virtual environment, whose SDK encodes the annotators' brush masks and
decodes the predictions (`tests/_label_studio_play`).
"""

import os
import shutil
import tempfile
import urllib.request
import uuid

import numpy as np
import pytest
from PIL import Image

from segal_jax.data import classes
from segal_jax.labelling import label_studio
from tests import _label_studio_play as play

pytestmark = [pytest.mark.slow, pytest.mark.label_studio]

H, W = 24, 32
TABLE = classes.from_json({'ignore': 255, 'classes': [
    {'name': 'ground', 'color': [90, 60, 30], 'thing': False, 'value': 0},
    {'name': 'plant', 'color': [0, 180, 0], 'thing': True, 'value': 7},
    {'name': 'pot', 'color': [200, 50, 50], 'thing': True, 'value': 12}]})
VALUE = {c.name: c.value for c in TABLE.classes}


def _sdk(encode=(), decode=()):
  return play.sdk(H, W, encode, decode)


# Hidden labels, in PNG values, drawn by hand.
def _blob():
  yy, xx = np.mgrid[:H, :W]
  out = np.zeros((H, W), np.uint8)
  out[(yy - 12) ** 2 / 49 + (xx - 14) ** 2 / 100 <= 1] = VALUE['plant']
  out[18:22, 25:31] = VALUE['pot']
  out[0, :] = 255  # a row nobody labeled
  return out


def _rects(rectangles):
  return play.rects(rectangles, H, W, VALUE)


def _brush_regions(label, names=None):
  return play.brush_regions(label, TABLE, names)


@pytest.fixture
def server():
  url = os.environ['LABEL_STUDIO_URL']
  client = label_studio.Client.from_env(url)
  root = label_studio.files_root()
  folder = tempfile.mkdtemp(prefix='segal-ls-', dir=root)
  project = label_studio.ensure_project(client, f'segal test {uuid.uuid4().hex[:8]}', TABLE)
  yield client, project, folder
  client.request('DELETE', f'/api/projects/{project.id}')
  shutil.rmtree(folder)


def _item(folder, name, uncertainty, truth):
  path = os.path.join(folder, name)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.random.default_rng(len(name)).integers(0, 255, (H, W, 3), np.uint8)).save(path)
  # The prediction: the truth in class indices, with a wrong block.
  prediction = TABLE.lookup()[truth].astype(np.uint8)
  prediction[2:6, 2:6] = 2
  return label_studio.Item(name, path, uncertainty, prediction)


_annotate = play.annotate


def test_two_rounds_with_two_annotators(server):
  client, project, folder = server
  assert label_studio.ensure_project(client, project.title, TABLE) == project
  label_studio.ensure_storage(client, project, folder)
  truth_b, polygons_b = _rects([('ground', 0, 0, W, H), ('plant', 3, 4, 11, 20),
                                ('pot', 14, 10, 30, 22), ('plant', 18, 12, 22, 16)])
  truth_e, polygons_e = _rects([('ground', 0, 8, W, H), ('pot', 5, 10, 9, 23)])
  truth = {'a.png': _blob(), 'sub/b.png': truth_b, 'c.png': np.roll(_blob(), 5, axis=1),
           'd.png': np.flipud(_blob()), 'e.png': truth_e}
  uncertainty = {'a.png': 0.2, 'sub/b.png': 0.9, 'c.png': 0.4, 'd.png': 0.1, 'e.png': 3.0}
  items = {n: _item(folder, n, uncertainty[n], t) for n, t in truth.items()}
  alice, bob = play.users(client, 'alice', 'bob')

  # Round 1: four images; pushing twice makes no second task.
  first = ['a.png', 'sub/b.png', 'c.png', 'd.png']
  pushed = label_studio.push_request(client, project, [items[n] for n in first], 'cycle_01', TABLE)
  assert sorted(pushed.imported) == sorted(first)
  again = label_studio.push_request(client, project, [items[n] for n in first], 'cycle_01', TABLE)
  assert again.imported == [] and sorted(again.updated) == sorted(first)
  tasks = label_studio.tasks_by_name(client, project)
  assert sorted(tasks) == sorted(first)
  # Label Studio serves the image file itself to a logged-in user.
  request = urllib.request.Request(
      client.url + tasks['sub/b.png']['data']['image'],
      headers={'Authorization': 'Token ' + os.environ['LABEL_STUDIO_TOKEN']})
  with urllib.request.urlopen(request, timeout=30) as answer:
    assert answer.read() == open(items['sub/b.png'].path, 'rb').read()
  # The prediction is the model's mask, as Label Studio's SDK reads it.
  region = tasks['sub/b.png']['predictions'][-1]['result']
  decoded = _sdk(decode=[r['value']['rle'] for r in region])['decoded']
  for r, mask in zip(region, decoded):
    k = TABLE.names.index(r['value']['brushlabels'][0])
    assert np.array_equal(mask, items['sub/b.png'].prediction == k)
  # Uncertainty sampling serves the most uncertain image first.
  assert client.request('GET', f'/api/projects/{project.id}/next')['data']['name'] == 'sub/b.png'

  _annotate(client, tasks['a.png'], alice, _brush_regions(truth['a.png']), 41.5)
  _annotate(client, tasks['sub/b.png'], bob, polygons_b, 73.0)
  _annotate(client, tasks['c.png'], alice, [], 4.0, cancelled=True)
  wrong = _annotate(client, tasks['d.png'], bob,
                    _brush_regions(truth['d.png'], names={'pot': 'vase'}), 12.0)

  pulled = label_studio.pull_answers(client, project, first + ['zz.png'], TABLE)
  assert sorted(pulled.answers) == ['a.png', 'sub/b.png']
  for name, answer in pulled.answers.items():
    assert np.array_equal(answer.label, truth[name]), name
  assert (pulled.answers['a.png'].annotator, pulled.answers['a.png'].seconds) == (
      alice['email'], 41.5)
  assert (pulled.answers['sub/b.png'].annotator, pulled.answers['sub/b.png'].seconds) == (
      bob['email'], 73.0)
  assert pulled.skipped == ['c.png'] and pulled.unfinished == [] and pulled.missing == ['zz.png']
  assert len(pulled.problems) == 1
  assert "(d.png)" in pulled.problems[0] and "'vase'" in pulled.problems[0]

  # Round 2: the skipped image again, a new one, and one answered already.
  second = ['c.png', 'e.png', 'a.png']
  pushed = label_studio.push_request(client, project, [items[n] for n in second], 'cycle_02', TABLE)
  assert (pushed.imported, pushed.updated, pushed.answered) == (['e.png'], ['c.png'], ['a.png'])
  tasks = label_studio.tasks_by_name(client, project)
  assert len(tasks) == 5
  assert client.request('GET', f'/api/projects/{project.id}/next')['data']['name'] == 'e.png'
  unfinished = label_studio.pull_answers(client, project, ['c.png', 'e.png'], TABLE)
  assert (unfinished.skipped, unfinished.unfinished) == (['c.png'], ['e.png'])

  _annotate(client, tasks['c.png'], alice, _brush_regions(truth['c.png']), 30.0)
  _annotate(client, tasks['e.png'], alice, polygons_e, 20.0)
  client.request('PATCH', f'/api/annotations/{wrong["id"]}/',
                 {'result': _brush_regions(truth['d.png']), 'lead_time': 15.0})

  pulled = label_studio.pull_answers(client, project, list(truth), TABLE)
  assert sorted(pulled.answers) == sorted(truth)
  assert (pulled.skipped, pulled.unfinished, pulled.problems, pulled.missing) == ([], [], [], [])
  for name, answer in pulled.answers.items():
    assert np.array_equal(answer.label, truth[name]), name
    assert answer.task_id == tasks[name]['id']
  assert pulled.answers['d.png'].seconds == 15.0
