"""label_studio_source: a request offered to Label Studio and its answers taken
through the file loop's checks, against an in-memory stand-in of Label
Studio's API (the real server: test_label_studio_server.py,
test_label_studio_loop.py). Expected labels are drawn by hand in PNG values."""

import dataclasses
import json
import os

import numpy as np
import pytest
from PIL import Image

from segal_jax.config import ExperimentConfig
from segal_jax.data import classes
from segal_jax.errors import UserError
from segal_jax.labelling import label_studio
from segal_jax.labelling import label_studio_results as results
from segal_jax.labelling import returns as label_returns
from segal_jax.labelling import sources as source_lib

H, W = 6, 8
TABLE_JSON = {'ignore': 255, 'classes': [
    {'name': 'soil', 'color': [120, 80, 40], 'thing': False, 'value': 3},
    {'name': 'leaf', 'color': [20, 160, 20], 'thing': True, 'value': 7}]}
TABLE = classes.from_json(TABLE_JSON)


class FakeLabelStudio:
  """The few endpoints `label_studio` calls, kept in memory."""

  def __init__(self):
    self.projects, self.tasks, self.storages, self.imports = {}, [], [], 0
    self.users = [{'id': 1, 'email': 'ana@example.com'}, {'id': 2, 'email': 'bo@example.com'}]

  def connect(self, url):
    self.url = url
    return self

  def request(self, method, path, body=None, **query):
    if (method, path) == ('GET', '/api/projects'):
      return {'results': [p for p in self.projects.values() if p['title'] == query['title']]}
    if (method, path) == ('POST', '/api/projects'):
      project = dict(body, id=len(self.projects) + 1)
      self.projects[project['id']] = project
      return project
    if method == 'PATCH' and path.startswith('/api/projects/'):
      project = self.projects[int(path.rsplit('/', 1)[1])]
      project.update(body)
      return project
    if path == '/api/storages/localfiles':
      if method == 'POST':
        self.storages.append(body)
      return [s for s in self.storages if s['project'] == query.get('project', body and
                                                                       body.get('project'))]
    if (method, path) == ('GET', '/api/tasks'):
      tasks = [t for t in self.tasks if t['project'] == query['project']]
      return {'tasks': tasks, 'total': len(tasks)}
    if method == 'POST' and path.endswith('/import'):
      self.imports += 1
      for task in body:
        self.tasks.append(dict(task, id=len(self.tasks) + 1, annotations=[],
                               project=int(path.split('/')[3])))
      return {}
    if (method, path) == ('POST', '/api/predictions'):
      next(t for t in self.tasks if t['id'] == body['task'])['predictions'].append(body)
      return {}
    if (method, path) == ('GET', '/api/users'):
      return self.users
    raise AssertionError(f'unexpected {method} {path}')

  def task(self, name):
    return next(t for t in self.tasks if t['data']['name'] == name)

  def annotate(self, name, result, who=1, seconds=10.0, cancelled=False):
    task = self.task(name)
    task['annotations'].append({'id': 100 + len(task['annotations']), 'result': result,
                                'completed_by': who, 'lead_time': seconds,
                                'was_cancelled': cancelled,
                                'updated_at': '2026-03-01T09:30:00.123456Z'})


def _truth(k):
  """[H, W] class indices: soil with a leaf block that moves with k."""
  out = np.zeros((H, W), np.uint8)
  out[1:4, k:k + 3] = 1
  return out


@pytest.fixture
def setup(tmp_path, monkeypatch):
  """(folder, request dir, request) of a cycle-1 request for a, b, c."""
  monkeypatch.setenv('LOCAL_FILES_DOCUMENT_ROOT', str(tmp_path))
  folder, where = tmp_path / 'crops', tmp_path / 'run' / 'requests' / 'cycle_01'
  for d in ('images', 'labels'):
    (folder / d).mkdir(parents=True)
  (where / 'predictions').mkdir(parents=True)
  (folder / 'classes.json').write_text(json.dumps(TABLE_JSON))
  items = []
  for k, name in enumerate(('a', 'b', 'c')):
    Image.fromarray(np.full((H, W, 3), 40 * k, np.uint8)).save(folder / 'images' / f'{name}.png')
    Image.fromarray(_truth(k)).save(where / 'predictions' / f'{name}.png')
    items.append({'name': name, 'image': str(folder / 'images' / f'{name}.png'),
                  'label': str(folder / 'labels' / f'{name}.png'), 'height': H, 'width': W,
                  'superpixels': None, 'prediction': f'predictions/{name}.png',
                  'uncertainty': [0.5, 3.0, 1.0][k]})
  request = {'cycle': 1, 'unit': 'image', 'folder': str(folder), 'classes': TABLE_JSON,
             'requested_at': '2026-03-01T09:00:00+00:00', 'items': items, 'labeled': []}
  return str(folder), str(where), request


def _source(fake):
  return source_lib.LabelStudio('http://ls.test', 'crops mc_variance seed_0 abc123', fake.connect)


def _png_values(indices):
  return TABLE.values()[indices].astype(np.uint8)


def test_offer_makes_one_task_per_image_with_the_prediction_and_uncertainty_score(setup):
  folder, where, request = setup
  fake, lines = FakeLabelStudio(), []
  _source(fake).offer(request, where, lines.append)
  project, = fake.projects.values()
  assert project['title'] == 'crops mc_variance seed_0 abc123'
  assert project['label_config'] == results.labelling_config(TABLE)
  assert project['model_version'] == 'cycle_01'
  assert [s['path'] for s in fake.storages] == [os.path.join(folder, 'images')]
  assert [t['data']['name'] for t in fake.tasks] == ['a', 'b', 'c']
  b = fake.task('b')
  assert b['data']['image'] == '/data/local-files/?d=crops%2Fimages%2Fb.png'
  prediction, = b['predictions']
  assert prediction['score'] == pytest.approx(1 / (1 + 3.0))
  # The prediction's brush regions paint the model's mask back, in PNG values.
  assert np.array_equal(results.label_of(prediction['result'], TABLE, H, W), _png_values(_truth(1)))
  assert len(lines) == 1 and '3 new task(s)' in lines[0] and 'rerun the same command' in lines[0]


def test_collect_takes_finished_tasks_lists_skipped_and_unfinished(setup):
  folder, where, request = setup
  fake = FakeLabelStudio()
  source = _source(fake)
  source.offer(request, where, lambda _: None)
  fake.annotate('a', results.brush_results(_truth(0), TABLE), who=2, seconds=41.5)
  fake.annotate('b', [], cancelled=True)
  outcome = source.collect(request, where, folder, lambda _: None)
  assert sorted(outcome.answers) == ['a'] and outcome.problems == []
  a = outcome.answers['a']
  assert np.array_equal(a.label, _png_values(_truth(0)))
  assert (a.who, a.seconds, a.kind, a.returned_at, a.pixels) == (
      'bo@example.com', 41.5, 'label_studio', '2026-03-01T09:30:00+00:00', H * W)
  waiting = dict(line.split(': ', 1) for line in outcome.unanswered)
  assert sorted(waiting) == ['b', 'c']
  assert waiting['b'].startswith('skipped or cancelled in Label Studio, which counts as unanswered')
  assert waiting['c'].startswith('no finished annotation yet in Label Studio')


def test_wrong_class_name_is_one_problem_and_nothing_from_that_task(setup):
  folder, where, request = setup
  fake = FakeLabelStudio()
  source = _source(fake)
  source.offer(request, where, lambda _: None)
  regions = results.brush_results(_truth(1), TABLE)
  regions[1]['value']['brushlabels'] = ['leaves']
  fake.annotate('b', regions)
  outcome = source.collect(request, where, folder, lambda _: None)
  problem, = outcome.problems
  assert "(b)" in problem and "'leaves'" in problem and '\n' not in problem
  assert 'b' not in outcome.answers
  assert [line.split(':')[0] for line in outcome.unanswered] == ['a', 'c']  # b: the problem


def test_a_requested_image_without_a_task_is_pushed_when_collecting(setup):
  folder, where, request = setup
  fake, lines = FakeLabelStudio(), []
  source = _source(fake)
  source.offer(dict(request, items=request['items'][:1]), where, lambda _: None)  # b, c lost
  outcome = source.collect(request, where, folder, lines.append)
  assert [t['data']['name'] for t in fake.tasks] == ['a', 'b', 'c']
  assert 'had no task' in lines[0]
  assert len(outcome.unanswered) == 3 and not outcome.answers


def test_answers_pass_the_file_loops_checks(setup):
  folder, where, request = setup
  label = _png_values(_truth(0))
  ok = label_returns.Received('a', label, 'task 1 (a)', 'label_studio', 'ana', '2026-03-01')
  # An image that was not requested, one of another size, one with a value
  # outside the table: one problem each, none taken.
  outcome = label_returns.check(request, where, folder, [
      ok, dataclasses.replace(ok, name='zz', where='task 2 (zz)'),
      dataclasses.replace(ok, name='b', label=label[:, :4], where='task 3 (b)'),
      dataclasses.replace(ok, name='c', label=np.full((H, W), 9, np.uint8), where='task 4 (c)')])
  assert sorted(outcome.answers) == ['a']
  assert len(outcome.problems) == 3
  assert 'task 2 (zz): zz was not requested in cycle 1' in outcome.problems[0]
  assert outcome.problems[1].startswith('task 3 (b) is 6x4 but b is 6x8')
  assert outcome.problems[2].startswith('task 4 (c) holds values [9]')
  # A label PNG put into labels/ by hand must agree with the task's answer.
  Image.fromarray(np.where(label == 7, 3, label).astype(np.uint8)).save(
      os.path.join(folder, 'labels', 'a.png'))
  outcome = label_returns.check(request, where, folder, [ok])
  assert any('labels/a.png and task 1 (a) both answer a, differently' in p
             for p in outcome.problems)


def test_answer_is_cut_to_the_unlabeled_pixels_of_the_requested_regions(setup):
  folder, where, request = setup
  # A region request on a partly labeled image: only unlabeled pixels of the region are taken.
  os.makedirs(os.path.join(where, 'masks'))
  os.makedirs(os.path.join(where, 'previous'))
  region = np.zeros((H, W), np.uint8)
  region[:, :4] = 1
  Image.fromarray(region).save(os.path.join(where, 'masks', 'a.png'))
  before = np.full((H, W), 255, np.uint8)
  before[0, :] = 3
  Image.fromarray(before).save(os.path.join(where, 'previous', 'a.png'))
  item = dict(request['items'][0], superpixels=[0], mask='masks/a.png',
              previous='previous/a.png')
  answer = np.full((H, W), 7, np.uint8)
  outcome = label_returns.check(dict(request, items=[item]), where, folder, [
      label_returns.Received('a', answer, 'task 1 (a)', 'label_studio', 'ana', 't', 5.0)])
  got = outcome.answers['a']
  expected = before.copy()
  expected[1:, :4] = 7
  assert np.array_equal(got.label, expected)
  assert (got.pixels, got.cut, got.seconds) == ((H - 1) * 4, H * W - (H - 1) * 4, 5.0)


def test_default_title_fits_label_studio_and_tells_workdirs_apart(tmp_path):
  long = tmp_path / ('w' * 80) / 'mc_variance' / 'seed_0'
  title = source_lib.default_title(str(long))
  assert len(title) == source_lib.TITLE_LENGTH and title.split()[1:3] == ['mc_variance', 'seed_0']
  one = source_lib.default_title('/x/work/random/seed_1')
  assert one.startswith('work random seed_1 ')
  assert one != source_lib.default_title('/y/work/random/seed_1')


def test_config_checks(monkeypatch):
  config = ExperimentConfig(dataset='image_folder:/f', dataset_config='', al_strategies=('random',),
                            al_annotator='label_studio')
  monkeypatch.delenv(label_studio.TOKEN_ENV, raising=False)
  with pytest.raises(UserError, match='needs LABEL_STUDIO_TOKEN, which is not set'):
    source_lib.check_config(config)
  monkeypatch.setenv(label_studio.TOKEN_ENV, 'tok')
  source_lib.check_config(config)
  with pytest.raises(UserError, match='sends whole images'):
    source_lib.check_config(dataclasses.replace(config, al_unit='superpixel'))
  with pytest.raises(UserError, match='more than the 50'):
    source_lib.check_config(dataclasses.replace(config, label_studio_project='p' * 51))
  # The token is never part of the config, so config.json cannot hold it.
  assert 'tok' not in json.dumps(config.to_json())
