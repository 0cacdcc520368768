"""The original study's PyTorch pipeline, timed: the peer segal-jax is measured against.

What it does is what the study's code does, on a `TorchDRNSeg` DRN-D:

* MC scoring (`mc_scores`): D separate full forward passes of the batch with
  dropout on (`model.eval()`, the dropout module back in train mode), each
  pass's logits copied to the host; softmax and the variance over passes in
  NumPy on the D x B x C x H x W stack; per image, the mean over classes and
  pixels.
* Training step (`make_train_step`): SGD (momentum 0.9, weight decay 1e-4,
  added to the gradient) on cross-entropy with `ignore_index=255`, BatchNorm
  and dropout in train mode.

`benchmarks.side_by_side` times them beside segal-jax.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from benchmarks import torch_drn

IGNORE = 255
# segal-jax's dropout placements (`segal_jax.models.drn.DROPOUT_AFTER`).
DROPOUT_AFTER = {'stages': (3, 4, 5, 6), 'head': (8,), 'none': ()}
DRN_D_22_LAYERS = (1, 1, 2, 2, 2, 2, 1, 1)
CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)


def make_model(placement: str = 'stages', num_classes: int = 19,
               width_multiplier: float = 1.0, seed: int = 0) -> torch_drn.TorchDRNSeg:
  """DRN-D-22 segmentation network with dropout after `placement`'s stages."""
  torch.manual_seed(seed)
  channels = [max(1, int(round(c * width_multiplier))) for c in CHANNELS]
  net = torch_drn.TorchDRN('D', torch_drn.Basic, DRN_D_22_LAYERS, channels)
  return torch_drn.TorchDRNSeg(net, num_classes,
                               dropout_after=DROPOUT_AFTER[placement])


def _softmax(logits: np.ndarray, axis: int) -> np.ndarray:
  e = np.exp(logits - logits.max(axis=axis, keepdims=True))
  return e / e.sum(axis=axis, keepdims=True)


def mc_scores(model: torch_drn.TorchDRNSeg, images: torch.Tensor,
              passes: int) -> np.ndarray:
  """MC-dropout variance per image, the study's way.

  Args:
    model: from `make_model`.
    images: [B, 3, H, W] float32 normalised.
    passes: D.

  Returns:
    [B] float32: mean over pixels and classes of the variance over passes of
    the softmax probabilities.
  """
  model.eval()
  model.dropout.train()
  probs = []
  with torch.no_grad():
    for _ in range(passes):
      logits = model(images).numpy()  # [B, C, H, W] on the host
      probs.append(_softmax(logits, axis=1))
  variance = np.var(np.stack(probs), axis=0)  # [B, C, H, W]
  return variance.mean(axis=(1, 2, 3))


def make_train_step(model: nn.Module, lr: float = 0.01
                    ) -> Callable[[torch.Tensor, torch.Tensor], float]:
  """`step(images [B,3,H,W] float32, labels [B,H,W] int64) -> loss`, one SGD step."""
  optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9,
                              weight_decay=1e-4)
  criterion = nn.CrossEntropyLoss(ignore_index=IGNORE)

  def step(images, labels):
    model.train()
    optimizer.zero_grad()
    loss = criterion(model(images), labels)
    loss.backward()
    optimizer.step()
    return loss.item()
  return step


def inputs(batch: int, height: int, width: int, num_classes: int = 19,
           seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
  """Random normalised images [B,3,H,W] and labels [B,H,W] (10% ignored)."""
  rng = np.random.default_rng(seed)
  images = rng.standard_normal((batch, 3, height, width), dtype=np.float32)
  labels = rng.integers(0, num_classes, (batch, height, width))
  labels[rng.random(labels.shape) < 0.1] = IGNORE
  return torch.from_numpy(images), torch.from_numpy(labels)
