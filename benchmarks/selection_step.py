"""The selection step at pool scale: k-center diversity and a whole cycle's choice.

`bench_kcenter` times `diversity.kcenter_greedy` (jitted) on `units` random
unit features beside `_reference.kcenter_greedy` (plain NumPy), with the
memory of each: XLA's compiled bytes (arguments, output, scratch) for the
product, `tracemalloc`'s peak of the NumPy run for the reference.
`bench_step` times a cycle's choice over the same pool: ranking
(`selection.top_k`), class balance, a per-image cap and k-center on the best
`FACTOR` x picks (`acquisition.reorder`), beside `_reference.select_units`.
Inputs are synthetic (the step's cost depends on sizes only): `SEGMENTS`
superpixels an image, 19 classes with a skewed distribution, `DIM`-d features.
"""

from __future__ import annotations

import functools
import tracemalloc
from typing import Any, Callable

import numpy as np

from benchmarks import _harness as harness
from benchmarks import _reference as reference
from segal_jax.selection import arrange as acquisition
from segal_jax.selection import diversity
from segal_jax.selection import strategies as selection

SEGMENTS = 100  # superpixels an image
DIM = 32        # projected feature dimensions (--al_feature_dim)
CLASSES = 19
FACTOR = 4.0    # --al_diversity_factor
CAP = 10        # --al_per_image_cap


@functools.lru_cache(maxsize=2)
def pool(units: int) -> dict[str, np.ndarray]:
  """Scores [n, S], dominant classes [n, S], features [n, S, D], class counts [C]."""
  rng = np.random.default_rng(0)
  n = -(-units // SEGMENTS)
  share = rng.dirichlet(np.full(CLASSES, 0.3))
  return {'scores': rng.random((n, SEGMENTS), np.float32),
          'classes': rng.choice(CLASSES, size=(n, SEGMENTS), p=share),
          'features': rng.normal(size=(n, SEGMENTS, DIM)).astype(np.float32),
          'counts': rng.multinomial(10**7, share)}


def _peak_bytes(fn: Callable[[], Any]) -> int:
  """Peak bytes the host allocates while `fn` runs (NumPy reports to tracemalloc)."""
  tracemalloc.start()
  try:
    fn()
    return tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()


def bench_kcenter(units: int, picks: int, repeats: int) -> dict[str, Any]:
  """k-center greedy over every unit of the pool: `picks` picks."""
  feats = pool(units)['features'].reshape(-1, DIM)[:units]
  product, ref = harness.time_pair(lambda: diversity.kcenter_greedy(feats, picks),
                                   lambda: reference.kcenter_greedy(feats, picks), repeats)
  got, want = diversity.kcenter_greedy(feats, picks), reference.kcenter_greedy(feats, picks)
  compiled = diversity.kcenter_bytes(units, DIM, picks)
  return harness.make_entry(product, ref, ref['median_s'] / product['median_s'], 's',
                            units=units, dim=DIM, picks=picks,
                            product_bytes=compiled,
                            reference_peak_bytes=_peak_bytes(
                                lambda: reference.kcenter_greedy(feats, picks)),
                            same_picks=float(np.isin(got, want).mean()),
                            same_prefix=int(np.argmin(np.r_[got == want, False])),
                            note='product bytes: XLA compiled argument/output/temp; '
                                 'reference: tracemalloc peak; picks part where float32 and '
                                 'float64 distances order a near-tie differently')


def bench_step(units: int, picks: int, repeats: int) -> dict[str, Any]:
  """A cycle's choice: rank, class balance, per-image cap, k-center on FACTOR x picks."""
  p = pool(units)
  weights = acquisition.class_weights(p['counts'])

  def product_fn():
    ranked = selection.top_k(p['scores'], p['scores'].size)
    return acquisition.reorder(p['scores'], ranked, classes=p['classes'], weights=weights,
                               cap=CAP, features=p['features'], picks=picks,
                               factor=FACTOR)[1][:picks]

  flat = {k: p[k].reshape(-1, *p[k].shape[2:]) for k in ('scores', 'classes', 'features')}
  images = np.arange(flat['scores'].size) // SEGMENTS

  def reference_fn():
    return reference.select_units(flat['scores'], flat['classes'], images, flat['features'],
                                  p['counts'], picks, CAP, FACTOR)

  product, ref = harness.time_pair(product_fn, reference_fn, repeats)
  return harness.make_entry(product, ref, ref['median_s'] / product['median_s'], 's',
                            units=int(flat['scores'].size), picks=picks, factor=FACTOR,
                            cap=CAP, same_picks=float(np.isin(product_fn(),
                                                              reference_fn()).mean()),
                            product_host_peak_bytes=_peak_bytes(product_fn),
                            reference_peak_bytes=_peak_bytes(reference_fn),
                            note='host peaks by tracemalloc (the product k-center '
                                 'buffers are XLA\'s, see selection_kcenter)')
