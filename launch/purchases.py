"""What a purchase buys, whole images against superpixels (docs/results/superpixels.md).

  python -m launch.purchases \
      --records=docs/results/benchmark/image,docs/results/benchmark/superpixel \
      --out=docs/results/superpixels/purchases --geometry

Replays random selection of each experiment under --records (its config.json,
the same data) without training, checks the replay against the records,
describes every purchase (pixels per instance, class mix, images touched),
sets every record's mIoU against labeled pixels, and with --geometry measures
the pool's superpixels against its instances. Minutes on a CPU; trains nothing.
"""

from absl import flags

from launch import _app
from segal_jax import purchases
from segal_jax.errors import UserError

_RECORDS = flags.DEFINE_list(
    'records', None, 'Work directories of launch.run experiments on the same data (one unit '
    'each), comma-separated; each needs its config.json and a random run.')
flags.mark_flag_as_required('records')
_OUT = flags.DEFINE_string('out', None, 'Write the analysis here (made if missing).')
flags.mark_flag_as_required('out')
_GEOMETRY = flags.DEFINE_bool(
    'geometry', False, 'Also measure superpixels against instances over the pool (geometry.json).')


def main(argv):
  del argv
  summary = purchases.analyze(_RECORDS.value, _OUT.value, with_geometry=_GEOMETRY.value)
  if not summary['replay_matches_records']:
    raise UserError(f"the replay differs from the records at {', '.join(summary['mismatches'])}",
                    'check that the data set and superpixels are those the runs used')
  for p in summary['purchases_all_cycles']:
    print(f"{p['unit']}: {p['pixels_per_instance']:.0f} pixels an instance, "
          f"{p['thing_pixel_share']:.1%} of them things, {p['images_touched']:.0f} images touched")
  print(f'replay matches the records; wrote {_OUT.value}')


if __name__ == '__main__':
  _app.run(main)
