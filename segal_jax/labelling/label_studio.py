"""Label Studio as the annotators' tool: a plain-HTTP connector.

Label Studio runs as its own service (`scripts/label_studio.sh`); this module
talks to its REST API with the standard library only, so its SDK (which pins
its own numpy) stays out of this environment. The token comes from the
environment variable `LABEL_STUDIO_TOKEN` and is sent only in the
Authorization header: never logged, printed or written to a file.

A run's project is found by title, or created with the class table's
labelling configuration (`label_studio_results.labelling_config`) and
uncertainty sampling. Tasks are keyed by image name (`data.name`): pushing a
name that already has a task adds the new cycle's prediction to it instead of
a second task. Each prediction carries the model's mask as brush regions and
a score that falls as the uncertainty rises, `1 / (1 + uncertainty)`, because
Label Studio's uncertainty sampling serves the lowest score of the project's
model version first.

    client = label_studio.Client.from_env('http://127.0.0.1:8080')
    project = label_studio.ensure_project(client, 'my run', table)
    label_studio.ensure_storage(client, project, images_folder)
    label_studio.push_request(client, project, items, 'cycle_01', table)
    pulled = label_studio.pull_answers(client, project, names, table)
"""

from __future__ import annotations

import dataclasses
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from segal_jax import errors
from segal_jax.labelling import label_studio_results as results

TOKEN_ENV = 'LABEL_STUDIO_TOKEN'
_START_FIX = 'start it with scripts/label_studio.sh start, or give the address it printed'
_TOKEN_FIX = (f'export {TOKEN_ENV} with the API token of a user of that server (the one '
              'scripts/label_studio.sh was started with, or Account & Settings in its web page)')


class Client:
  """Authenticated JSON requests to one Label Studio server."""

  def __init__(self, url: str, token: str, timeout: float = 60.0):
    self.url = url.rstrip('/')
    self._token = token
    self.timeout = timeout

  def __repr__(self) -> str:  # never shows the token
    return f'Client({self.url!r})'

  @classmethod
  def from_env(cls, url: str, timeout: float = 60.0) -> Client:
    token = os.environ.get(TOKEN_ENV, '').strip()
    if not token:
      raise errors.UserError(f'{TOKEN_ENV} is not set', _TOKEN_FIX)
    return cls(url, token, timeout)

  def request(self, method: str, path: str, body: Any = None, **query) -> Any:
    """The decoded JSON answer to `method path?query` with a JSON body.

    Raises:
      UserError: one line for a server that does not answer, a refused token,
        or any other refusal (with Label Studio's own reason).
    """
    url = self.url + path + ('?' + urllib.parse.urlencode(query) if query else '')
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={
        'Authorization': 'Token ' + self._token, 'Content-Type': 'application/json',
        'Accept': 'application/json'})
    try:
      with urllib.request.urlopen(req, timeout=self.timeout) as answer:
        text = answer.read()
    except urllib.error.HTTPError as e:
      if e.code in (401, 403):
        raise errors.UserError(f'Label Studio at {self.url} refuses the token in {TOKEN_ENV} '
                               f'(HTTP {e.code})', _TOKEN_FIX) from None
      raise errors.UserError(
          f'Label Studio at {self.url} refused {method} {path} (HTTP {e.code}: {_reason(e)})',
          'fix what it names, or see its log') from None
    except (urllib.error.URLError, OSError) as e:
      reason = getattr(e, 'reason', e)
      raise errors.UserError(f'Label Studio does not answer at {self.url} ({reason})',
                             _START_FIX) from None
    try:
      return json.loads(text) if text else None
    except ValueError:
      raise errors.UserError(f'{self.url} answered {method} {path} with something other than '
                             'JSON, so it is not Label Studio\'s API', _START_FIX) from None


def _reason(e: urllib.error.HTTPError) -> str:
  """Label Studio's own reason for a refusal, on one line."""
  try:
    body = json.loads(e.read() or b'{}')
  except ValueError:
    return e.reason or 'no reason given'
  detail = body.get('validation_errors') or body.get('detail') or body
  return ' '.join(json.dumps(detail).split())[:300]


@dataclasses.dataclass(frozen=True)
class Project:
  id: int
  title: str
  url: str  # its page, for people


def ensure_project(client: Client, title: str, table) -> Project:
  """The project called `title`, created if there is none, with `table`'s
  labelling configuration (updated if the table changed) and uncertainty
  sampling."""
  config = results.labelling_config(table)
  found = [p for p in client.request('GET', '/api/projects', title=title, page_size=1000)
           .get('results', []) if p.get('title') == title]
  settings = {'label_config': config, 'sampling': 'Uncertainty sampling',
              'show_collab_predictions': True}
  if found:
    project = found[0]
    if project.get('label_config') != config or project.get('sampling') != settings['sampling']:
      project = client.request('PATCH', f'/api/projects/{project["id"]}', settings)
  else:
    project = client.request('POST', '/api/projects', {'title': title, **settings})
  return Project(project['id'], title, f'{client.url}/projects/{project["id"]}')


def files_root() -> str:
  """The folder Label Studio serves local files under: its own setting
  LOCAL_FILES_DOCUMENT_ROOT when this process shares it, else the home folder
  (the default of scripts/label_studio.sh)."""
  return os.path.abspath(os.environ.get('LOCAL_FILES_DOCUMENT_ROOT') or os.path.expanduser('~'))


def image_url(path: str, root: str | None = None) -> str:
  """The URL Label Studio serves a local image at."""
  root = root or files_root()
  rel = os.path.relpath(os.path.abspath(path), root)
  if rel.startswith(os.pardir):
    raise errors.UserError(f'{path} is not under {root}, the folder Label Studio serves files from',
                           'start Label Studio with LOCAL_FILES_DOCUMENT_ROOT set to a folder '
                           'above the images, and export the same variable here')
  return '/data/local-files/?' + urllib.parse.urlencode({'d': rel.replace(os.sep, '/')})


def ensure_storage(client: Client, project: Project, folder: str) -> None:
  """A local-files storage on `folder`, which Label Studio requires before it
  serves the images under it to the project's annotators."""
  folder = os.path.abspath(folder)
  storages = client.request('GET', '/api/storages/localfiles', project=project.id)
  if not any(folder == s.get('path') or folder.startswith(s.get('path', '') + os.sep)
             for s in storages):
    client.request('POST', '/api/storages/localfiles', {
        'project': project.id, 'path': folder, 'title': os.path.basename(folder),
        'use_blob_urls': True})


def tasks_by_name(client: Client, project: Project) -> dict[str, dict]:
  """{image name: task} of every task of the project, with its annotations."""
  out, page = {}, 1
  while True:
    answer = client.request('GET', '/api/tasks', project=project.id, page=page, page_size=500,
                            fields='all')
    for task in answer.get('tasks', []):
      out[task['data'].get('name', f'(task {task["id"]})')] = task
    if not answer.get('tasks') or page * 500 >= answer.get('total', 0):
      return out
    page += 1


@dataclasses.dataclass(frozen=True)
class Item:
  """One requested image. prediction: [H, W] class indices (255 unlabeled)."""
  name: str
  path: str
  uncertainty: float
  prediction: np.ndarray

  @property
  def size(self) -> tuple[int, int]:
    return tuple(np.shape(self.prediction))


@dataclasses.dataclass(frozen=True)
class Pushed:
  imported: list[str]  # new tasks
  updated: list[str]  # tasks that were there: the new prediction added
  answered: list[str]  # tasks already answered: left as they are


def score(uncertainty: float) -> float:
  """A prediction's score: lower for more uncertain images, which Label
  Studio's uncertainty sampling serves first."""
  return 1.0 / (1.0 + max(float(uncertainty), 0.0))


def _prediction(item: Item, model_version: str, table) -> dict[str, Any]:
  return {'model_version': model_version, 'score': score(item.uncertainty),
          'result': results.brush_results(item.prediction, table)}


def push_request(client: Client, project: Project, items: Sequence[Item], model_version: str,
                 table, root: str | None = None) -> Pushed:
  """Imports the requested images as tasks keyed by name, with the model's
  masks as predictions of `model_version`, which becomes the project's."""
  existing = tasks_by_name(client, project)
  new, updated, answered = [], [], []
  for item in items:
    task = existing.get(item.name)
    if task is None:
      height, width = item.size
      new.append({'data': {results.IMAGE: image_url(item.path, root), 'name': item.name,
                           'height': height, 'width': width,
                           'uncertainty': float(item.uncertainty)},
                  'predictions': [_prediction(item, model_version, table)]})
    elif any(not a.get('was_cancelled') for a in task.get('annotations', [])):
      answered.append(item.name)
    else:
      client.request('POST', '/api/predictions',
                     {'task': task['id'], **_prediction(item, model_version, table)})
      updated.append(item.name)
  for start in range(0, len(new), 100):
    client.request('POST', f'/api/projects/{project.id}/import', new[start:start + 100])
  client.request('PATCH', f'/api/projects/{project.id}', {'model_version': model_version})
  return Pushed([t['data']['name'] for t in new], updated, answered)


@dataclasses.dataclass(frozen=True)
class Answer:
  """One image's label from Label Studio.

  label: [H, W] uint8 in the class table's PNG values (its ignore value where
  nothing was drawn).
  """
  name: str
  label: np.ndarray
  annotator: str
  seconds: float | None  # Label Studio's lead time: how long the annotator had it open
  annotated_at: str
  task_id: int


@dataclasses.dataclass(frozen=True)
class Pulled:
  answers: dict[str, Answer]
  unfinished: list[str]  # no annotation yet
  skipped: list[str]  # every annotation skipped or cancelled
  problems: list[str]  # one line each; nothing taken from these tasks
  missing: list[str]  # no task of that name in the project


def _users(client: Client) -> dict[int, str]:
  answer = client.request('GET', '/api/users')
  rows = answer.get('results', []) if isinstance(answer, dict) else answer
  return {u['id']: u.get('email') or u.get('username') or str(u['id']) for u in rows}


def pull_answers(client: Client, project: Project, names: Iterable[str], table) -> Pulled:
  """The finished tasks among `names`, as labels; the rest sorted by why not.

  A task's latest annotation that was not skipped is its answer; one with a
  problem (a class the table lacks, a region drawn on another size) is listed
  in `problems` and taken from nowhere.
  """
  tasks = tasks_by_name(client, project)
  answers, unfinished, skipped, problems, missing = {}, [], [], [], []
  users = None
  for name in names:
    task = tasks.get(name)
    if task is None:
      missing.append(name)
      continue
    done = [a for a in task.get('annotations', []) if not a.get('was_cancelled')]
    if not done:
      (skipped if task.get('annotations') else unfinished).append(name)
      continue
    last = max(done, key=lambda a: (a.get('updated_at') or '', a['id']))
    where = f'Label Studio task {task["id"]} ({name}), annotation {last["id"]}'
    try:
      label = results.label_of(last.get('result') or [], table, int(task['data']['height']),
                               int(task['data']['width']), where)
    except errors.UserError as e:
      problems.append(str(e))
      continue
    if users is None:
      users = _users(client)
    who = last.get('completed_by')
    who = who.get('id') if isinstance(who, dict) else who
    answers[name] = Answer(name, label, users.get(who, f'user {who}'), last.get('lead_time'),
                           last.get('updated_at') or last.get('created_at') or '', task['id'])
  return Pulled(answers, unfinished, skipped, problems, missing)
