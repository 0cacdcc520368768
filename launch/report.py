"""Turns finished runs into learning-curve plots and a markdown table.

  python -m launch.report --workdir=/tmp/quickstart
"""

import os

from absl import flags

from launch import _app
from segal_jax import experiment
from segal_jax.errors import UserError

_WORKDIR = flags.DEFINE_string('workdir', None, 'The work directory of an experiment.')
flags.mark_flag_as_required('workdir')


def main(argv):
  del argv
  records = experiment.collect(_WORKDIR.value)
  if not records:
    raise UserError(f'no finished cycle under {_WORKDIR.value}',
                    'point --workdir at the directory given to launch.run')
  print(experiment.summarize(_WORKDIR.value, records))
  print(f'\nwrote {os.path.join(_WORKDIR.value, "results.md")}, miou_vs_images.png, '
        'miou_vs_cost.png')


if __name__ == '__main__':
  _app.run(main)
