"""Where people's answers come from: the folder's files, or a Label Studio server.

A run with people in the loop (`human`) writes each cycle's request as files
(`label_requests`) and, on the rerun, takes in what came back through one set
of checks (`label_returns.check`). A source says where the answers are:

* `Files` (`--al_annotator=human`): label PNGs in the folder's `labels/` and
  COCO exports in the request's `returned/`; offering a request is writing it.
* `LabelStudio` (`--al_annotator=label_studio`): the request is also sent to
  a Label Studio server (`label_studio`): the run's project is created or
  reused with the class table's labelling configuration, the image folder
  becomes its local storage, and each requested image a task keyed by its
  name, with the model's mask as a prediction scored by the uncertainty.
  Collecting pulls the finished annotations of the requested images, as
  label arrays, and checks them exactly as files (`label_returns.Received`);
  label PNGs put into `labels/` by hand are taken too, and must agree.
  Tasks with no annotation, or only skipped or cancelled ones, are unanswered
  and listed; a task missing from the project (a push that failed, a project
  renamed) is pushed again. The time each annotator spent on a task (Label
  Studio's lead time) is the labelling time, and its user is who labeled.

The token comes from the environment only (`label_studio.Client.from_env`);
neither the config nor any record holds it.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
from typing import Any, Callable

from segal_jax.data import classes as classes_lib
from segal_jax.errors import UserError
from segal_jax.labelling import label_studio
from segal_jax.labelling import returns as label_returns

TITLE_LENGTH = 50  # Label Studio's limit on a project title


class Files:
  """Answers as files in the folder (`label_returns.check`)."""

  def reach(self) -> None:
    pass  # the folder is checked where it is read

  def offer(self, pending: dict[str, Any], where: str, log: Callable[[str], None]) -> None:
    del pending, where, log  # the request's files are the offer

  def collect(self, request: dict[str, Any], where: str, folder: str,
              log: Callable[[str], None]) -> label_returns.Outcome:
    del log
    return label_returns.check(request, where, folder)


def default_title(run_dir: str) -> str:
  """A project title of at most `TITLE_LENGTH` characters for the run in
  `run_dir` (`<workdir>/<strategy>/seed_<n>`): the work directory's name,
  strategy and seed, and a digest of the whole path, so two work directories
  of the same name get two projects."""
  run_dir = os.path.abspath(run_dir)
  workdir, strategy, seed = run_dir.split(os.sep)[-3:]
  tail = f' {strategy} {seed} {hashlib.sha256(run_dir.encode()).hexdigest()[:6]}'
  return (workdir[:max(1, TITLE_LENGTH - len(tail))] + tail)[:TITLE_LENGTH]


def _iso(stamp: str) -> str:
  """Label Studio's time stamp as ISO 8601 UTC to the second (as the file loop
  records times); unreadable stamps are kept as they are."""
  try:
    t = datetime.datetime.fromisoformat(stamp.replace('Z', '+00:00'))
  except ValueError:
    return stamp
  if t.tzinfo is None:
    t = t.replace(tzinfo=datetime.timezone.utc)
  return t.astimezone(datetime.timezone.utc).isoformat(timespec='seconds')


@dataclasses.dataclass
class LabelStudio:
  """Answers from a Label Studio server's project (see the module docstring).

  connect: url -> `label_studio.Client` (the token from the environment; a
  test passes a fake).
  """
  url: str
  title: str
  connect: Callable[[str], Any] = label_studio.Client.from_env

  def reach(self) -> None:
    """Raises a one-line `UserError` when the server does not answer or
    refuses the token, so that a run says so before it trains."""
    self.connect(self.url).request('GET', '/api/projects', page_size=1)

  def _project(self, pending: dict[str, Any]):
    client = self.connect(self.url)
    table = classes_lib.from_json(pending['classes'])
    return client, label_studio.ensure_project(client, self.title, table), table

  def _push(self, client, project, table, pending: dict[str, Any], where: str,
            only: list[str] | None, log: Callable[[str], None]) -> None:
    items = [item for item in pending['items'] if only is None or item['name'] in only]
    if not items:
      return
    label_studio.ensure_storage(client, project, os.path.join(pending['folder'], 'images'))
    pushed = label_studio.push_request(client, project, [
        label_studio.Item(item['name'], item['image'], float(item.get('uncertainty', 0.0)),
                          label_returns.read_label_any(os.path.join(where, item['prediction'])))
        for item in items], f'cycle_{pending["cycle"]:02d}', table)
    log(f'Label Studio: {len(pushed.imported)} new task(s), {len(pushed.updated)} with a new '
        f'prediction, {len(pushed.answered)} answered before, in project "{project.title}": '
        f'label them at {project.url}, then rerun the same command')

  def offer(self, pending: dict[str, Any], where: str, log: Callable[[str], None]) -> None:
    """Sends the request to the project (every requested image)."""
    client, project, table = self._project(pending)
    self._push(client, project, table, pending, where, None, log)

  def collect(self, request: dict[str, Any], where: str, folder: str,
              log: Callable[[str], None]) -> label_returns.Outcome:
    """The answers of the project's finished tasks, checked as files are; any
    requested image without a task is pushed first (and so is waiting)."""
    client, project, table = self._project(request)
    names = [item['name'] for item in request['items']]
    missing = sorted(set(names) - set(label_studio.tasks_by_name(client, project)))
    if missing:
      log(f'Label Studio: {len(missing)} requested image(s) had no task in project '
          f'"{project.title}"; pushing them now')
      self._push(client, project, table, request, where, missing, log)
    pulled = label_studio.pull_answers(client, project, names, table)
    received = [label_returns.Received(
        a.name, a.label, f'Label Studio task {a.task_id} ({a.name})', 'label_studio', a.annotator,
        _iso(a.annotated_at), None if a.seconds is None else float(a.seconds))
                for a in pulled.answers.values()]
    waiting = {n: f'{n}: no finished annotation yet in Label Studio ({project.url})'
               for n in pulled.unfinished + pulled.missing}
    waiting.update({n: f'{n}: skipped or cancelled in Label Studio, which counts as unanswered; '
                       f'label it there ({project.url})' for n in pulled.skipped})
    outcome = label_returns.check(request, where, folder, received, waiting)
    # A task refused as a problem is answered, wrongly: said once, as a problem.
    refused = set(names) - set(pulled.answers) - set(waiting)
    outcome.unanswered = [line for line in outcome.unanswered
                          if line.split(': ', 1)[0] not in refused]
    outcome.problems[:0] = [line + '; nothing was taken from it' for line in pulled.problems]
    return outcome


def source(config, run_dir: str):
  """The source of answers of a run with people in the loop."""
  if config.al_annotator == 'label_studio':
    return LabelStudio(config.label_studio_url,
                       config.label_studio_project or default_title(run_dir))
  return Files()


def check_config(config) -> None:
  """Label Studio is sent whole images, with its token in the environment."""
  if config.al_annotator != 'label_studio':
    return
  if config.al_unit != 'image':
    raise UserError('--al_annotator=label_studio sends whole images to label, not superpixels',
                    'set --al_unit=image, or use --al_annotator=human for regions')
  if len(config.label_studio_project) > TITLE_LENGTH:
    raise UserError(f'--label_studio_project is {len(config.label_studio_project)} characters, '
                    f'more than the {TITLE_LENGTH} Label Studio allows', 'give a shorter title')
  if not os.environ.get(label_studio.TOKEN_ENV, '').strip():
    raise UserError(f'--al_annotator=label_studio needs {label_studio.TOKEN_ENV}, which is not '
                    'set', f'export {label_studio.TOKEN_ENV} with the API token of a user of '
                    f'the server at {config.label_studio_url} (docs/label_studio.md)')

