"""Population training end to end (hybrid_jax/population_train.py) on tiny data: members equal
their single runs, per-member best checkpoints and early stopping, resume after kill -9, a member
loaded like a single run, 4 devices = 1."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import hybrid_jax
from configs import sensor
from hybrid_jax import checkpoints
from hybrid_jax import population
from hybrid_jax import population_train
from hybrid_jax import train
from hybrid_jax.errors import ConfigError
import adam_rounding
import cli_runner

# Members run vmapped, single runs not: equal to float32 rounding, which Adam scales up
# (tests/adam_rounding.py); losses and MAEs to a relative 1e-4.
RTOL = 1e-4
# Populations here train on 2 of the 4 simulated devices (4 devices = 1 is tested on the step,
# tests/test_population.py), a lighter load on a 2-core machine.
DEVICES = 2


def _config(tiny_data_dir, seeds='0,1,2', rates='', steps=12, **fields):
  config = sensor.get_config('smoke')
  config.dataset.update(name='weather_stations/tiny', data_dir=tiny_data_dir)
  config.update(
    num_train_steps=steps, eval_every_steps=4, checkpoint_every_steps=4, log_every_steps=2, **fields
  )
  config.population.seeds, config.population.learning_rates = seeds, rates
  return config


def _params(workdir, which='latest'):
  model = hybrid_jax.load(workdir, checkpoint=which)
  return jax.device_get(model.variables['params']), model


def _records(workdir, split):
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [r for r in map(json.loads, f) if r['split'] == split]


def test_members_equal_single_runs_and_are_single_run_dirs(tiny_data_dir, tmp_path):
  config = _config(tiny_data_dir, seeds='0,1', rates='1e-3,1e-2')
  results = population_train.train_population(
    config, str(tmp_path / 'pop'), jax.devices()[:DEVICES]
  )
  assert [(r['member'], r['seed'], r['learning_rate']) for r in results] == [
    (0, 0, 1e-3),
    (1, 0, 1e-2),
    (2, 1, 1e-3),
    (3, 1, 1e-2),
  ]
  for m in population.members(config):
    single_dir = str(tmp_path / f'single{m.index}')
    single = train.train_and_evaluate(
      population.member_config(config, m), single_dir, jax.devices()[:DEVICES]
    )
    member_dir = population.member_dir(str(tmp_path / 'pop'), m.index)
    np.testing.assert_allclose(results[m.index]['mae'], single['mae'], rtol=RTOL)
    member_train = _records(member_dir, 'train')
    single_train = _records(single_dir, 'train')
    assert [r['step'] for r in member_train] == [r['step'] for r in single_train]
    np.testing.assert_allclose(
      [r['loss'] for r in member_train], [r['loss'] for r in single_train], rtol=RTOL
    )
    assert member_train[0]['learning_rate'] == pytest.approx(m.learning_rate)
    # The member's dir is a single run's: its best and its last step, loadable, and its parameters.
    member_manager = checkpoints.create_manager(member_dir, 3, 'mae', read_only=True)
    single_manager = checkpoints.create_manager(single_dir, 3, 'mae', read_only=True)
    assert member_manager.best_step() == single_manager.best_step()
    assert member_manager.all_steps() == sorted(
      {single_manager.best_step(), single_manager.latest_step()}
    )
    best_member, _ = _params(member_dir, member_manager.best_step())
    best_single, _ = _params(single_dir, single_manager.best_step())
    adam_rounding.assert_close(best_member, best_single, m.learning_rate)
    member_params, member_model = _params(member_dir)
    single_params, single_model = _params(single_dir)
    adam_rounding.assert_close(member_params, single_params, m.learning_rate)
    loaded, _ = _params_of(hybrid_jax.load(str(tmp_path / 'pop'), 'latest', member=m.index))
    jax.tree.map(np.testing.assert_array_equal, loaded, member_params)
  assert os.path.isdir(tmp_path / 'pop' / 'members' / '3' / 'tensorboard')


def _params_of(model):
  return jax.device_get(model.variables['params']), model


def test_early_stopping_and_best_checkpoints_per_member(tiny_data_dir, tmp_path):
  # lr 0.3 stops improving early; 1e-3 keeps improving: they stop at different steps.
  config = _config(tiny_data_dir, seeds='0', rates='1e-3,0.3', steps=40, early_stopping_patience=1)
  results = population_train.train_population(
    config, str(tmp_path / 'pop'), jax.devices()[:DEVICES]
  )
  stopped_at = []
  for m, result in zip(population.members(config), results):
    evals = _records(population.member_dir(str(tmp_path / 'pop'), m.index), 'eval')
    stopped_at.append(evals[-1]['step'])
    best = min(evals, key=lambda r: r['mae'])
    manager = checkpoints.create_manager(
      population.member_dir(str(tmp_path / 'pop'), m.index), 3, 'mae', read_only=True
    )
    assert manager.best_step() == best['step']
    assert result['stopped'] == (evals[-1]['step'] < 40)
  assert stopped_at[0] != stopped_at[1], stopped_at


def test_four_devices_equal_one(tiny_data_dir, tmp_path):
  config = _config(tiny_data_dir, seeds='0,1,2', steps=8)
  one = population_train.train_population(config, str(tmp_path / 'one'), jax.devices()[:1])
  four = population_train.train_population(config, str(tmp_path / 'four'), jax.devices()[:4])
  for a, b in zip(one, four):
    np.testing.assert_allclose(a['mae'], b['mae'], rtol=RTOL)


def test_a_population_resumes_bit_identically_after_kill_9(tiny_data_dir, tmp_path):
  args = [
    '-m',
    'hybrid_jax.main',
    '--config=configs/sensor.py:smoke',
    '--config.dataset.name=weather_stations/tiny',
    f'--config.dataset.data_dir={tiny_data_dir}',
    '--config.population.seeds=0,1',
    '--config.population.learning_rates=1e-3,3e-3',
    '--config.num_train_steps=60',
    '--config.checkpoint_every_steps=7',
    '--config.eval_every_steps=30',
    '--config.log_every_steps=5',
  ]
  whole = cli_runner.run([*args, f'--workdir={tmp_path / "whole"}'], devices=DEVICES)
  assert whole.returncode == 0, whole.stderr[-3000:]
  killed = str(tmp_path / 'killed')
  env = dict(
    os.environ,
    JAX_PLATFORMS='cpu',
    XLA_FLAGS=f'--xla_force_host_platform_device_count={DEVICES}',
  )
  proc = subprocess.Popen(
    [sys.executable, *args, f'--workdir={killed}'],
    cwd=cli_runner.REPO,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 300
  population_checkpoints = os.path.join(killed, 'checkpoints')
  try:  # Kill once the population has saved a step past 20.
    while proc.poll() is None and time.time() < deadline:
      if os.path.isdir(population_checkpoints) and any(
        n.isdigit() and int(n) > 20 for n in os.listdir(population_checkpoints)
      ):
        break
      time.sleep(0.05)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert proc.returncode == -signal.SIGKILL
  resumed = cli_runner.run([*args, f'--workdir={killed}'], devices=DEVICES)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'Resumed the population' in resumed.stdout + resumed.stderr
  for k in range(4):
    a = population.member_dir(str(tmp_path / 'whole'), k)
    b = population.member_dir(killed, k)
    jax.tree.map(np.testing.assert_array_equal, _params(a)[0], _params(b)[0])
    assert _records(a, 'train') == _records(b, 'train')
    assert _records(a, 'eval') == _records(b, 'eval')


def test_bad_population_lists_and_a_member_dir_of_another_run(tiny_data_dir, tmp_path):
  with pytest.raises(ConfigError, match='population.seeds'):
    population_train.train_population(
      _config(tiny_data_dir, seeds='0;1'), str(tmp_path / 'a'), jax.devices()[:DEVICES]
    )
  config = _config(tiny_data_dir, seeds='0,1', steps=4)
  population_train.train_population(config, str(tmp_path / 'b'), jax.devices()[:DEVICES])
  other = _config(tiny_data_dir, seeds='0,1', steps=4)
  other.model.lstm_units = 4
  before = sorted(os.listdir(tmp_path / 'b' / 'members' / '0' / 'checkpoints'))
  with pytest.raises(ConfigError):
    population_train.train_population(other, str(tmp_path / 'b'), jax.devices()[:DEVICES])
  assert sorted(os.listdir(tmp_path / 'b' / 'members' / '0' / 'checkpoints')) == before
