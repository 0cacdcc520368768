"""People in the loop: a team labels an image folder between runs.

`--al_annotator=human` on `--dataset=image_folder:PATH`, where some images have
label PNGs and the rest do not, is an experiment that waits for people. Each
run trains on what is labeled, scores the rest, writes the cycle's request
(`label_requests`), offers it to the annotators' tool (`offer`) and stops
(`label_requests.AwaitingLabels`, exit 0). The rerun of the same command
first takes in what came back (`take_in`: every answer checked by
`label_returns`; COCO and tool answers written into `labels/`), records who
labeled what from where and when in the run state, and continues.
`--al_annotator=label_studio` is the same loop with the answers in a Label
Studio server instead of files (`label_studio_source`, the source of answers).

The folder's `labels/` is the truth for what is labeled, and the run keeps
every image by its name: the folder may grow, shrink or have labels corrected
between runs (`folder_changes`). An answer adds labels where they were asked
for only (`label_returns.taken`). Validation is the folder's `val/` split when
there is one, else a fixed held-out part of the images labeled at the start
(`HOLDOUT`, by name), said at start.

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
import shutil
from typing import Any, Callable

import numpy as np

from segal_jax.annotation import annotators
from segal_jax import data
from segal_jax.data import image_folder
from segal_jax.errors import UserError
from segal_jax import formats
from segal_jax.formats import annotation_files as annotations
from segal_jax.formats import files as _files
from segal_jax.labelling import folder_changes
from segal_jax.labelling import requests as label_requests
from segal_jax.labelling import returns as label_returns
from segal_jax.labelling import sources as label_studio_source
from segal_jax.state import pool as pool_lib
from segal_jax.state import run_state

PREFIX = 'image_folder:'
VALIDATION_FILE = 'validation.json'  # under the run directory: the held-out images
HOLDOUT = 0.2  # of the images labeled at the start, without a val/ split


def enabled(config) -> bool:
  return config.al_annotator in annotators.PEOPLE


def folder_of(config) -> str:
  return os.path.abspath(os.path.expanduser(config.dataset[len(PREFIX):]))


def check_config(config) -> None:
  """People label one run of one image folder."""
  if not enabled(config):
    return
  flag = f'--al_annotator={config.al_annotator}'
  if not config.dataset.startswith(PREFIX):
    raise UserError(f'{flag} needs an image folder, not --dataset={config.dataset}',
                    'pass --dataset=image_folder:PATH')
  if len(config.al_strategies) != 1 or len(config.al_seeds) != 1:
    raise UserError(f'{flag} runs one strategy with one seed',
                    'pass one --al_strategies and one --al_seeds')
  if config.al_protocol != annotators.DEFAULT or config.noise_flip or config.noise_erode:
    raise UserError('--al_protocol and --noise_* simulate an annotator, and people label here',
                    f'drop them with {flag}')
  if config.al_strategies[0] == 'full':
    raise UserError('--al_strategies=full trains on every image, so nothing is requested',
                    'choose a selection strategy, e.g. --al_strategies=mc_variance')
  label_studio_source.check_config(config)


def _seconds(start: str, end: str) -> float:
  parse = datetime.datetime.fromisoformat
  return max(0.0, (parse(end) - parse(start)).total_seconds())


def labelling_record(pending: dict[str, Any], outcome: label_returns.Outcome,
                     withdrawn: tuple[str, ...] = ()) -> dict[str, Any]:
  """What came back for a request: per image who, from which file, when; the
  requested images that left the folder (`withdrawn`); and the summary a
  cycle's record carries (labelling time per unit). The labelling time is
  the annotators' own where the tool measured every answer (`seconds`,
  Label Studio's lead times), else the time from request to last return."""
  items = []
  for item in pending['items']:
    a = outcome.answers[item['name']]
    items.append({'name': a.name, 'file': a.file, 'kind': a.kind, 'who': a.who,
                  'returned_at': a.returned_at, 'labeled_pixels': a.pixels, 'cut_pixels': a.cut,
                  'units': len(item['superpixels']) if item['superpixels'] is not None else 1,
                  **({} if a.seconds is None else {'seconds': round(a.seconds, 1)})})
  returned = max((i['returned_at'] for i in items), default=pending['requested_at'])
  units = sum(i['units'] for i in items)
  timed = bool(items) and all('seconds' in i for i in items)
  seconds = (sum(outcome.answers[i['name']].seconds for i in items) if timed
             else _seconds(pending['requested_at'], returned))
  return {'cycle': pending['cycle'], 'unit': pending['unit'],
          'requested_at': pending['requested_at'], 'returned_at': returned, 'items': items,
          'withdrawn': list(withdrawn),
          'summary': {'labelled_units': units, 'labelling_seconds': round(seconds, 1),
                      'seconds_per_unit': round(seconds / max(units, 1), 2),
                      'labelling_time': 'annotators' if timed else 'request to return',
                      'labelled_by': sorted({i['who'] for i in items})}}


def held_out_count(labeled: int) -> int:
  """How many of `labeled` images a folder without val/ holds out (`HOLDOUT`, at least one)."""
  return max(1, round(HOLDOUT * labeled))


def held_out(run_dir: str) -> list[str]:
  """The held-out validation images of a run (`VALIDATION_FILE`), if it has them."""
  path = os.path.join(run_dir, VALIDATION_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return list(json.load(f)['images'])


def take_in(config, run_dir: str, log: Callable[[str], None] = print, source=None) -> None:
  """Brings the run in `run_dir` up to date with its folder, then takes in the
  labels that came back for its pending request, if there is one.

  First: partial files a stopped run left in `labels/` are removed; a run
  state keyed by position is migrated to names; images added to or removed
  from the folder join or leave the pool; label files edited after intake are
  recorded as corrections (`folder_changes`). Requested images that left the
  folder are withdrawn from the request.

  `source` is where the answers are (`label_studio_source`; default: the
  config's).

  Raises:
    UserError: a returned file has a problem (each said in one line first);
      nothing is taken in. Or the annotation tool cannot be reached (said
      first, also for a run that has not started).
    label_requests.AwaitingLabels: requests are still unanswered (each said
      in one line first); what came back is kept where it is.
  """
  source = source or label_studio_source.source(config, run_dir)
  source.reach()  # an annotation tool out of reach is said before any training
  state = run_state.load_run_state(run_dir, config.fingerprint())
  if state is None:
    return
  folder, held = folder_of(config), held_out(run_dir)
  for path in _files.remove_stale_parts(os.path.join(folder, 'labels')):
    log(f'removed {path}, a partial file left by a stopped run')
  options = image_folder.parse_options(config.dataset_config or None)
  migrated = folder_changes.migrate(state, folder, options, held, run_dir, log)
  folder_changes.follow(state, folder_changes.pool_images(folder, held), log)
  pending = state.pending
  asked = {item['name'] for item in pending['items']} if pending else set()
  corrected = folder_changes.corrections(
      state, folder, [n for n in pool_lib.labeled_names(state.pool) + held if n not in asked], log)
  # Saved with the labels taken in, else only for a migration (once) or a
  # correction after the last cycle: rewriting the step that waits for labels
  # would delete it for a moment, and the loop follows the folder by itself.
  if pending is None:
    if migrated or corrected:
      run_state.save_run_state(run_dir, state)
    return
  try:
    _take_in(state, folder, run_dir, log, source)
  except (UserError, label_requests.AwaitingLabels):
    if migrated:
      run_state.save_run_state(run_dir, state)
    raise


def offer(config, run_dir: str, log: Callable[[str], None] = print, source=None) -> None:
  """Offers the run's pending request to the annotators' tool (nothing more for
  files: the request is its files). A failure is a `UserError`; the request
  stays pending and the rerun offers what the tool lacks."""
  state = run_state.load_run_state(run_dir, config.fingerprint())
  if state is None or state.pending is None:
    return
  source = source or label_studio_source.source(config, run_dir)
  source.offer(state.pending, label_requests.request_dir(run_dir, state.pending['cycle']), log)


def _take_in(state, folder: str, run_dir: str, log: Callable[[str], None], source) -> None:
  """Takes in what came back for `state.pending` (see `take_in`)."""
  pending = state.pending
  where = label_requests.request_dir(run_dir, pending['cycle'])
  present = set(state.images) | set(held_out(run_dir))
  withdrawn = [item['name'] for item in pending['items'] if item['name'] not in present]
  for name in withdrawn:
    log(f'withdrawn: {name} left the folder, so it is no longer requested')
  request = dict(pending, items=[item for item in pending['items'] if item['name'] in present],
                 withdrawn=withdrawn, left=[n for n in pending['labeled'] if n not in present])
  outcome = source.collect(request, where, folder, log)
  for line in outcome.problems:
    log(f'problem: {line}')
  for line in outcome.unanswered:
    log(f'waiting: {line}')
  if outcome.problems:
    raise UserError(f'{len(outcome.problems)} problem(s) with the labels returned for cycle '
                    f'{pending["cycle"]} (one per line above); nothing was taken in',
                    'fix what each names (the file, or the task in the annotation tool) and '
                    'rerun the same command')
  if outcome.unanswered:
    raise label_requests.AwaitingLabels(
        f'{len(outcome.unanswered)} of {len(request["items"])} requested image(s) are not '
        f'labeled yet (one per line above); the rest is kept.\n'
        + label_requests.instructions(pending, where))
  for line in outcome.notes:
    log(f'note: {line}')
  for name, answer in sorted(outcome.answers.items()):
    path = folder_changes.label_file(folder, name)
    if answer.kind == 'png' and answer.cut:  # kept as it came back
      kept = os.path.join(where, label_returns.RETURNED, 'as_returned', name + '.png')
      os.makedirs(os.path.dirname(kept), exist_ok=True)
      shutil.copy2(path, kept)
    if answer.kind == 'coco' or not _same(path, answer.label):
      annotations.write_png(path, answer.label)
    state.label_digests[name] = folder_changes.digest(path)
  _annotate(state, request)
  record = labelling_record(request, outcome, withdrawn)
  state.labelling.append(record)
  if state.records and state.records[-1]['cycle'] == pending['cycle'] - 1:
    state.records[-1].update(new_labeled_pixels=sum(a.pixels for a in outcome.answers.values()),
                             new_cost=record['summary']['labelled_units'])
  state.pending = None
  run_state.save_run_state(run_dir, state)
  s = record['summary']
  log(f'took in the labels of cycle {pending["cycle"]}: {s["labelled_units"]} {pending["unit"]}(s) '
      f'from {len(record["items"])} answer(s) by {", ".join(s["labelled_by"]) or "nobody"}, '
      f'{s["seconds_per_unit"]} s per unit')


def _annotate(state, request: dict[str, Any]) -> None:
  """Marks the requested images or regions of `request` labeled in `state.pool`."""
  names = sorted(set(pool_lib.labeled_names(state.pool))
                 | {item['name'] for item in request['items']})
  position = {name: k for k, name in enumerate(names)}
  pool = pool_lib.PoolLabels.from_json(state.pool, names)
  people = annotators.get('human')
  if request['unit'] == 'image':
    people.annotate_images(pool, None, [position[item['name']] for item in request['items']])
  else:
    people.annotate_superpixels(pool, None, None, {position[item['name']]: item['superpixels']
                                                   for item in request['items']})
  state.pool = pool.to_json(names)


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

  The pool is in the order of the image names. The folder's `val/` split
  validates when it has one (its labeled images). Otherwise every image is in
  the pool, and a fixed part of the images labeled when the run started
  (`HOLDOUT` of them, at least one, seeded by the run's seed) is held out to
  validate; the names are kept in `<run_dir>/validation.json`, so images added
  later never move it, and one that is removed leaves it. Either way it is
  said in one line.
  """
  folder = folder_of(config)
  kw = dict(data_dir=config.data_dir or None, config=config.dataset_config or None,
            allow_unlabeled=True)
  train = data.load(config.dataset, 'train', **kw)
  val = data.load(config.dataset, 'validation', **kw)
  if folder_changes.has_val_folder(folder):
    val = _subset(val, np.flatnonzero(val.labeled))
    if not len(val):
      raise UserError(f'{folder}/images/val has no labeled image',
                      'add label PNGs for the validation images to labels/val')
    log(f'validation: the {len(val)} labeled image(s) of {folder}/images/val')
    return train, val, annotators.get('human').image_costs(train)
  pool = _concat(train, val)
  pool = _subset(pool, np.argsort(np.asarray(pool.ids, dtype=object)))
  path = os.path.join(run_dir, VALIDATION_FILE)
  if os.path.exists(path):
    held = held_out(run_dir)
  else:
    labeled = [pool.ids[i] for i in np.flatnonzero(pool.labeled)]
    if len(labeled) < 2:
      raise UserError(f'{folder} has {len(labeled)} labeled image(s)',
                      'label at least two images (one is held out to validate), or add '
                      'images/val with labels/val')
    n = held_out_count(len(labeled))
    order = np.random.default_rng(config.al_seeds[0]).permutation(len(labeled))
    held = sorted(labeled[k] for k in order[:n])
    formats.write_json(path, {'images': held})
  where = {name: i for i, name in enumerate(pool.ids)}
  gone = [name for name in held if name not in where]
  if gone:
    log(f'validation: {len(gone)} held-out image(s) left the folder ({", ".join(gone[:3])})')
  held = [name for name in held if name in where]
  unlabeled = [name for name in held if not pool.labeled[where[name]]]
  if unlabeled or not held:
    lost = unlabeled[0] if unlabeled else gone[0]
    raise UserError(f'the validation image {lost} lost its label' if unlabeled else
                    'every held-out validation image left the folder',
                    f'restore {lost} and its label PNG')
  held_idx = np.array(sorted(where[n] for n in held), np.int64)
  log(f'validation: {len(held)} of the images labeled at the start, held out and never '
      f'trained on (listed in {path})')
  train = _subset(pool, np.setdiff1d(np.arange(len(pool)), held_idx))
  return train, _subset(pool, held_idx), annotators.get('human').image_costs(train)
