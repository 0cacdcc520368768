"""People in the loop: a team labels an image folder between runs.

`--al_annotator=human` on `--dataset=image_folder:PATH`, where some images have
label PNGs and the rest do not, is an experiment that waits for people. Each
run trains on what is labeled, scores the rest, writes the cycle's request
(`label_requests`) and stops (`label_requests.AwaitingLabels`, exit 0). The
rerun of the same command first takes in what came back (`take_in`: every
file checked by `label_returns`; COCO answers written into `labels/`), records
who labeled what from which file and when in the run state, and continues.

The folder's `labels/` is the truth for what is labeled. Validation is the
folder's `val/` split when there is one, else a fixed held-out part of the
images labeled at the start (`holdout`), said at start.

Interrupting anywhere is safe: nothing is taken in until every file checks
out, the label files are written atomically and are the same on a second try,
and the run state that took them in is saved one step after the one that
waited for them (`checkpoint.save_run_state`).
"""

from __future__ import annotations

import datetime
import os
from typing import Any, Callable

import numpy as np

from segal_jax import annotations
from segal_jax import annotators
from segal_jax import checkpoint
from segal_jax import label_requests
from segal_jax import label_returns
from segal_jax import pool as pool_lib
from segal_jax.errors import UserError

PREFIX = 'image_folder:'


def enabled(config) -> bool:
  return config.al_annotator == 'human'


def folder_of(config) -> str:
  return os.path.abspath(os.path.expanduser(config.dataset[len(PREFIX):]))


def check_config(config) -> None:
  """People label one run of one image folder."""
  if not enabled(config):
    return
  if not config.dataset.startswith(PREFIX):
    raise UserError(f'--al_annotator=human needs an image folder, not --dataset={config.dataset}',
                    'pass --dataset=image_folder:PATH')
  if len(config.al_strategies) != 1 or len(config.al_seeds) != 1:
    raise UserError('--al_annotator=human runs one strategy with one seed',
                    'pass one --al_strategies and one --al_seeds')
  if config.al_strategies[0] == 'full':
    raise UserError('--al_strategies=full trains on every image, so nothing is requested',
                    'choose a selection strategy, e.g. --al_strategies=mc_variance')


def _seconds(start: str, end: str) -> float:
  parse = datetime.datetime.fromisoformat
  return max(0.0, (parse(end) - parse(start)).total_seconds())


def labelling_record(pending: dict[str, Any], outcome: label_returns.Outcome) -> dict[str, Any]:
  """What came back for a request: per image who, from which file, when; and
  the summary a cycle's record carries (labelling time per unit)."""
  items = []
  for item in pending['items']:
    a = outcome.answers[item['name']]
    items.append({'name': a.name, 'file': a.file, 'kind': a.kind, 'who': a.who,
                  'returned_at': a.returned_at, 'labeled_pixels': a.pixels,
                  'units': len(item['superpixels']) if item['superpixels'] is not None else 1})
  returned = max(i['returned_at'] for i in items)
  units = sum(i['units'] for i in items)
  seconds = _seconds(pending['requested_at'], returned)
  return {'cycle': pending['cycle'], 'unit': pending['unit'],
          'requested_at': pending['requested_at'], 'returned_at': returned, 'items': items,
          'summary': {'labelled_units': units, 'labelling_seconds': round(seconds, 1),
                      'seconds_per_unit': round(seconds / max(units, 1), 2),
                      'labelled_by': sorted({i['who'] for i in items})}}


def take_in(config, run_dir: str, log: Callable[[str], None] = print) -> None:
  """Takes in the labels that came back for the pending request of the run in
  `run_dir`, if there is one.

  Raises:
    UserError: a returned file has a problem (each said in one line first);
      nothing is taken in.
    label_requests.AwaitingLabels: requests are still unanswered (each said
      in one line first); what came back is kept where it is.
  """
  state = checkpoint.load_run_state(run_dir, config.fingerprint())
  if state is None or state.pending is None:
    return
  pending, folder = state.pending, folder_of(config)
  where = label_requests.request_dir(run_dir, pending['cycle'])
  outcome = label_returns.check(pending, where, folder)
  for line in outcome.problems:
    log(f'problem: {line}')
  if outcome.problems:
    raise UserError(f'{len(outcome.problems)} problem(s) with the labels returned for cycle '
                    f'{pending["cycle"]} (one per line above); nothing was taken in',
                    'fix or remove those files and rerun the same command')
  for line in outcome.unanswered:
    log(f'waiting: {line}')
  if outcome.unanswered:
    raise label_requests.AwaitingLabels(
        f'{len(outcome.unanswered)} of {len(pending["items"])} requested image(s) are not '
        f'labeled yet (one per line above); the rest is kept.\n'
        + label_requests.instructions(pending, where))
  for name, answer in sorted(outcome.answers.items()):
    path = os.path.join(folder, 'labels', name + '.png')
    if answer.kind == 'coco' or not _same(path, answer.label):
      annotations.write_png(path, answer.label)
  pool = pool_lib.PoolLabels.from_json(state.pool)
  people = annotators.get('human')
  if pending['unit'] == 'image':
    people.annotate_images(pool, None, [item['index'] for item in pending['items']])
  else:
    people.annotate_superpixels(pool, None, None, {item['index']: item['superpixels']
                                                   for item in pending['items']})
  record = labelling_record(pending, outcome)
  state.labelling.append(record)
  state.pool, state.pending = pool.to_json(), None
  checkpoint.save_run_state(run_dir, state)
  s = record['summary']
  log(f'took in the labels of cycle {pending["cycle"]}: {s["labelled_units"]} {pending["unit"]}(s) '
      f'from {len(record["items"])} file(s) by {", ".join(s["labelled_by"])}, '
      f'{s["seconds_per_unit"]} s per unit')


def _same(path: str, label: np.ndarray) -> bool:
  try:
    return np.array_equal(label_returns.read_label(path), label)
  except ValueError:
    return False
