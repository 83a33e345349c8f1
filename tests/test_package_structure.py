"""The package's shape: imports point down, the registry is the one place that names a kind or a
head, small modules, and every model field reachable from the command line and the fingerprint."""

import ast
import os

import pytest

from configs import sensor
from configs import video
from hybrid_jax import config_validation
from hybrid_jax import heads
from hybrid_jax import input_kinds
import cli_runner
import import_graph

REPO = import_graph.REPO
# Command lines: they choose the platform first, then import what they run.
ENTRY_POINTS = ('hybrid_jax.main', 'hybrid_jax.predict', 'hybrid_jax.summary')
# The tables that name the input kinds and the heads.
REGISTRY = ('hybrid_jax.input_kinds', 'hybrid_jax.heads')
NAMES = set(input_kinds.INPUT_KINDS) | set(heads.HEADS)


def _trees(package: str):
  for module, path in sorted(import_graph.modules(package).items()):
    with open(path, encoding='utf-8') as f:
      yield module, path, ast.parse(f.read(), path)


def test_the_import_graph_has_no_cycle():
  edges = import_graph.edges()
  assert ('hybrid_jax.input_kinds', 'hybrid_jax.models.video') in edges  # The graph is read.
  assert import_graph.cycles(edges) == []


def test_the_registry_is_imported_by_nothing_it_names():
  edges = import_graph.edges()
  named = {b for a, b in edges if a in REGISTRY}
  for module in named:
    assert not {(module, r) for r in REGISTRY} & edges, module
  assert not [a for a, b in edges if a.startswith('hybrid_jax.models') and b in REGISTRY]


def test_no_function_imports_the_packages_own_modules_outside_entry_points():
  found = []
  for module, path, tree in _trees('hybrid_jax'):
    if module in ENTRY_POINTS or path.endswith('__init__.py'):
      continue  # Entry points; a package __init__ may load its public names lazily.
    for func in ast.walk(tree):
      if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
        continue
      for node in ast.walk(func):
        names = import_graph.imported_names(node, module, False)
        if any(n == 'hybrid_jax' or n.startswith('hybrid_jax.') for n in names):
          found.append(f'{path}:{node.lineno}')
  assert found == []


def _branches_on_a_name(tree: ast.AST) -> list[int]:
  """Lines that compare with, key a dict by, or match an input-kind or head name."""
  lines = []

  def named(node) -> bool:
    return isinstance(node, ast.Constant) and node.value in NAMES

  for node in ast.walk(tree):
    if isinstance(node, ast.Compare):
      operands = [node.left, *node.comparators]
      for operand in operands:
        if named(operand) or (
          isinstance(operand, (ast.Tuple, ast.List, ast.Set)) and any(map(named, operand.elts))
        ):
          lines.append(node.lineno)
    elif isinstance(node, ast.Dict) and any(named(k) for k in node.keys if k is not None):
      lines.append(node.lineno)
    elif isinstance(node, ast.match_case) and named(getattr(node.pattern, 'value', None)):
      lines.append(node.pattern.lineno)
  return lines


# The study too; the benchmarks build each kind's peer model in Keras and PyTorch (a table of the
# peers' own models, which the registry cannot hold).
@pytest.mark.parametrize('package', ['hybrid_jax', 'experiments/study'])
def test_only_the_registry_branches_on_an_input_kind_or_head_name(package):
  found = []
  for module, path, tree in _trees(package):
    if module in REGISTRY:
      continue
    found += [f'{os.path.relpath(path, REPO)}:{line}' for line in _branches_on_a_name(tree)]
  assert found == []


def test_the_name_check_can_fail():
  code = "if kind.name == 'video':\n  pass\nx = {'regression': 1}\ny = kind in ('text',)\n"
  assert _branches_on_a_name(ast.parse(code)) == [1, 3, 4]


def test_no_module_of_the_package_is_over_400_lines():
  long = {}
  for _, path, _ in _trees('hybrid_jax'):
    with open(path, encoding='utf-8') as f:
      count = sum(1 for _ in f)
    if count > 400:
      long[os.path.relpath(path, REPO)] = count
  assert long == {}


@pytest.mark.parametrize('config_module', [video, sensor])
def test_config_model_is_exactly_the_model_classes_fields(config_module):
  config = config_module.get_config()
  kind = input_kinds.input_kind(config)
  assert set(config.model.keys()) == set(kind.model_fields())
  config.model.unlock()
  config.model.no_such_field = 1
  with pytest.raises(config_validation.ConfigError, match='no_such_field is not a field of'):
    config_validation.validate(config)


@pytest.mark.parametrize(
  'config_module,field,value',
  [(sensor, 'lstm_projection', 'per_step'), (video, 'frame_cnn_batching', 'batched')],
)
def test_speed_fields_reach_the_model_and_the_fingerprint(config_module, field, value):
  config = config_module.get_config()
  config.model.num_classes = 3
  before = config_validation.fingerprint(config)
  assert getattr(input_kinds.create_model(config), field) != value
  config.model[field] = value
  assert getattr(input_kinds.create_model(config), field) == value
  assert config_validation.fingerprint_diff(before, config) == [
    f'model.{field}: {before[f"model.{field}"]!r} -> {value!r}'
  ]


def test_speed_fields_are_command_line_flags():
  ok = cli_runner.run(
    [
      '-m',
      'hybrid_jax.summary',
      '--config=configs/video.py',
      '--config.model.frame_cnn_batching=batched',
      '--config.model.lstm_projection=per_step',
    ],
    devices=1,
  )
  assert ok.returncode == 0 and ok.stdout.strip().endswith('Total params: 4,558,740'), ok.stderr
  bad = cli_runner.run(
    ['-m', 'hybrid_jax.summary', '--config=configs/video.py', '--config.model.lstm_projection=x'],
    devices=1,
  )
  assert bad.returncode != 0
  assert bad.stderr.strip().splitlines() == [
    "error: config.model.lstm_projection='x' is not one of ('auto', 'hoisted', 'per_step'): set "
    '--config.model.lstm_projection.'
  ]
