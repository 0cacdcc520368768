"""Converts a PyTorch DRN checkpoint into Flax variables (an Orbax checkpoint).

  python -m launch.convert --source=drn_d_22_cityscapes.pth --arch=drn_d_22 --out=DIR

The written checkpoint holds {'params', 'batch_stats'} for `DRNSeg` and the
architecture, classes and width as its meta (`segal_jax.state.checkpoint.save_model`),
so it is what `python -m launch.score --checkpoint=DIR` reads (normalisation
defaults to Cityscapes', dropout to --dropout_placement=stages, rate 0.5).
"""

from absl import flags

from launch import _app
from segal_jax.state import checkpoint

_SOURCE = flags.DEFINE_string('source', None, 'PyTorch .pth file (a state dict).')
_ARCH = flags.DEFINE_string('arch', 'drn_d_22', 'DRN architecture of the checkpoint.')
_OUT = flags.DEFINE_string('out', None, 'New directory for the Orbax checkpoint.')
_NUM_CLASSES = flags.DEFINE_integer(
    'num_classes', None,
    'Classifier outputs; read from seg.weight when the checkpoint has one, '
    'else 19 (fresh classifier on an ImageNet trunk).')
_WIDTH = flags.DEFINE_float('width_multiplier', 1.0, 'Width of the checkpoint network.')

flags.mark_flags_as_required(['source', 'out'])


def main(argv):
  del argv
  out = checkpoint.convert_torch(_SOURCE.value, _ARCH.value, _OUT.value,
                             _NUM_CLASSES.value, _WIDTH.value)
  print(f'wrote {out}')


if __name__ == '__main__':
  _app.run(main)
