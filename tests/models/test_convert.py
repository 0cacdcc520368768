"""PyTorch -> Flax conversion: parity with a PyTorch DRN written for the tests."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from segal_jax.errors import UserError  # pylint: disable=g-import-not-at-top
from segal_jax import models  # pylint: disable=g-import-not-at-top
from segal_jax.models import convert  # pylint: disable=g-import-not-at-top
from segal_jax.models import drn  # pylint: disable=g-import-not-at-top
from segal_jax.state import checkpoint  # pylint: disable=g-import-not-at-top

from benchmarks import torch_drn  # pylint: disable=g-import-not-at-top

CLASSES = 5


def _torch_net(arch, width, seed=0):
  spec = drn.ARCHS[arch]
  block = torch_drn.Basic if spec.block == 'basic' else torch_drn.Bottle
  torch.manual_seed(seed)
  return torch_drn.TorchDRN(spec.kind, block, spec.layers, drn.widths(width))


def _seg_pair(arch, width, named=False):
  net = _torch_net(arch, width)
  seg = torch_drn.randomise(torch_drn.TorchDRNSeg(net, CLASSES, named=named))
  return net, seg


def _state(module):
  return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _images(shape=(2, 32, 48, 3), seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _torch_forward(fn, x_nhwc):
  with torch.no_grad():
    y = fn(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2)))
  return y.numpy().transpose(0, 2, 3, 1)


def _flax_logits(variables, arch, width, x):
  model = models.DRNSeg(arch=arch, num_classes=CLASSES, width_multiplier=width)
  return np.asarray(model.apply(variables, jnp.asarray(x), train=False)[0])


@pytest.mark.parametrize('arch,width', [
    ('drn_d_22', 0.25),
    ('drn_c_26', 0.25),
    pytest.param('drn_d_54', 0.125, marks=pytest.mark.slow),
    pytest.param('drn_c_58', 0.125, marks=pytest.mark.slow),
    pytest.param('drn_d_38', 0.125, marks=pytest.mark.slow),
    pytest.param('drn_c_42', 0.125, marks=pytest.mark.slow),
])
def test_converted_logits_match_pytorch(arch, width):
  _, seg = _seg_pair(arch, width)
  x = _images()
  expected = _torch_forward(seg, x)
  assert expected.shape == (2, 32, 48, CLASSES)
  variables = convert.variables_from_torch(_state(seg), arch, width_multiplier=width)
  got = _flax_logits(variables, arch, width, x)
  np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def _to_output_stride_4(seg, net):
  """Stride 4 applied to a PyTorch DRN segmenter: layer4's strided convs (its
  first 3x3 and the shortcut) at stride 1, every other 3x3 of layers 4-8 at
  twice its dilation, and the x4 bilinear upsampler."""
  for layer in (net.layer4, net.layer5, net.layer6, net.layer7, net.layer8):
    for m in layer.modules():
      if not isinstance(m, torch.nn.Conv2d):
        continue
      if m.stride == (2, 2):
        m.stride = (1, 1)
      elif m.kernel_size == (3, 3):
        m.dilation = m.padding = (2 * m.dilation[0],) * 2
  seg.up = torch_drn.bilinear_up(CLASSES, stride=4)
  return seg


@pytest.mark.parametrize('arch', ['drn_d_22', 'drn_c_26'])
def test_output_stride_4_matches_pytorch(arch):
  net, seg = _seg_pair(arch, 0.25)
  variables = convert.variables_from_torch(_state(seg), arch, width_multiplier=0.25)
  x = _images()
  expected = _torch_forward(_to_output_stride_4(seg, net), x)
  assert expected.shape == (2, 32, 48, CLASSES)
  model = models.DRNSeg(arch=arch, num_classes=CLASSES, width_multiplier=0.25,
                        output_stride=4)
  got = np.asarray(model.apply(variables, jnp.asarray(x), train=False)[0])
  np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
  assert not np.allclose(got, _flax_logits(variables, arch, 0.25, x), atol=1e-2)


def test_all_three_layouts_load_the_same_weights():
  arch, width = 'drn_c_26', 0.25  # DRN-C: the stem's indices differ from the stages'.
  net, indexed = _seg_pair(arch, width)
  named = torch_drn.TorchDRNSeg(net, CLASSES, named=True)
  named.seg.load_state_dict(indexed.seg.state_dict())
  named_state = _state(named)
  assert 'base.layer1.0.conv1.weight' in named_state and 'base.fc.weight' in named_state
  classification = _state(net)
  assert 'conv1.weight' in classification and 'fc.weight' in classification

  from_indexed = convert.variables_from_torch(_state(indexed), arch,
                                              width_multiplier=width)
  from_named = convert.variables_from_torch(named_state, arch, width_multiplier=width)
  from_cls = convert.variables_from_torch(classification, arch, num_classes=CLASSES,
                                          width_multiplier=width)
  jax.tree.map(np.testing.assert_array_equal, from_indexed, from_named)
  jax.tree.map(np.testing.assert_array_equal, from_indexed['batch_stats'],
               from_cls['batch_stats'])
  for stage in range(9):
    jax.tree.map(np.testing.assert_array_equal, from_indexed['params'][f'layer_{stage}'],
                 from_cls['params'][f'layer_{stage}'])
  # The classification checkpoint has no segmentation classifier: a fresh one.
  assert from_cls['params']['seg']['kernel'].shape == (1, 1, 128, CLASSES)
  np.testing.assert_array_equal(from_cls['params']['seg']['bias'], 0)

  # Its trunk computes what the PyTorch DRN's stages compute.
  x = _images(seed=1)
  model = models.DRNSeg(arch=arch, num_classes=CLASSES, width_multiplier=width,
                        dropout_placement='none')
  h = model.apply(from_cls, jnp.asarray(x), train=False, method='trunk')
  np.testing.assert_allclose(np.asarray(h), _torch_forward(net.eval().features, x),
                             atol=1e-4, rtol=1e-4)


def test_d_layouts_and_data_parallel_prefix():
  arch, width = 'drn_d_22', 0.25
  net, indexed = _seg_pair(arch, width)
  state = _state(indexed)
  assert 'base.0.0.weight' in state and 'up.weight' in state
  prefixed = {f'module.{k}': v for k, v in state.items()}
  a = convert.variables_from_torch(state, arch, width_multiplier=width)
  b = convert.variables_from_torch(prefixed, arch, width_multiplier=width)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  c = convert.variables_from_torch(_state(net), arch, num_classes=CLASSES,
                                   width_multiplier=width)
  jax.tree.map(np.testing.assert_array_equal, a['batch_stats'], c['batch_stats'])


def _d22_state():
  return _state(_seg_pair('drn_d_22', 0.25)[1])


def test_unknown_key_is_named():
  state = _d22_state()
  state['base.3.0.conv9.weight'] = np.zeros((1,), np.float32)
  with pytest.raises(UserError, match=r'base\.3\.0\.conv9\.weight'):
    convert.variables_from_torch(state, 'drn_d_22', width_multiplier=0.25)


def test_missing_key_is_named():
  state = _d22_state()
  del state['base.5.1.bn2.running_var']
  with pytest.raises(UserError, match=r'base\.5\.1\.bn2\.running_var'):
    convert.variables_from_torch(state, 'drn_d_22', width_multiplier=0.25)


def test_shape_mismatch_is_named():
  state = _d22_state()
  with pytest.raises(UserError, match=r"'base\.0\.[01]\.\w+' has shape \(4"):
    convert.variables_from_torch(state, 'drn_d_22')  # Full width expected.
  with pytest.raises(UserError, match='classes'):
    convert.variables_from_torch(state, 'drn_d_22', num_classes=19, width_multiplier=0.25)


def test_wrong_arch_is_a_clear_error():
  # D-38 has three blocks in stage 3 where D-22 has two.
  with pytest.raises(UserError, match=r"lacks 'base\.3\.2\."):
    convert.variables_from_torch(_d22_state(), 'drn_d_38', width_multiplier=0.25)


def test_file_round_trip_through_orbax(tmp_path):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  _, seg = _seg_pair('drn_d_22', 0.25)
  source = os.path.join(tmp_path, 'model.pth')
  torch.save({'epoch': 3, 'state_dict': seg.state_dict()}, source)
  out = checkpoint.convert_torch(source, 'drn_d_22', os.path.join(tmp_path, 'ckpt'),
                             width_multiplier=0.25)
  restored = ocp.StandardCheckpointer().restore(out)
  x = _images()
  np.testing.assert_allclose(_flax_logits(restored, 'drn_d_22', 0.25, x),
                             _torch_forward(seg, x), atol=1e-4, rtol=1e-4)
  with pytest.raises(UserError, match='not empty'):
    checkpoint.convert_torch(source, 'drn_d_22', out, width_multiplier=0.25)


def test_unreadable_file_is_a_user_error(tmp_path):
  bad = os.path.join(tmp_path, 'bad.pth')
  with open(bad, 'wb') as f:
    f.write(b'not a checkpoint')
  with pytest.raises(UserError, match='bad.pth'):
    convert.load_torch_file(bad)
  with pytest.raises(UserError, match='missing.pth'):
    convert.load_torch_file(os.path.join(tmp_path, 'missing.pth'))


def test_cli_reports_one_line_and_exit_code_1(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'launch.convert', f'--source={tmp_path}/missing.pth',
       '--arch=drn_d_22', f'--out={tmp_path}/out'],
      capture_output=True, text=True, check=False,
      cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and 'missing.pth' in lines[0]
