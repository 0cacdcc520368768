"""Tests for the benchmarks package and its reference algorithms (no timing assertions)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import _harness as harness
from benchmarks import _reference as reference
from benchmarks import hot_paths as benchmark
from benchmarks import side_by_side
from segal_jax.annotation import oracle
from segal_jax import data
from segal_jax import errors
from segal_jax.scoring import superpixels
from segal_jax.scoring import uncertainty

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- Reference algorithms ------------------------------------------------------


def test_reference_variance_hand_case():
  # Two passes per pixel: the variance of {a, b} is ((a - b) / 2)^2.
  p = np.array([[0.9, 0.1], [0.5, 0.5]], np.float32)
  q = np.array([[0.5, 0.5], [0.5, 0.5]], np.float32)
  probs = np.stack([p, q])[:, None, :, None, :]  # [D=2, B=1, H=2, W=1, C=2]
  expected = np.mean([0.2**2, 0.2**2, 0.0, 0.0])  # pixel 0: both classes 0.04
  np.testing.assert_allclose(reference.mc_variance_from_probs(probs), [expected],
                             rtol=1e-6)


def test_reference_scores_use_every_pass_and_match_uncertainty():
  rng = np.random.default_rng(0)
  per_key = {k: rng.normal(size=(2, 3, 4, 5)).astype(np.float32) for k in range(3)}
  forward = lambda variables, images, key: jnp.asarray(per_key[key])
  scores = reference.mc_variance_scores(forward, None, None, keys=[0, 1, 2])
  probs = np.stack([np.exp(l) / np.exp(l).sum(-1, keepdims=True)
                    for l in per_key.values()])
  expected = uncertainty.image_scores(uncertainty.mc_variance(jnp.asarray(probs)))
  np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-7)


def test_host_probs_bytes_matches_design_figure():
  # DESIGN §5: the reference copies about 1.6 GB per 1024x2048 image (D=10).
  assert reference.host_probs_bytes(10, 1, 1024, 2048, 19) == 10 * 1024 * 2048 * 19 * 4
  assert abs(reference.host_probs_bytes(10, 1, 1024, 2048, 19) / 1e9 - 1.6) < 0.01


def test_reference_segment_means_match_product():
  rng = np.random.default_rng(1)
  segments = rng.integers(0, 7, size=(3, 9, 11)).astype(np.int32)
  segments[:, 0, :7] = np.arange(7)  # every id present in every image
  maps = rng.random((3, 9, 11), dtype=np.float32)
  expected = np.array([[maps[b][segments[b] == s].mean() for s in range(7)]
                       for b in range(3)])
  ref = np.stack(reference.segment_means(maps, segments))
  means, _ = superpixels.segment_means(jnp.asarray(maps), jnp.asarray(segments), 7)
  np.testing.assert_allclose(ref, expected, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(means), expected, rtol=1e-5)


def test_reference_partial_label_hand_case():
  instance = np.array([[26001, 26001, 7], [0, 7, 7]], np.int32)
  label = np.array([[13, 13, 0], [255, 0, 0]], np.uint8)
  segments = np.array([[0, 1, 1], [0, 1, 1]], np.int32)
  # Superpixel 0 touches the car and the void pixel: the car is labelled.
  np.testing.assert_array_equal(
      reference.partial_label(label, instance, segments, [0]),
      [[13, 13, 255], [255, 255, 255]])
  np.testing.assert_array_equal(
      reference.partial_label(label, instance, segments, [0, 1]), label)
  for chosen in ([0], [1], [0, 1], []):
    np.testing.assert_array_equal(
        reference.partial_label(label, instance, segments, chosen, membership='array'),
        reference.partial_label(label, instance, segments, chosen))


def test_reference_partial_labels_match_oracle_on_scenes():
  for k in range(3):
    image, label, instance = data.render_scene(np.random.default_rng(k), 48, 96)
    segments = superpixels.watershed(image, n_segments=30)
    chosen = np.random.default_rng(k).choice(int(segments.max()) + 1, 8, replace=False)
    product, _, _ = oracle.annotate_superpixels(label, instance, segments, chosen)
    np.testing.assert_array_equal(
        reference.partial_label(label, instance, segments, chosen), product)


# --- Harness ----------------------------------------------------------------------


def test_time_runs_and_pair_count_calls():
  calls = []
  stats = benchmark.time_runs(lambda: calls.append('a'), repeats=3, warmup=2)
  assert len(calls) == 5 and len(stats['runs_s']) == 3
  assert stats['min_s'] <= stats['median_s'] <= stats['max_s']
  calls.clear()
  a, b = benchmark.time_pair(lambda: calls.append('a'), lambda: calls.append('b'),
                             repeats=2)
  assert calls == ['a', 'b'] * 3  # warm-up, then interleaved
  assert len(a['runs_s']) == len(b['runs_s']) == 2


def test_unknown_size_and_group_are_user_errors():
  with pytest.raises(errors.UserError, match='size'):
    benchmark.run('huge')
  with pytest.raises(errors.UserError, match='bogus'):
    benchmark.entry_names('tiny', only=['mc', 'bogus'])


HOT_PATHS = {'mc_stages', 'mc_head', 'mc_stages_logit_res', 'mc_head_logit_res',
             'segment_means', 'partial_labels', 'watershed', 'memory_d1', 'memory_d10',
             'memory_d30', 'train_reduced_float32', 'train_reduced_bfloat16',
             'train_full_float32', 'train_full_bfloat16', 'selection_kcenter',
             'selection_step', 'gpu_mc_tflops'}
PEER = {'peer_forward', 'peer_mc_stages', 'peer_mc_head', 'peer_train'}


def test_entry_names_cover_every_hot_path_and_the_peer():
  assert benchmark.peer_available()  # torch is installed with the dev extras
  assert set(benchmark.entry_names('tiny')) == HOT_PATHS | PEER
  assert set(benchmark.entry_names('tiny', peer=False)) == HOT_PATHS
  assert benchmark.entry_names('tiny', only=['peer', 'gpu'], peer=False) == [
      'gpu_mc_tflops']


def test_without_torch_the_peer_is_one_line_and_the_rest_runs(monkeypatch):
  monkeypatch.setattr(benchmark, 'peer_available', lambda: False)
  lines = []
  report = benchmark.run('tiny', only=['peer', 'gpu'], log=lines.append)
  assert list(report['results']) == ['gpu_mc_tflops']
  assert sum('PyTorch is not importable' in line for line in lines) == 1
  assert 'PyTorch peer' not in benchmark.format_table(report)


def test_peer_sizes_are_the_benchmark_sizes_at_full_width():
  for name in ('small', 'cityscapes'):
    spec, peer = benchmark.SIZES[name], side_by_side.peer_size(name)
    assert (peer.height, peer.width, peer.batch, peer.passes, peer.train_batch) == (
        spec.height, spec.width, spec.batch, spec.passes, spec.train_batch)
    assert peer.train_crop == tuple(spec.train_crop) and peer.model_width == 1.0


def test_peer_entries_and_column_from_a_side_by_side_report():
  # Two rounds of one run a side: PyTorch 2 s and 4 s, segal-jax 1 s and 1 s.
  runs = {'jax': [1.0, 1.0], 'torch': [2.0, 4.0]}
  cpu = {'jax': [0.5, 0.5], 'torch': [1.0, 1.0]}
  result = {'ratio': 3.0, 'cpu_ratio': 2.0, 'round_ratio_min': 2.0,
            'round_ratio_max': 4.0, 'runs_s': runs, 'cpu_s': cpu}
  report = {'spec': {'train_batch': 2}, 'threads': 1, 'load_average_1min': {},
            'results': {'mc_head': result, 'train': result}}
  entries = side_by_side.entries(report)
  assert list(entries) == ['peer_mc_head', 'peer_train']
  assert entries['peer_mc_head']['peer']['median_s'] == 3.0
  assert entries['peer_mc_head']['product']['cpu_median_s'] == 0.5
  assert entries['peer_train']['product']['median'] == 2.0  # 2 images in 1 s
  assert entries['peer_train']['peer']['median'] == pytest.approx(2 / 3)
  table = harness.format_table({'results': {**entries, 'x': harness.make_entry(
      1.0, 2.0, 2.0, 'bytes')}})
  assert table.splitlines()[0].startswith('| name | this product | reference | ratio '
                                          '| PyTorch peer |')
  assert '| 3.00x (2.00-4.00), CPU 2.00x |' in table
  assert table.splitlines()[-1].endswith('| - | - |')  # no peer for this entry


def test_run_host_groups_in_process():
  lines = []
  only = ['segment_means', 'partial_labels', 'selection', 'gpu']
  report = benchmark.run('tiny', only=only, log=lines.append)
  assert list(report['results']) == benchmark.entry_names('tiny', only=only)
  assert len(lines) == 2 * len(report['results'])  # start and end of each entry
  for name in ('segment_means', 'partial_labels', 'selection_kcenter', 'selection_step'):
    entry = report['results'][name]
    assert entry['ratio'] > 0 and entry['unit'] == 's'
    assert entry['reference']['median_s'] > 0
  for name in ('selection_kcenter', 'selection_step'):  # product and NumPy agree
    assert report['results'][name]['same_picks'] == 1.0
  if jax.default_backend() == 'cpu':
    assert 'skipped' in report['results']['gpu_mc_tflops']
  for key in ('cpu', 'cores', 'jax', 'backend', 'date'):
    assert key in report['machine']
  table = benchmark.format_table(report)
  assert all(f'| {name} |' in table for name in report['results'])
  json.dumps(report)  # JSON-able


@pytest.mark.slow
def test_cli_tiny_writes_every_entry(tmp_path):
  out = tmp_path / 'bench.json'
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             # Compile without LLVM optimisation: the entries, not the times, matter.
             XLA_FLAGS='--xla_backend_optimization_level=0')
  proc = subprocess.run([sys.executable, '-m', 'launch.benchmark', '--size=tiny',
                         f'--out={out}'], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(out.read_text())
  names = benchmark.entry_names('tiny')
  assert list(report['results']) == names
  for name in names:
    entry = report['results'][name]
    assert {'product', 'reference', 'ratio', 'unit'} <= set(entry)
    if name.startswith(('mc_', 'memory_', 'segment', 'partial', 'watershed')):
      assert entry['ratio'] > 0, name
    if name.startswith('train_'):
      assert entry['product']['median'] > 0, name
  assert set(report['results']['mc_stages']['parts']) >= {
      'product_trunk_s', 'reference_host_numpy_s'}
  for name in names:
    assert f'| {name} |' in proc.stdout
  assert '[1/18]' in proc.stderr  # progress: 17 jobs and the peer
  # The PyTorch peer: its own column, ratio = PyTorch median / segal-jax median.
  assert '| PyTorch peer |' in proc.stdout
  for name in PEER:
    entry = report['results'][name]
    product, peer = entry['product'], entry['peer']
    if name == 'peer_train':
      assert entry['peer_ratio'] == pytest.approx(product['median'] / peer['median'])
    else:
      assert entry['peer_ratio'] == pytest.approx(peer['median_s'] / product['median_s'])
    assert len(peer['runs_s']) == len(product['runs_s']) == 1


@pytest.mark.slow
def test_cli_bad_group_is_one_line_error(tmp_path):
  out = tmp_path / 'bench.json'
  proc = subprocess.run([sys.executable, '-m', 'launch.benchmark', '--size=tiny',
                         '--only=bogus', f'--out={out}'], cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 1
  assert proc.stderr.strip().startswith('error: unknown benchmark group')
  assert not out.exists()
