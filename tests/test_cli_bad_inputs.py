"""Every bad input through the real command line ends with exit != 0 and one line on stderr.

Each JAX start costs seconds, so only inputs that fail in different places go through a subprocess
(flag parsing, main, validation, checkpoint verification); the numeric/enum fields are covered in
process by tests/test_checkpoint_safety.py. Damaged checkpoints: one WARNING line per skipped step,
then one error line, and none of orbax's exit-time noise.
"""

import os
import subprocess

import pytest

from configs import sensor
from hybrid_jax import train
import cli_runner

NOISE = ('Traceback', 'Exception ignored', 'Event loop is closed', 'never retrieved')


def _main(args: list[str]) -> subprocess.CompletedProcess:
  return cli_runner.run(['-m', 'hybrid_jax.main', *args])


def _flags(data_dir: str, workdir: str) -> list[str]:
  return [
    '--config=configs/sensor.py:smoke',
    '--config.dataset.name=weather_stations/tiny',
    f'--config.dataset.data_dir={data_dir}',
    f'--workdir={workdir}',
  ]


def _one_line(result: subprocess.CompletedProcess, *words: str) -> str:
  assert result.returncode != 0, result.stdout[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr[-3000:]
  assert lines[0].startswith('error:'), lines[0]
  for word in words:
    assert word in lines[0], lines[0]
  return lines[0]


@pytest.mark.parametrize(
  'extra,words',
  [
    (['--config.model.conv_features=abc'], ['config.model.conv_features=', 'tuple of integers']),
    (['--config.eval_every_steps=0'], ['config.eval_every_steps=0', '> 0']),
    (['--config.model.dropout_rate=1.5'], ['config.model.dropout_rate=1.5']),
    (['surplus_argument'], ["unexpected argument(s) ['surplus_argument']"]),
  ],
)
def test_bad_inputs_are_one_line(extra, words, tiny_data_dir, tmp_path):
  workdir = tmp_path / 'never'
  _one_line(_main(_flags(tiny_data_dir, str(workdir)) + extra), *words)
  assert not workdir.exists()  # Refused before anything was written.


def test_bad_split_expression_is_one_line(tiny_data_dir, tmp_path):
  workdir = tmp_path / 'never'
  extra = ["--config.dataset.train_split=train[abc]"]
  _one_line(
    _main(_flags(tiny_data_dir, str(workdir)) + extra),
    "config.dataset.train_split='train[abc]'",
    '--config.dataset.train_split',
  )
  assert not workdir.exists()


@pytest.mark.parametrize('where', ['existing_file', 'under_a_file', 'uncreatable'])
def test_workdir_that_cannot_be_one_is_one_line(where, tiny_data_dir, tmp_path):
  a_file = tmp_path / 'a_file'
  a_file.write_text('keep me\n', encoding='utf-8')
  workdir = {
    'existing_file': str(a_file),
    'under_a_file': str(a_file / 'run'),
    # /proc refuses new directories (FileNotFoundError from os.makedirs, even as root).
    'uncreatable': f'/proc/hybrid_jax_test_{os.getpid()}/run',
  }[where]
  _one_line(_main(_flags(tiny_data_dir, workdir)), f'--workdir={workdir}')
  assert sorted(os.listdir(tmp_path)) == ['a_file']  # Nothing written.
  assert a_file.read_text(encoding='utf-8') == 'keep me\n'


def test_config_file_that_does_not_parse_is_one_line(tmp_path):
  bad = tmp_path / 'broken_config.py'
  bad.write_text('def get_config(:\n  pass\n', encoding='utf-8')
  _one_line(_main([f'--config={bad}', f'--workdir={tmp_path / "w"}']), 'broken_config.py', 'line 1')


def test_damaged_checkpoints_give_warnings_and_one_error_without_orbax_noise(
  tiny_data_dir, tmp_path
):
  config = sensor.get_config('smoke')
  config.dataset.name = 'weather_stations/tiny'
  config.dataset.data_dir = tiny_data_dir
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)  # Steps 2 and 4.
  for step, damage in (('4', 'zero'), ('2', 'truncate')):
    state = os.path.join(workdir, 'checkpoints', step, 'state')
    blobs = sorted(
      os.path.join(d, n)
      for d, _, names in os.walk(state)
      for n in names
      if os.path.basename(d) == 'd'
    )
    with open(blobs[0], 'r+b') as f:
      size = len(f.read())
      if damage == 'zero':
        f.seek(0)
        f.write(bytes(size))
      else:
        f.truncate(size // 2)
  result = _main(_flags(tiny_data_dir, workdir) + ['--mode=eval'])
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert [line.split(':')[0] for line in lines] == ['WARNING', 'WARNING', 'error'], result.stderr
  assert 'checkpoints/4: file' in lines[0] and 'checkpoints/2: file' in lines[1]
  assert 'No intact checkpoint' in lines[2]
  assert not any(noise in result.stderr for noise in NOISE)
