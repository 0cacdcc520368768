"""Measures this product's hot paths beside the reference algorithms (DESIGN §5).

  python -m launch.benchmark --size=small --out=/tmp/bench_small.json
  python -m launch.benchmark --size=cityscapes --out=bench_gpu.json   # on a GPU
  python -m launch.benchmark --size=small --only=mc,memory --repeats=3
  python -m launch.benchmark --size=small --only=selection --peer=false   # 10^5 superpixels

Prints a table (name, this product, reference, ratio and, when PyTorch is
importable, the study's PyTorch pipeline as a peer column with the ratio to
it) and writes the full report as JSON (medians, min, max, every run, and the
machine description). `--peer=false` leaves the peer out.
"""

from absl import flags

from benchmarks import hot_paths as benchmark
from launch import _app
from segal_jax import formats

_SIZE = flags.DEFINE_enum('size', 'small', list(benchmark.SIZES),
                          'tiny: seconds (tests); small: CPU-sized; '
                          'cityscapes: 1024x2048 and the full network (GPU).')
_OUT = flags.DEFINE_string('out', None, 'Write the JSON report to this file.')
_REPEATS = flags.DEFINE_integer('repeats', None,
                                'Timed runs per measurement (default: per size).',
                                lower_bound=1)
_ONLY = flags.DEFINE_list('only', [], 'Run only these groups: '
                          + ','.join(benchmark.GROUPS) + '.')
_PEER = flags.DEFINE_bool('peer', True, 'Measure beside the PyTorch pipeline '
                          '(when torch is importable).')
_PEER_THREADS = flags.DEFINE_integer('peer_threads', None, 'Intra-op threads of both '
                                     'sides of the peer (default: one per core).',
                                     lower_bound=1)


def main(argv):
  del argv
  report = benchmark.run(_SIZE.value, repeats=_REPEATS.value, only=_ONLY.value or None,
                         peer=_PEER.value, peer_threads=_PEER_THREADS.value)
  machine = report['machine']
  print(f"\n{machine['cpu']}, {machine['cores']} cores, load {machine['load_average']}, "
        f"jax {machine['jax']} ({machine['backend']}), {machine['date']}, "
        f"size={report['size']}\n")
  print(benchmark.format_table(report))
  if _OUT.value:
    formats.write_json(_OUT.value, report)  # atomic: a complete report or the old one
    print(f'\nwrote {_OUT.value}')


if __name__ == '__main__':
  _app.run(main)
