"""Turns finished runs into the comparison: results.md, summary.json, plots.

  python -m launch.report --workdir=/tmp/quickstart
  python -m launch.report --workdir=workdir/seed_0,workdir/seed_1 --out=workdir/report
  python -m launch.report --workdir=workdir --reference_workdir=workdir_full
  python -m launch.report --workdir=workdir/protocols --cost=clicks
  python -m launch.report --workdir=workdir/protocols --cost=clicks \
      --reference=random@image/image_polygons --out=workdir/protocols/vs_polygons

The full-data mIoU (the dashed line, and the target of the budgets to 90% and
95% of it) comes from, in order: `--full_miou`, the `full` runs under
`--reference_workdir`, the `full` runs under `--workdir`.

Several work directories (seeds finished at different times, on different
machines) are merged into one comparison; a run (strategy, unit, seed) found
in two of them is refused.
"""

import os

from absl import flags

from launch import _app
from segal_jax.errors import UserError
from segal_jax import experiment
from segal_jax import reporting

_WORKDIR = flags.DEFINE_list(
    'workdir', None, 'The work directory of an experiment, or several, comma-separated, whose '
    'runs are reported together (then --out is needed).')
flags.mark_flag_as_required('workdir')
_FULL_MIOU = flags.DEFINE_float(
    'full_miou', None, 'The full-data mIoU to compare with, when --workdir holds no full run.')
_COST = flags.DEFINE_enum(
    'cost', 'instances', experiment.COSTS,
    "The cost axis: 'instances' (the study's count) or 'clicks' (every protocol's clicks, "
    'docs/protocols.md).')
_REFERENCE_WORKDIR = flags.DEFINE_list(
    'reference_workdir', None,
    'Work directories holding runs of the `full` strategy (configs/*/full.flags), merged '
    'like --workdir; their mean mIoU is the full-data line.')

_REFERENCE = flags.DEFINE_string(
    'reference', None,
    'The line every line is compared with (paired differences, AUC difference, saving): '
    'STRATEGY@UNIT (e.g. random@image/image_polygons: protocols against each other), or '
    'STRATEGY alone for that strategy of each line\'s own unit. Default: random of each '
    'line\'s unit, where there is one.')
_OUT = flags.DEFINE_string(
    'out', None, 'Write results.md, summary.json and the plots here (made if missing) '
    'instead of into --workdir.')


def _full_reference() -> dict | None:
  """The full-data mIoU the flags name, or None (then --workdir's own full runs)."""
  if _FULL_MIOU.value is not None and _REFERENCE_WORKDIR.value:
    raise UserError('--full_miou and --reference_workdir both give the full-data mIoU',
                    'pass only one of them')
  if _FULL_MIOU.value is not None:
    if not 0 < _FULL_MIOU.value <= 1:
      raise UserError(f'--full_miou={_FULL_MIOU.value} is not an mIoU',
                      'pass a value in (0, 1], e.g. --full_miou=0.5')
    return {'mean': _FULL_MIOU.value, 'low': None, 'high': None, 'n': 1,
            'source': '--full_miou'}
  if _REFERENCE_WORKDIR.value:
    where = ','.join(_REFERENCE_WORKDIR.value)
    full = reporting.full_reference(experiment.collect_many(_REFERENCE_WORKDIR.value))
    if full is None:
      raise UserError(f'no finished run of the full strategy under {where}',
                      'run launch.run with --flagfile=configs/synthetic/full.flags there, or '
                      'pass --full_miou')
    return dict(full, source=f'the full strategy\'s runs in {where}')
  return None


def main(argv):
  del argv
  full = _full_reference()
  reference = None if _REFERENCE.value is None else reporting.parse_reference(_REFERENCE.value)
  workdirs = _WORKDIR.value
  if len(workdirs) > 1 and not _OUT.value:
    raise UserError(f'{len(workdirs)} work directories are merged but --out is not set',
                    'pass --out=DIR for the merged report')
  records = experiment.collect_many(workdirs)
  out = _OUT.value or workdirs[0]
  print(experiment.summarize(out, records, full, cost=_COST.value, reference=reference))
  print(f'wrote {os.path.join(out, "results.md")}, summary.json, '
        'miou_vs_images.png, miou_vs_cost.png')


if __name__ == '__main__':
  _app.run(main)
