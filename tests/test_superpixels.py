"""Tests for segal_jax.scoring.superpixels."""

import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import skimage.measure
import skimage.transform

from segal_jax import errors
from segal_jax.scoring import superpixels


def _small(name, size=(64, 96)):
  """A real photograph from scikit-image, resized to `size`, uint8 RGB."""
  image = getattr(skimage.data, name)()
  image = skimage.transform.resize(image, size, anti_aliasing=True)
  return (image * 255).round().astype(np.uint8)


IMAGES = ('astronaut', 'coffee', 'chelsea', 'rocket')


@pytest.fixture(scope='module')
def photos():
  return np.stack([_small(name) for name in IMAGES])


@pytest.mark.parametrize('n_segments', [25, 100])
def test_watershed_labels_are_consecutive_and_near_the_requested_count(
    photos, n_segments):
  for image in photos:
    seg = superpixels.watershed(image, n_segments=n_segments)
    assert seg.dtype == np.int32 and seg.shape == image.shape[:2]
    s = seg.max() + 1
    np.testing.assert_array_equal(np.unique(seg), np.arange(s))
    assert 0.7 * n_segments <= s <= 1.1 * n_segments, s
    np.testing.assert_array_equal(superpixels.watershed(image, n_segments=n_segments),
                                  seg)


def test_watershed_grey_input_and_bad_shape(photos):
  grey = (photos[0].mean(-1)).astype(np.uint8)
  assert superpixels.watershed(grey).shape == grey.shape
  with pytest.raises(errors.UserError, match='cannot segment'):
    superpixels.watershed(np.zeros((8, 8, 4), np.uint8))


def test_watershed_batch_in_process_equals_single(photos):
  got = superpixels.watershed_batch(photos, workers=1, progress=False)
  for image, seg in zip(photos, got):
    np.testing.assert_array_equal(seg, superpixels.watershed(image))


def test_watershed_batch_process_pool_equals_single(photos):
  got = superpixels.watershed_batch(photos, workers=2, progress=False)
  for image, seg in zip(photos, got):
    np.testing.assert_array_equal(seg, superpixels.watershed(image))


def test_segment_means_equal_regionprops(photos):
  segs = superpixels.watershed_batch(photos, workers=1, progress=False)
  rng = np.random.default_rng(0)
  maps = rng.random(segs.shape).astype(np.float32)
  num = int(segs.max()) + 4  # padding beyond the largest id
  means, counts = superpixels.segment_means(jnp.asarray(maps), jnp.asarray(segs),
                                            num_segments=num)
  assert means.shape == counts.shape == (len(photos), num)
  assert counts.dtype == jnp.int32 and means.dtype == jnp.float32
  means, counts = np.asarray(means), np.asarray(counts)
  for b in range(len(photos)):
    props = skimage.measure.regionprops(segs[b] + 1, intensity_image=maps[b])
    want_mean = np.zeros(num)
    want_count = np.zeros(num, int)
    for p in props:
      want_mean[p.label - 1] = p.intensity_mean
      want_count[p.label - 1] = p.area
    np.testing.assert_allclose(means[b], want_mean, rtol=2e-5, atol=1e-6)
    np.testing.assert_array_equal(counts[b], want_count)
  assert np.all(counts.sum(axis=1) == segs[0].size)


def test_segment_means_drop_out_of_range_ids_and_handle_empty_segments():
  maps = jnp.array([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]])
  segs = jnp.array([[[0, 0], [2, -1]], [[1, 1], [1, 9]]])
  means, counts = superpixels.segment_means(maps, segs, num_segments=3)
  np.testing.assert_allclose(means, [[1.5, 0.0, 3.0], [0.0, 6.0, 0.0]])
  np.testing.assert_array_equal(counts, [[2, 0, 1], [0, 3, 0]])


def _counting(monkeypatch):
  """Wraps watershed_batch to record how many images it segments."""
  calls = []
  original = superpixels.watershed_batch

  def counted(images, **kwargs):
    calls.append(len(images))
    return original(images, **kwargs)

  monkeypatch.setattr(superpixels, 'watershed_batch', counted)
  return calls


def test_cache_segments_each_image_once(tmp_path, monkeypatch, photos):
  calls = _counting(monkeypatch)
  cache = superpixels.SuperpixelCache(tmp_path)
  ids = ['a/1', 'b', 'c', 'd']
  first = cache.get_or_compute('toy', ids[:2], photos[:2], workers=1,
                               progress=False)
  assert calls == [2]
  both = cache.get_or_compute('toy', ids, photos, workers=1, progress=False)
  assert calls == [2, 2]  # only the two new images
  np.testing.assert_array_equal(both[:2], first)
  for image, seg in zip(photos, both):
    np.testing.assert_array_equal(seg, superpixels.watershed(image))

  def unreadable(k):
    raise AssertionError(f'image {k} was read although cached')

  again = cache.get_or_compute('toy', ids[::-1], unreadable, progress=False)
  assert calls == [2, 2]
  np.testing.assert_array_equal(again, both[::-1])
  # Other parameters are another key.
  cache.get_or_compute('toy', ids[:1], photos[:1], n_segments=30, workers=1,
                       progress=False)
  assert calls == [2, 2, 1]
  # Ids that only differ in characters a file name cannot hold stay distinct.
  assert cache.path('toy', 'a/1') != cache.path('toy', 'a_1')
  leftovers = [f for _, _, files in os.walk(tmp_path) for f in files
               if not f.endswith('.npz')]
  assert not leftovers


def test_cache_survives_a_new_process(tmp_path, photos):
  cache = superpixels.SuperpixelCache(tmp_path)
  want = cache.get_or_compute('toy', [0, 1], photos[:2], workers=1, progress=False)
  np.save(tmp_path / 'want.npy', want)
  script = textwrap.dedent(f"""
      import numpy as np
      from segal_jax.scoring import superpixels
      def unreadable(k):
        raise SystemExit('image read although cached')
      cache = superpixels.SuperpixelCache({str(tmp_path)!r})
      got = cache.get_or_compute('toy', [0, 1], unreadable, progress=False)
      want = np.load({str(tmp_path / 'want.npy')!r})
      assert got.dtype == np.int32
      np.testing.assert_array_equal(got, want)
      print('ok')
  """)
  result = subprocess.run([sys.executable, '-c', script], capture_output=True,
                          text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == 'ok'


def test_corrupt_cache_file_is_a_user_error(tmp_path, photos):
  cache = superpixels.SuperpixelCache(tmp_path)
  path = cache.path('toy', 'x')
  os.makedirs(os.path.dirname(path))
  with open(path, 'wb') as f:
    f.write(b'not a zip')
  with pytest.raises(errors.UserError, match='unreadable'):
    cache.get_or_compute('toy', ['x'], photos[:1], progress=False)
