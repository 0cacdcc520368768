"""Runs an active-learning experiment: every strategy x every seed, resumable.

  python -m launch.run --flagfile=configs/quickstart.flags --workdir=/tmp/quickstart

With `--al_annotator=human` on an image folder, each cycle ends by writing a
labelling request and exiting 0 with what to label; rerun the same command once
the labels are in (README: "Active learning with your annotators").
`--al_annotator=label_studio` also sends the request to a Label Studio server
and takes the answers from it (docs/label_studio.md).

`--dry_run` checks everything (flags, data set, init checkpoint, batch sizes
against devices) and prints the plan, its FLOPs and each cycle's training time
on this machine (a few steps measured on blank data) without building the
data set or training anything. A run on an image folder says before it starts
how long its first cycle will train here.
"""

import dataclasses
import os
import signal
import threading

from absl import flags

from launch import _app
from launch import _distributed
from launch import _flags
from segal_jax import data
from segal_jax import experiment
from segal_jax.labelling import requests as label_requests
from segal_jax import parallel
from segal_jax import plan
from segal_jax import reporting

_WORKDIR = flags.DEFINE_string('workdir', 'workdir', 'Where results and state are written.')
_DRY_RUN = flags.DEFINE_bool(
    'dry_run', False, 'Check the flags, the data set (built, or its source files in place), '
    'the init checkpoint and the batch sizes, print the plan of every cycle and the '
    "run's training FLOPs and each cycle's training time on this machine (a few steps timed on "
    'blank data), and exit without building the data set or training.')
_CLASSES = flags.DEFINE_string(
    'classes', None, "An image folder's class table (classes.json) kept elsewhere; the "
    "same as --dataset_config=classes=FILE. Default: the folder's own classes.json.")
_flags.define_config_flags()


def main(argv):
  del argv
  _distributed.initialize()  # before anything touches the devices
  config = _flags.config_from_flags()
  if _CLASSES.value:
    config = dataclasses.replace(config, dataset_config=data.with_folder_options(
        config.dataset, config.dataset_config, classes=os.path.abspath(_CLASSES.value)))
  experiment.validate(config)
  if _DRY_RUN.value:
    print(plan.describe(config))
    return
  if config.dataset.startswith(data.IMAGE_FOLDER_PREFIX) and parallel.is_writer():
    note = plan.first_cycle_note(config)  # your own data: how long, before it starts
    if note:
      print(note)
  # Preemption (SIGTERM): finish the current epoch, checkpoint, exit; a rerun resumes.
  stop = threading.Event()
  signal.signal(signal.SIGTERM, lambda *_: stop.set())
  try:
    records = experiment.run(config, _WORKDIR.value, should_stop=stop.is_set)
  except label_requests.AwaitingLabels as e:  # people label now; the rerun continues
    print(f'\n{e}')
    return
  if not parallel.is_writer():
    return
  print('\nvalidation mIoU per cycle (mean ± std over seeds):')
  print(reporting.format_table(records))
  print(f'\nwrote {_WORKDIR.value}/results.md, miou_vs_images.png, miou_vs_cost.png '
        'and per-run metrics.jsonl')


if __name__ == '__main__':
  _app.run(main)
