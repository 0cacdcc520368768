"""A PyTorch DRN: the conversion parity tests' peer and the benchmarks' PyTorch model.

It follows the published network's structure and parameter names (the layouts
`segal_jax/models/convert.py` reads) so its state dicts look like the public
checkpoints. `TorchDRNSeg(..., dropout_after=...)` adds the study's MC-dropout
layers (elementwise, after the given stages) without changing the state dict.
"""

import math

import torch
from torch import nn


def _conv3(cin, cout, stride=1, dilation=1):
  return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation,
                   bias=False)


def _shortcut(cin, cout, stride):
  if stride == 1 and cin == cout:
    return None
  return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                       nn.BatchNorm2d(cout))


class Basic(nn.Module):
  expansion = 1

  def __init__(self, cin, planes, stride=1, dilation=(1, 1), residual=True):
    super().__init__()
    self.conv1 = _conv3(cin, planes, stride, dilation[0])
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = _conv3(planes, planes, 1, dilation[1])
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = _shortcut(cin, planes, stride)
    self.residual = residual

  def forward(self, x):
    y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
    if self.residual:
      y = y + (x if self.downsample is None else self.downsample(x))
    return torch.relu(y)


class Bottle(nn.Module):
  expansion = 4

  def __init__(self, cin, planes, stride=1, dilation=(1, 1), residual=True):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = _conv3(planes, planes, stride, dilation[1])
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.downsample = _shortcut(cin, planes * 4, stride)
    self.residual = residual

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = torch.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    if self.residual:
      y = y + (x if self.downsample is None else self.downsample(x))
    return torch.relu(y)


class TorchDRN(nn.Module):
  """kind 'C' or 'D'; block Basic or Bottle; layers: 8 stage depths."""

  def __init__(self, kind, block, layers, channels, num_classes=10):
    super().__init__()
    self.cin = channels[0]
    stem = [nn.Conv2d(3, channels[0], 7, padding=3, bias=False),
            nn.BatchNorm2d(channels[0]), nn.ReLU()]
    if kind == 'C':
      self.conv1, self.bn1, self.relu = stem
      self.layer1 = self._blocks(Basic, channels[0], layers[0])
      self.layer2 = self._blocks(Basic, channels[1], layers[1], stride=2)
    else:
      self.layer0 = nn.Sequential(*stem)
      self.layer1 = self._convs(channels[0], layers[0])
      self.layer2 = self._convs(channels[1], layers[1], stride=2)
    self.layer3 = self._blocks(block, channels[2], layers[2], stride=2)
    self.layer4 = self._blocks(block, channels[3], layers[3], stride=2)
    self.layer5 = self._blocks(block, channels[4], layers[4], dilation=2)
    self.layer6 = self._blocks(block, channels[5], layers[5], dilation=4)
    if kind == 'C':
      self.layer7 = self._blocks(Basic, channels[6], layers[6], dilation=2, residual=False)
      self.layer8 = self._blocks(Basic, channels[7], layers[7], residual=False)
    else:
      self.layer7 = self._convs(channels[6], layers[6], dilation=2)
      self.layer8 = self._convs(channels[7], layers[7])
    self.out_dim = channels[7]
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Conv2d(channels[7], num_classes, 1)

  def _blocks(self, block, planes, n, stride=1, dilation=1, residual=True):
    mods = []
    for i in range(n):
      mods.append(block(self.cin, planes, stride if i == 0 else 1,
                        (dilation, dilation), residual))
      self.cin = planes * block.expansion
    return nn.Sequential(*mods)

  def _convs(self, cout, n, stride=1, dilation=1):
    mods = []
    for i in range(n):
      mods += [_conv3(self.cin, cout, stride if i == 0 else 1, dilation),
               nn.BatchNorm2d(cout), nn.ReLU()]
      self.cin = cout
    return nn.Sequential(*mods)

  def features(self, x):
    for m in list(self.children())[:-2]:
      x = m(x)
    return x


def bilinear_up(classes, stride=8):
  """The published fixed bilinear upsampler (kernel 2 * stride, padding stride / 2)."""
  size = 2 * stride
  up = nn.ConvTranspose2d(classes, classes, size, stride=stride, padding=stride // 2,
                          groups=classes, bias=False)
  f = stride
  c = (2 * f - 1 - f % 2) / (2.0 * f)
  w = torch.tensor([1 - abs(i / f - c) for i in range(size)])
  with torch.no_grad():
    up.weight.copy_((w[:, None] * w[None, :]).expand(classes, 1, size, size))
  up.weight.requires_grad = False
  return up


class TorchDRNSeg(nn.Module):
  """Segmentation model; `named=False`: keys `base.0...`, True: `base.layer0...`.

  `dropout_after`: stages (1-8) followed by dropout of rate `dropout_rate`
  (segal-jax's `DROPOUT_AFTER`); active while `self.dropout` is in train mode.
  """

  def __init__(self, net, classes, named=False, dropout_after=(), dropout_rate=0.5):
    super().__init__()
    self.base = net if named else nn.Sequential(*list(net.children())[:-2])
    self.seg = nn.Conv2d(net.out_dim, classes, 1)
    self.up = bilinear_up(classes)
    self.named = named
    self.dropout_after = tuple(dropout_after)
    self.dropout = nn.Dropout(dropout_rate)

  def forward(self, x):
    mods = list(self.base.children())
    if self.named:
      mods = mods[:-2]
    first_stage = len(mods) - 8  # index of stage 1 (DRN-C's stem is 3 modules)
    for i, m in enumerate(mods):
      x = m(x)
      if i - first_stage + 1 in self.dropout_after:
        x = self.dropout(x)
    return self.up(self.seg(x))


def randomise(model, seed=0):
  """Random weights and BatchNorm statistics, so every tensor matters."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, t in model.state_dict().items():
      if name.endswith('num_batches_tracked') or name.startswith('up.'):
        continue
      if name.endswith('running_var'):
        t.copy_(0.5 + torch.rand(t.shape, generator=g))
      elif t.ndim == 4:
        fan = t.shape[1] * t.shape[2] * t.shape[3]
        t.copy_(torch.randn(t.shape, generator=g) * math.sqrt(2.0 / fan))
      else:
        # BatchNorm scales around 0.8 keep deep residual stacks at unit scale.
        t.copy_(0.1 * torch.randn(t.shape, generator=g) + 0.8 * name.endswith('.weight'))
  return model.eval()
