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
waited for them (`run_state.save_run_state`).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Any, Callable

import numpy as np

from segal_jax import annotations
from segal_jax import annotators
from segal_jax import data
from segal_jax import export
from segal_jax import label_requests
from segal_jax import label_returns
from segal_jax import pool as pool_lib
from segal_jax import run_state
from segal_jax.errors import UserError

PREFIX = 'image_folder:'
VALIDATION_FILE = 'validation.json'  # under the run directory: the held-out images
HOLDOUT = 0.2  # of the images labeled at the start, without a val/ split


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
  if config.al_protocol != annotators.DEFAULT or config.noise_flip or config.noise_erode:
    raise UserError('--al_protocol and --noise_* simulate an annotator, and people label here',
                    'drop them with --al_annotator=human')
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
  state = run_state.load_run_state(run_dir, config.fingerprint())
  if state is None or state.pending is None:
    return
  pending, folder = state.pending, folder_of(config)
  where = label_requests.request_dir(run_dir, pending['cycle'])
  outcome = label_returns.check(pending, where, folder)
  for line in outcome.problems:
    log(f'problem: {line}')
  for line in outcome.unanswered:
    log(f'waiting: {line}')
  if outcome.problems:
    raise UserError(f'{len(outcome.problems)} problem(s) with the labels returned for cycle '
                    f'{pending["cycle"]} (one per line above); nothing was taken in',
                    'fix or remove those files and rerun the same command')
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
  run_state.save_run_state(run_dir, state)
  s = record['summary']
  log(f'took in the labels of cycle {pending["cycle"]}: {s["labelled_units"]} {pending["unit"]}(s) '
      f'from {len(record["items"])} file(s) by {", ".join(s["labelled_by"])}, '
      f'{s["seconds_per_unit"]} s per unit')


def _same(path: str, label: np.ndarray) -> bool:
  try:
    return np.array_equal(label_returns.read_label(path), label)
  except ValueError:
    return False


def _subset(split, indices: np.ndarray):
  """The images `indices` of `split`, in memory."""
  indices = np.asarray(indices, np.int64)
  return dataclasses.replace(
      split, ids=tuple(split.ids[i] for i in indices), images=np.asarray(split.images[indices]),
      labels=np.asarray(split.labels[indices]), instances=np.asarray(split.instances[indices]),
      labeled=np.asarray(split.labeled)[indices])


def _concat(a, b):
  """One split of the images of `a` then `b`, in memory (`a`'s normalisation)."""
  both = lambda f: np.concatenate([np.asarray(getattr(a, f)[:]), np.asarray(getattr(b, f)[:])])
  return dataclasses.replace(a, ids=tuple(a.ids) + tuple(b.ids), images=both('images'),
                             labels=both('labels'), instances=both('instances'),
                             labeled=np.concatenate([a.labeled, b.labeled]))


def load_data(config, run_dir: str, log: Callable[[str], None] = print):
  """(pool split, validation split, [N] unit costs) of a folder people label.

  The folder's `val/` split validates when it has one (its labeled images).
  Otherwise every image is in the pool, and a fixed part of the images labeled
  when the run started (`HOLDOUT` of them, at least one, seeded by the run's
  seed) is held out to validate; the choice is kept in `<run_dir>/validation.json`.
  Either way it is said in one line.
  """
  folder = folder_of(config)
  kw = dict(data_dir=config.data_dir or None, config=config.dataset_config or None,
            allow_unlabeled=True)
  train = data.load(config.dataset, 'train', **kw)
  val = data.load(config.dataset, 'validation', **kw)
  if any(os.path.isdir(os.path.join(folder, 'images', v)) for v in ('val', 'validation')):
    val = _subset(val, np.flatnonzero(val.labeled))
    if not len(val):
      raise UserError(f'{folder}/images/val has no labeled image',
                      'add label PNGs for the validation images to labels/val')
    log(f'validation: the {len(val)} labeled image(s) of {folder}/images/val')
    return train, val, annotators.get('human').image_costs(train)
  pool = _concat(train, val)
  path = os.path.join(run_dir, VALIDATION_FILE)
  if os.path.exists(path):
    with open(path) as f:
      held = json.load(f)['images']
  else:
    labeled = [pool.ids[i] for i in np.flatnonzero(pool.labeled)]
    if len(labeled) < 2:
      raise UserError(f'{folder} has {len(labeled)} labeled image(s)',
                      'label at least two images (one is held out to validate), or add '
                      'images/val with labels/val')
    n = max(1, round(HOLDOUT * len(labeled)))
    order = np.random.default_rng(config.al_seeds[0]).permutation(len(labeled))
    held = sorted(labeled[k] for k in order[:n])
    export.write_json(path, {'images': held})
  where = {name: i for i, name in enumerate(pool.ids)}
  missing = [name for name in held if name not in where or not pool.labeled[where[name]]]
  if missing:
    raise UserError(f'the validation image {missing[0]} is gone or lost its label',
                    f'restore {missing[0]} and its label PNG')
  held_idx = np.array(sorted(where[n] for n in held), np.int64)
  log(f'validation: {len(held)} of the images labeled at the start, held out and never '
      f'trained on (listed in {path})')
  train = _subset(pool, np.setdiff1d(np.arange(len(pool)), held_idx))
  return train, _subset(pool, held_idx), annotators.get('human').image_costs(train)
