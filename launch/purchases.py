"""What a purchase buys, whole images against superpixels (docs/results/superpixels.md).

  python -m launch.purchases \
      --records=docs/results/benchmark/image,docs/results/benchmark/superpixel \
      --out=docs/results/superpixels/purchases --geometry
  python -m launch.purchases --flagfile=configs/bench/dense_image.flags \
      --units=image,superpixel --out=/tmp/dense_purchases --geometry

Replays random selection without training: of each experiment under --records
(its config.json, the same data), checked against its records, with every
record's mIoU set against labeled pixels; or, without --records, of the
configuration the experiment flags give, once per unit of --units (what its
purchases would buy). Describes every purchase (pixels per instance, class
mix, images touched) and with --geometry measures the pool's superpixels
against its instances. Minutes on a CPU; trains nothing.
"""

import dataclasses

from absl import flags

from launch import _app
from launch import _flags
from segal_jax.errors import UserError
from segal_jax import purchases

_RECORDS = flags.DEFINE_list(
    'records', None, 'Work directories of launch.run experiments on the same data (one unit '
    'each), comma-separated; each needs its config.json and a random run.')
_UNITS = flags.DEFINE_list(
    'units', ['image', 'superpixel'], 'Without --records: replay the configuration of the '
    'experiment flags with each of these units.')
_OUT = flags.DEFINE_string('out', None, 'Write the analysis here (made if missing).')
flags.mark_flag_as_required('out')
_GEOMETRY = flags.DEFINE_bool(
    'geometry', False, 'Also measure superpixels against instances over the pool (geometry.json).')
_flags.define_config_flags()


def main(argv):
  del argv
  if _RECORDS.value:
    sources = [(purchases.load_config(w), w) for w in _RECORDS.value]
  else:
    config = _flags.config_from_flags()
    sources = [(dataclasses.replace(config, al_unit=unit), None) for unit in _UNITS.value]
  summary = purchases.analyze(sources, _OUT.value, with_geometry=_GEOMETRY.value)
  if not summary['replay_matches_records']:
    raise UserError(f"the replay differs from the records at {', '.join(summary['mismatches'])}",
                    'check that the data set and superpixels are those the runs used')
  for p in summary['purchases_all_cycles']:
    print(f"{p['unit']}: {p['pixels_per_instance']:.0f} pixels an instance, "
          f"{p['thing_pixel_share']:.1%} of them things, {p['images_touched']:.0f} images touched")
  checked = 'replay matches the records; ' if _RECORDS.value else ''
  print(f'{checked}wrote {_OUT.value}')


if __name__ == '__main__':
  _app.run(main)
