"""The layout: subpackages as layers; the library never imports launch/ or benchmarks/.

Each subpackage of `segal_jax` (and each top-level module) is one unit, placed
in a layer, lowest first (data flows top to bottom in DESIGN.md §2). A module
may import its own unit or units of lower layers, and the units' imports form
no cycle. Every unit must have a layer, so a new one is placed on purpose.
docs/architecture.md describes each unit.
"""

import ast
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LAYERS = (
    ('errors', 'config', 'parallel'),
    ('data',),
    ('models',),
    ('formats',),
    ('state',),
    ('training',),
    ('scoring',),
    ('annotation',),
    ('selection',),
    ('reporting',),
    ('inference',),
    ('labelling',),
    ('loop',),
    ('experiment', 'plan'),
    ('purchases',),
)
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _modules(package):
  """{dotted module name: path} of every .py file under `package`."""
  out = {}
  for root, _, files in os.walk(os.path.join(REPO, package)):
    for f in files:
      if f.endswith('.py'):
        path = os.path.join(root, f)
        name = os.path.relpath(path, REPO)[:-3].replace(os.sep, '.')
        out[name.removesuffix('.__init__')] = path
  return out


def _imports(path):
  """Every module an import statement in the file names (top level or in a function)."""
  names = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names.add(node.module)
      names.update(f'{node.module}.{a.name}' for a in node.names)
  return names


def _unit(module):
  """The layer unit of a segal_jax module: its top-level module or subpackage."""
  return module.split('.')[1] if module.count('.') else module


LIBRARY = _modules('segal_jax')


def test_every_library_module_has_a_layer():
  missing = sorted({_unit(m) for m in LIBRARY if m != 'segal_jax'} - set(LAYER))
  assert not missing, f'place these in LAYERS (and docs/architecture.md): {missing}'


@pytest.mark.parametrize('module', sorted(LIBRARY))
def test_library_imports_only_lower_layers(module):
  imported = _imports(LIBRARY[module])
  outside = sorted(n for n in imported if n.split('.')[0] in ('launch', 'benchmarks'))
  assert not outside, f'{module} imports {outside}: the library must not'
  if module == 'segal_jax':
    return
  own = LAYER[_unit(module)]
  higher = sorted({_unit(n) for n in imported
                   if n.startswith('segal_jax.') and _unit(n) in LAYER
                   and LAYER[_unit(n)] > own})
  assert not higher, (f'{module} (layer {own}) imports {higher} from a higher layer; '
                      'move the code down or pass what it needs')


@pytest.mark.parametrize('module', sorted(_modules('benchmarks')))
def test_benchmarks_use_only_public_modules(module):
  private = sorted(n for n in _imports(_modules('benchmarks')[module])
                   if n.startswith('segal_jax')
                   and any(part.startswith('_') for part in n.split('.')))
  assert not private, f'{module} reaches into private {private}'


def test_the_checks_catch_a_violation(tmp_path):
  # The import reader sees imports inside functions too.
  path = tmp_path / 'm.py'
  path.write_text('def f():\n  from segal_jax import loop\n  import launch._app\n')
  imported = _imports(str(path))
  assert {'segal_jax.loop', 'launch._app'} <= imported
  assert LAYER[_unit('segal_jax.loop')] > LAYER[_unit('segal_jax.models.drn')]


def _cycle(graph):
  """One import cycle of `graph` ({module: modules it imports}) as [a, b, ..., a], or None."""
  state = {}  # module -> 'open' while on the DFS path, 'done' after

  def visit(node, path):
    state[node] = 'open'
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 'open':
        return path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt]
      if nxt not in state:
        found = visit(nxt, path + [node])
        if found:
          return found
    state[node] = 'done'
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node, [])
      if found:
        return found
  return None


def test_benchmarks_import_no_module_that_imports_them_back():
  # Imports inside functions count: they only hide a cycle, never remove it.
  modules = _modules('benchmarks')
  graph = {m: {n for n in _imports(path) if n in modules and n != m}
           for m, path in modules.items()}
  assert graph['benchmarks.hot_paths'], 'the reader found no imports between benchmarks'
  cycle = _cycle(graph)
  assert cycle is None, f'import cycle {" -> ".join(cycle or [])}: move the shared piece down'


def test_the_cycle_finder_finds_a_cycle_however_deep():
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None
  assert _cycle({'a': {'b'}, 'b': {'a'}}) == ['a', 'b', 'a']
  assert _cycle({'x': {'a'}, 'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']


def test_units_import_one_another_without_a_cycle():
  graph = {}
  for module, path in LIBRARY.items():
    if module != 'segal_jax':
      graph.setdefault(_unit(module), set()).update(
          _unit(n) for n in _imports(path)
          if n.startswith('segal_jax.') and _unit(n) in LAYER and _unit(n) != _unit(module))
  assert graph['loop'], 'the reader found no imports between units'
  cycle = _cycle(graph)
  assert cycle is None, f'import cycle {" -> ".join(cycle or [])}: move the shared piece down'


def test_no_library_module_is_left_at_the_top_level_unplaced():
  top = sorted(m.split('.')[1] for m in LIBRARY if m.count('.') == 1)
  assert set(top) <= set(LAYER), f'modules outside every layer: {sorted(set(top) - set(LAYER))}'


@pytest.mark.parametrize('module', ['uncertainty', 'superpixels'])
def test_uncertainty_and_superpixels_import_alone(module):
  # Other JAX code imports them without training, data sets or the rest of the library.
  heavy = ['tensorflow_datasets', 'tensorflow', 'optax', 'flax', 'orbax', 'grain',
           'segal_jax.training', 'segal_jax.data', 'segal_jax.state', 'segal_jax.scoring.scorer']
  code = (f'import sys\nfrom segal_jax.scoring import {module}\n'
          f'print(",".join(m for m in {heavy!r} if m in sys.modules))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       check=True, cwd=REPO)
  assert out.stdout.strip() == '', f'importing {module} also imported {out.stdout.strip()}'
