"""Only the project's own error types become one-line messages; anything else keeps its traceback.

Each user-fixable check raises a `hybrid_jax.errors` type with a one-line message (in process), and
through the command line: a project error is one `error: ...` line, a NaN stop too, while a plain
`ValueError` from inside training (a researcher's bug in a model they are editing) keeps its
traceback.
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import common as configs_common
from configs import sensor
from configs import video
from hybrid_jax import config_validation
from hybrid_jax import errors
from hybrid_jax import metrics
from hybrid_jax import input_kinds
from hybrid_jax import parallel
from hybrid_jax import steps
from hybrid_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _with(module, **model_fields):
  config = module.get_config('smoke')
  config.unlock()
  for key, value in model_fields.items():
    if key.startswith('model.'):
      config.model[key[len('model.') :]] = value
    else:
      config[key] = value
  return config


def _lr(**fields):
  return lambda: config_validation.validate(_with(sensor, **fields))


CASES = {
  'keep_checkpoints': (
    errors.ConfigError,
    lambda: config_validation.validate(_with(sensor, keep_checkpoints=0)),
  ),
  'empty eval': (errors.DataError, lambda: metrics.finalize({'count': np.float32(0), 'loss': 0.0})),
  'no eval batches': (errors.DataError, lambda: steps.run_eval(None, None, [], 1, 0, None)),
  'branches': (
    errors.ConfigError,
    lambda: config_validation.validate(_with(sensor, **{'model.branches': 'all'})),
  ),
  'fusion': (
    errors.ConfigError,
    lambda: config_validation.validate(_with(sensor, **{'model.fusion': 'sum'})),
  ),
  'dtype': (
    errors.ConfigError,
    lambda: config_validation.validate(_with(video, **{'model.dtype': 'f16'})),
  ),
  'key frame': (
    errors.ConfigError,
    lambda: config_validation.validate(_with(video, **{'model.key_frame_index': 10})),
  ),
  'task': (errors.ConfigError, lambda: config_validation.validate(_with(video, task='audio'))),
  'task (batch)': (errors.ConfigError, lambda: input_kinds.dummy_batch(_with(video, task='audio'))),
  'frame shape': (
    errors.ConfigError,
    lambda: input_kinds.create_model(video.get_config('smoke')).init(
      jax.random.key(0), {'clip': np.zeros((1, 10, 32, 32, 1), np.uint8)}
    ),
  ),
  'window shape': (
    errors.ConfigError,
    lambda: input_kinds.create_model(sensor.get_config('smoke')).init(
      jax.random.key(0), {'window': np.zeros((1, 5, 3, 5), np.float32)}
    ),
  ),
  'global batch': (
    errors.ConfigError,
    lambda: parallel.per_process_batch_size(10, jax.devices(), 'batch_size'),
  ),
  'local batch': (errors.ConfigError, lambda: parallel.shard_batch({'x': np.zeros((8, 2))}, 3)),
  'warmup': (
    errors.ConfigError,
    _lr(lr_schedule='warmup_cosine', warmup_steps=10, num_train_steps=10),
  ),
  'schedule': (errors.ConfigError, _lr(lr_schedule='linear')),
  'variant': (
    errors.ConfigError,
    lambda: configs_common.apply_variant(sensor.get_config(), 'tiny'),
  ),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_user_fixable_checks_raise_one_line_project_errors(name):
  error_type, trigger = CASES[name]
  with pytest.raises(errors.HybridJaxError) as error:
    trigger()
  assert isinstance(error.value, error_type)
  assert isinstance(error.value, ValueError)  # Callers that caught ValueError still do.
  message = str(error.value)
  assert message and '\n' not in message, message


def test_best_metric_is_a_config_error(tiny_data_dir):
  config = _with(sensor, best_metric='accuracy')
  config.dataset.update(name='weather_stations/tiny', data_dir=tiny_data_dir)
  with pytest.raises(errors.ConfigError, match="best_metric='accuracy' is not an eval metric"):
    train.Run(config, None)


def test_nan_stop_is_a_project_error_and_a_floating_point_error():
  assert issubclass(errors.TrainingError, errors.HybridJaxError)
  assert issubclass(errors.TrainingError, FloatingPointError)
  with pytest.raises(errors.TrainingError, match='at step 3'):
    train._check_finite(3, {'loss': float('nan')}, None)  # pylint: disable=protected-access


def _run(code: str, args: list[str]) -> subprocess.CompletedProcess:
  env = dict(
    os.environ,
    JAX_PLATFORMS='cpu',
    XLA_FLAGS='--xla_force_host_platform_device_count=1',
    PYTHONPATH=REPO,
  )
  env.pop('HYBRID_JAX_TRACEBACK', None)
  return subprocess.run(
    [sys.executable, '-c', code, *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )


MAIN = 'import sys; from hybrid_jax import cli, main; cli.run(main.main)'
# A researcher's bug inside the model they are editing: a plain ValueError raised while training.
BROKEN_MODEL = '''
import sys
from hybrid_jax import cli, main
from hybrid_jax.models import sensor
def __call__(self, batch, *, train=False):
  raise ValueError('my model bug: cannot reshape (8, 24) into (8, 5)')
sensor.SensorModel.__call__ = __call__
cli.run(main.main)
'''


def _flags(tiny_data_dir, workdir, *extra):
  return [
    '--config=configs/sensor.py:smoke',
    '--config.dataset.name=weather_stations/tiny',
    f'--config.dataset.data_dir={tiny_data_dir}',
    f'--workdir={workdir}',
    *extra,
  ]


def test_a_non_project_value_error_keeps_its_traceback(tiny_data_dir, tmp_path):
  result = _run(BROKEN_MODEL, _flags(tiny_data_dir, tmp_path / 'broken'))
  assert result.returncode != 0
  assert 'Traceback (most recent call last)' in result.stderr, result.stderr[-2000:]
  assert 'ValueError: my model bug' in result.stderr
  assert not any(line.startswith('error:') for line in result.stderr.splitlines())


@pytest.mark.parametrize(
  'extra, expected',
  [
    (['--config.learning_rate=1e38', '--config.log_every_steps=1'], 'at step 2; stopped'),  # NaN.
    (['--config.keep_checkpoints=0'], 'keep_checkpoints=0 must be an integer > 0'),
    (['--config.best_metric=accuracy'], "best_metric='accuracy' is not an eval metric"),
    (['--config.model.fusion=sum'], "config.model.fusion='sum' is not one of"),
  ],
)
def test_project_errors_stay_one_line_on_the_command_line(tiny_data_dir, tmp_path, extra, expected):
  result = _run(MAIN, _flags(tiny_data_dir, tmp_path / 'run', *extra))
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and expected in last, last


def test_config_parse_errors_stay_one_line(tmp_path):
  for config_arg, expected in [
    ('configs/sensor.py:tiny', "Unknown config variant 'tiny'"),
    ('configs/no_such.py', 'no_such.py'),
  ]:
    result = _run(MAIN, [f'--config={config_arg}', f'--workdir={tmp_path}'])
    assert result.returncode != 0 and 'Traceback' not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and expected in last, last
