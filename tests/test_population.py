"""hybrid_jax/population.py: members, the injected learning rate, and the vmapped steps against
single runs' steps."""

import jax
import numpy as np
import pytest

from configs import sensor
from hybrid_jax import config_validation
from hybrid_jax import input_kinds
from hybrid_jax import parallel
from hybrid_jax import population
from hybrid_jax import steps
from hybrid_jax.errors import ConfigError
from hybrid_jax.models import lstm
import adam_rounding

# vmap batches the convolutions and matmuls of the members: XLA may sum in another order than for
# one member, so a member equals its single run to float32 rounding, which Adam scales up where a
# gradient is a near-cancelling sum (tests/adam_rounding.py), not bit for bit.
LOSS_RTOL = 1e-4


def _config(seeds='', rates='', **model):
  config = sensor.get_config()
  config.model.update(window_shape=(20, 4, 1), **model)
  config.population.seeds, config.population.learning_rates = seeds, rates
  config_validation.validate(config)
  return config


def _batches(config, seeds, n=8, steps_=3):
  """Per seed, `steps_` batches that only that seed's single run reads."""
  out = {}
  for s in seeds:
    rng = np.random.default_rng(100 + s)
    out[s] = []
    for _ in range(steps_):
      batch = input_kinds.dummy_batch(config, n)
      batch['window'] = rng.normal(3.0, 2.0, batch['window'].shape).astype(np.float32)
      batch['target'] = rng.normal(size=n).astype(np.float32)
      out[s].append(batch)
  return out


def test_members_are_seed_major_and_bad_lists_are_one_line():
  config = _config('0,1,2', '3e-4,1e-3')
  got = [(m.index, m.seed, m.learning_rate) for m in population.members(config)]
  assert got == [(0, 0, 3e-4), (1, 0, 1e-3), (2, 1, 3e-4), (3, 1, 1e-3), (4, 2, 3e-4), (5, 2, 1e-3)]
  assert population.members(_config()) == []  # Both empty: a single run.
  only_seeds = population.members(_config('4,5'))
  assert [(m.seed, m.learning_rate) for m in only_seeds] == [(4, 1e-3), (5, 1e-3)]
  assert [m.seed for m in population.members(_config('', '1e-3,1e-2'))] == [0, 0]
  assert population.seed_index(population.members(config)).tolist() == [0, 0, 1, 1, 2, 2]
  member = population.member_config(config, population.members(config)[3])
  assert (member.seed, member.learning_rate, member.population.seeds) == (1, 1e-3, '')
  with pytest.raises(ConfigError, match=r'population.seeds=.0,x. is not a comma-separated'):
    population.members(_config('0,x'))
  with pytest.raises(ConfigError, match='repeats a value'):
    population.members(_config('1,1'))
  with pytest.raises(ConfigError, match='every rate must be > 0'):
    population.members(_config('', '1e-3,-1'))


def _single_runs(config, members, batches, devices):
  """Each member trained alone with steps.make_steps, as a single run with its seed and rate."""
  out = []
  for m in members:
    single = population.member_config(config, m)
    model = input_kinds.create_model(single)
    params_key, dropout_key = jax.random.split(jax.random.key(m.seed))
    state = steps.create_train_state(single, model, params_key)
    p_train, _ = steps.make_steps(tuple(devices), 'regression', 0)
    losses = []
    for batch in batches[m.seed]:
      state, metrics = p_train(state, parallel.shard_batch(batch, len(devices)), dropout_key)
      losses.append(float(metrics['loss']))
    out.append((jax.device_get(state.params), losses))
  return out


def _population_run(config, members, batches, devices, active=None):
  model = input_kinds.create_model(config)
  states = population.init_states(config, model, members)
  _, dropout_keys = population.keys(members)
  index = population.seed_index(members)
  active = np.ones(len(members), bool) if active is None else active
  p_train, _ = population.make_steps(tuple(devices), 'regression', 0)
  seeds = population.distinct_seeds(members)
  losses = []
  for t in range(len(batches[seeds[0]])):
    sharded = population.shard_batches([batches[s][t] for s in seeds], len(devices))
    states, metrics = p_train(states, sharded, dropout_keys, index, active)
    losses.append(np.asarray(metrics['loss']))
  return states, np.stack(losses, axis=1)  # [K, steps]


@pytest.mark.parametrize('model', [{}, {'fusion': 'concat_norm', 'dropout_rate': 0.3}])
def test_population_members_equal_their_single_runs(model):
  config = _config('0,1', '1e-3,1e-2', **model)
  members = population.members(config)
  assert len(members) == 4
  devices = jax.devices()[:2]  # Each member's batch split over 2 devices, gradients averaged.
  batches = _batches(config, [0, 1])
  states, losses = _population_run(config, members, batches, devices)
  np.testing.assert_array_equal(
    population.learning_rates(states), np.float32([1e-3, 1e-2, 1e-3, 1e-2])
  )
  singles = _single_runs(config, members, batches, devices)
  for k, (params, single_losses) in enumerate(singles):
    np.testing.assert_allclose(losses[k], single_losses, rtol=LOSS_RTOL)
    member_params = population.member_state(states, k).params
    adam_rounding.assert_close(member_params, params, members[k].learning_rate)
  # The members really differ (same seed, other rate; same rate, other seed), and the parameter
  # check tells them apart.
  assert not np.allclose(losses[0], losses[1]) and not np.allclose(losses[0], losses[2])
  for other in (1, 2):
    with pytest.raises(AssertionError, match='parameters beyond'):
      adam_rounding.assert_close(
        population.member_state(states, 0).params, singles[other][0], members[0].learning_rate
      )


def test_the_members_lstms_trace_the_scan_where_auto_picks_cudnn(monkeypatch):
  # On a GPU 'auto' picks cuDNN's fused LSTM, which has no batching rule: the vmapped steps (and
  # member_bytes) must trace the scan. An LSTM size no other test uses, so the steps are traced.
  config = _config('0,1', '1e-3', lstm_units=9)
  members = population.members(config)
  states = population.init_states(config, input_kinds.create_model(config), members)
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')  # After init: no cuDNN on this CPU.
  assert lstm.resolve_implementation('auto') == 'cudnn'
  p_train, p_eval = population.make_steps(tuple(jax.devices()[:1]), 'regression', 0)
  batches = _batches(config, [0, 1], steps_=1)
  sharded = population.shard_batches([batches[0][0], batches[1][0]], 1)
  _, dropout_keys = population.keys(members)
  index, active = population.seed_index(members), np.ones(len(members), bool)
  states, metrics = p_train(states, sharded, dropout_keys, index, active)
  assert np.isfinite(np.asarray(metrics['loss'])).all()
  sums = p_eval(states, parallel.shard_batch(batches[0][0], 1))
  assert np.isfinite(np.asarray(sums['loss'])).all()
  assert population.member_bytes(config, input_kinds.create_model(config)) > 0


def test_a_stopped_member_keeps_its_state_and_four_devices_equal_one():
  config = _config('0,1,2')
  members = population.members(config)
  batches = _batches(config, [0, 1, 2])
  initial = population.init_states(config, input_kinds.create_model(config), members)
  initial_params = jax.device_get(population.member_state(initial, 1).params)
  active = np.array([True, False, True])
  one, _ = _population_run(config, members, batches, jax.devices()[:1], active)
  four, _ = _population_run(config, members, batches, jax.devices()[:4], active)
  jax.tree.map(
    np.testing.assert_array_equal,
    jax.device_get(population.member_state(one, 1).params),
    initial_params,
  )
  assert int(population.member_state(one, 1).step) == 0
  assert int(population.member_state(one, 0).step) == 3
  adam_rounding.assert_close(one.params, four.params, config.learning_rate)
