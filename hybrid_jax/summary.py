"""Prints a model's per-layer parameter table, like Keras `model.summary()`.

  python -m hybrid_jax.summary --config=configs/video.py
  python -m hybrid_jax.summary --config=configs/text.py --config.model.branches=lstm

When model fields are None they, and the head, are first resolved from the dataset (prepared
offline on first use); otherwise config.head='' means the input kind's default head. The last line is `Total params: N`.
"""

from typing import Any

from hybrid_jax import platforms

platforms.choose_platform()  # Before JAX starts: the CPU, quietly, where CUDA has no driver.

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
from ml_collections import config_flags
import ml_collections

from hybrid_jax import cli
from hybrid_jax import config_validation
from hybrid_jax import input_kinds
from hybrid_jax.data import datasets
# pylint: enable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'Config file, e.g. configs/video.py.', lock_config=True
)


def parameter_table(params: Any) -> list[tuple[str, str, int]]:
  """Rows (layer path, parameter shapes, parameter count), one per layer, in creation order."""
  layers: dict[str, list[tuple[str, tuple[int, ...]]]] = {}

  # Dict order is the order layers were created.
  def visit(tree: Any, path: tuple[str, ...]) -> None:
    for name, value in tree.items():
      if hasattr(value, 'items'):
        visit(value, path + (name,))
      else:
        layers.setdefault('/'.join(path), []).append((name, tuple(value.shape)))

  visit(params, ())
  rows = []
  for layer, leaves in layers.items():
    shapes = ', '.join(f'{name} {shape}' for name, shape in leaves)
    rows.append((layer, shapes, sum(_size(shape) for _, shape in leaves)))
  return rows


def summarize(config: ml_collections.ConfigDict) -> str:
  """The table for `config`'s model, initialised abstractly (no parameter memory is allocated)."""
  model = input_kinds.create_model(config)
  batch = input_kinds.dummy_batch(config, batch_size=1)
  rows = []

  def init():  # Read the table inside the trace: outside it, pytrees come back with sorted keys.
    variables = model.init(jax.random.key(0), batch)
    rows.extend(parameter_table(variables['params']))
    return variables

  variables = jax.eval_shape(init)
  output = jax.eval_shape(model.apply, variables, batch)
  header = ('Layer', 'Parameter shapes', 'Params')
  widths = [max(len(header[i]), *(len(str(r[i])) for r in rows)) for i in (0, 1)]
  line = '-' * (sum(widths) + 16)
  out = [
    f'Model: {type(model).__name__} (task={config.task}, head={input_kinds.head(config).name}, '
    f'branches={config.model.branches}, fusion={config.model.fusion}, dtype={config.model.dtype})',
    'Inputs: ' + ', '.join(f'{k} {tuple(v.shape)[1:]}' for k, v in batch.items()),
    f'Output: {tuple(output.shape)[1:]} per example',
    line,
    f'{header[0]:<{widths[0]}}  {header[1]:<{widths[1]}}  {header[2]:>12}',
    line,
  ]
  out += [
    f'{name:<{widths[0]}}  {shapes:<{widths[1]}}  {count:>12,}' for name, shapes, count in rows
  ]
  out += [line, f'Total params: {sum(r[2] for r in rows):,}']
  return '\n'.join(out)


def _size(shape: tuple[int, ...]) -> int:
  size = 1
  for dim in shape:
    size *= dim
  return size


def main(argv):
  del argv
  config = _CONFIG.value
  config_validation.validate(config)
  # Dense(1) needs no classes.
  optional = ('num_classes',) if input_kinds.head(config).regression else ()
  if any(v is None for k, v in config.model.items() if k not in optional):
    # Head and None model fields from the data (prepared on first use).
    config = datasets.resolve(config).config
  print(summarize(config))


if __name__ == '__main__':
  cli.run(main)
