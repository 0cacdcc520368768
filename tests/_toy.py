"""A one-convolution segmentation model for tests: the network interface
(`model(x, train=..., mc=...) -> (logits, intermediates)`) at almost no cost."""

import flax.linen as nn


class ConvModel(nn.Module):
  """Logits of `classes` classes from one 3x3 convolution."""
  classes: int

  @nn.compact
  def __call__(self, x, *, train, mc=False):
    del train, mc
    return nn.Conv(self.classes, (3, 3))(x), {}
