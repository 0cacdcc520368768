"""Annotator noise: flip rate against the binomial, erosion width on a hand-drawn square."""

import numpy as np
import pytest

from segal_jax.annotation import noise


def test_flip_rate_is_right_statistically():
  n, rate, classes = 20000, 0.2, 5
  truth = np.arange(n) % classes
  got = noise.flipped_classes(noise.Noise(flip=rate, seed=3), 7, np.arange(n), truth, classes)
  flipped = got != truth
  # Binomial(n, rate): 4.5 standard deviations either side.
  assert abs(flipped.mean() - rate) < 4.5 * np.sqrt(rate * (1 - rate) / n)
  # A flip goes to one of the other classes, each about equally often.
  offsets = (got[flipped] - truth[flipped]) % classes
  assert offsets.min() >= 1 and offsets.max() <= classes - 1
  share = np.bincount(offsets, minlength=classes)[1:] / flipped.sum()
  assert np.all(np.abs(share - 0.25) < 4.5 * np.sqrt(0.25 * 0.75 / flipped.sum()))


def test_draws_depend_only_on_seed_image_and_unit():
  n, rate = 500, 0.5
  units, truth = np.arange(n) * 3 + 1, np.zeros(n, np.int64)
  a = noise.flipped_classes(noise.Noise(flip=rate, seed=1), 4, units, truth, 19)
  # The same units asked alone, in another order: the same answers (resume-safe).
  sub = np.array([400, 3, 250])
  b = noise.flipped_classes(noise.Noise(flip=rate, seed=1), 4, units[sub], truth[sub], 19)
  np.testing.assert_array_equal(a[sub], b)
  # Another seed or image draws differently.
  assert (noise.flipped_classes(noise.Noise(flip=rate, seed=2), 4, units, truth, 19) != a).any()
  assert (noise.flipped_classes(noise.Noise(flip=rate, seed=1), 5, units, truth, 19) != a).any()
  # No noise: the truth.
  np.testing.assert_array_equal(noise.flipped_classes(noise.Noise(), 4, units, truth, 19), truth)


@pytest.mark.parametrize('width', [1, 2, 3])
def test_erosion_width_is_exact_on_a_square(width):
  truth = np.zeros((20, 20), np.uint8)
  truth[5:15, 5:15] = 1
  kept = noise.kept_pixels(noise.Noise(erode=width), truth)
  # By hand: the square keeps its inside shrunk by `width`, the background
  # keeps what lies more than `width` away (max norm) from the square.
  want = np.ones((20, 20), bool)
  want[5 - width:15 + width, 5 - width:15 + width] = False
  want[5 + width:15 - width, 5 + width:15 - width] = True
  np.testing.assert_array_equal(kept, want)


def test_noisy_label_flips_whole_units_and_erodes():
  truth = np.zeros((20, 20), np.uint8)
  truth[5:15, 5:15] = 1
  units = truth.astype(np.int64) + 1  # two units: background and square
  label = truth.copy()
  label[0] = 255  # an unlabeled row stays unlabeled
  out = noise.noisy_label(noise.Noise(flip=1.0, erode=1, seed=0), label, truth, units, 0, 3)
  assert (out[0] == 255).all()
  # flip=1: every unit gets another class, one class for the whole unit.
  inside, outside = out[7:13, 7:13], out[1:3, :]
  assert len(np.unique(inside)) == 1 and inside[0, 0] != 1
  assert len(np.unique(outside)) == 1 and outside[0, 0] != 0
  assert (out[4:6, 4:16] == 255).all()  # the eroded band around the square's top edge
  with pytest.raises(ValueError):
    noise.Noise(flip=1.5)
