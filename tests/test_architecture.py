"""The layout: library modules import only lower layers, never launch/ or benchmarks/.

The layer order follows DESIGN.md §2 (data flows top to bottom there: data,
models, uncertainty, superpixels, oracle, losses, scoring, selection, train,
checkpoint, loop, export, parallel). Two kinds of module sit lower here than
in that list because every layer uses them: the foundations (`errors`,
`config`, `parallel`, atomic writes) and the output writers (`export`,
`annotations`). A module may import modules of its own layer or below; every
module of `segal_jax` must have a layer, so a new one is placed on purpose.
docs/architecture.md describes each module.
"""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LAYERS = (
    ('errors', '_files', '_lock', 'config', 'parallel'),
    ('data',),
    ('models',),
    ('uncertainty', 'superpixels', 'metrics', 'oracle', 'clicks', 'noise', 'statistics',
     'endpoints', 'export', 'annotations', 'diversity', 'label_returns', 'brush_rle',
     'label_studio_results', 'label_studio', 'geometry', 'optim'),
    ('losses', 'pool', 'protocols'),
    ('scoring', 'annotators', 'train', 'stopping', 'acquisition'),
    ('selection', 'checkpoint', 'run_state'),
    ('figures', 'folder_scoring', 'prediction', 'label_requests', 'cycle_models',
     'folder_changes', 'label_studio_source'),
    ('loop',),
    ('experiment', 'plan', 'human', 'purchases'),
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
