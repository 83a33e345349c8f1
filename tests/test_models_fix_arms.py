"""The fix arms of the study as model switches any run can use: concat_norm, auxiliary branch
losses, branch dropout; and early stopping on validation."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hybrid_jax
from configs import sensor
from hybrid_jax import ablation
from hybrid_jax import config_validation
from hybrid_jax import input_kinds
from hybrid_jax import parallel
from hybrid_jax import steps
from hybrid_jax import train
from hybrid_jax.models import fusion
import cli_runner


def _reference(**model):
  """The reference sensor model (window (20, 4, 1): 6,241 parameters) with `model` fields."""
  config = sensor.get_config()
  config.model.update(window_shape=(20, 4, 1), **model)
  config_validation.validate(config)
  return config


def _count(config) -> int:
  model = input_kinds.create_model(config)
  shapes = jax.eval_shape(model.init, jax.random.key(0), input_kinds.dummy_batch(config))
  return sum(leaf.size for leaf in jax.tree.leaves(shapes['params']))


def _batch(config, n=8, seed=0):
  rng = np.random.default_rng(seed)
  batch = input_kinds.dummy_batch(config, n)
  batch['window'] = rng.normal(3.0, 2.0, batch['window'].shape).astype(np.float32)
  batch['target'] = rng.normal(size=n).astype(np.float32)
  return batch


def test_fix_arm_parameter_counts():
  assert _count(_reference()) == 6_241
  assert _count(_reference(fusion='concat_norm')) == 6_241  # Statistics are not parameters.
  assert _count(_reference(branch_dropout=0.3)) == 6_241
  # One Dense(1) per branch: Flatten(10 pooled steps x 64) + 1, LSTM(32) + 1.
  assert _count(_reference(aux_loss_weight=0.5)) == 6_241 + (640 + 1) + (32 + 1)


def test_concat_norm_standardises_each_feature_and_equalises_the_branches():
  config = _reference(fusion='concat_norm')
  model = input_kinds.create_model(config)
  state = steps.create_train_state(config, model, jax.random.key(0))
  assert set(state.model_state) == {'norm_stats'}
  batch = _batch(config, 64)
  with ablation.branch_features() as raw:  # The branch features the first step normalises.
    model.apply(steps.model_variables(state), batch)
  initial = jax.tree.map(jnp.array, state.params)  # A copy: the step donates the state.
  p_train, _ = steps.make_steps(tuple(jax.devices()[:1]), 'regression', 0)
  state, _ = p_train(state, parallel.shard_batch(batch, 1), jax.random.key(1))
  stats = state.model_state['norm_stats']['head']['fusion']
  for i, features in enumerate(raw):  # The first batch's statistics, exactly.
    np.testing.assert_allclose(stats[f'norm_{i}']['mean'], features.mean(0), rtol=1e-5, atol=1e-6)
  captured = []

  def at_output(next_fun, args, kwargs, context):
    if context.module.name == 'output':
      captured.append(args[0])
    return next_fun(*args, **kwargs)

  variables = {'params': initial, **state.model_state}
  with nn.intercept_methods(at_output):  # The features of `raw`, normalised by the new statistics.
    model.apply(variables, batch)
  fused = np.asarray(captured[0])
  widths = [f.shape[1] for f in raw]
  blocks = np.split(fused, np.cumsum(widths)[:-1], axis=1)
  for block, width, features in zip(blocks, widths, raw):
    # Unit variance per feature (up to the epsilon), and each block scaled by 1/sqrt(width).
    variance = np.asarray(features, np.float64).var(0)
    expected = np.sqrt(variance / (variance + 1e-5))
    np.testing.assert_allclose(block.std(0) * np.sqrt(width), expected, rtol=1e-3, atol=1e-4)
  assert len(blocks) == 2 and min(widths) == 32 and max(widths) == 640


def test_concat_norm_statistics_do_not_depend_on_the_device_split():
  config = _reference(fusion='concat_norm')
  model = input_kinds.create_model(config)
  batch = _batch(config, 8)
  states = []
  for devices in (jax.devices()[:1], jax.devices()[:4]):
    state = steps.create_train_state(config, model, jax.random.key(0))
    p_train, _ = steps.make_steps(tuple(devices), 'regression', 0)
    state, _ = p_train(state, parallel.shard_batch(batch, len(devices)), jax.random.key(1))
    states.append(state.model_state)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), *states)


def test_aux_loss_is_added_to_the_fused_loss():
  config = _reference(aux_loss_weight=0.5)
  model = input_kinds.create_model(config)
  state = steps.create_train_state(config, model, jax.random.key(0))
  batch = _batch(config)
  out, sown = model.apply({'params': state.params}, batch, mutable=['intermediates'])
  p_train, _ = steps.make_steps(tuple(jax.devices()[:1]), 'regression', 0, 0.5)
  _, metrics = p_train(state, parallel.shard_batch(batch, 1), jax.random.key(1))
  aux = sown['intermediates']['head'][fusion.AUX_OUTPUTS][0]
  mse = lambda o: float(np.mean((np.asarray(o) - batch['target']) ** 2))  # noqa: E731
  assert float(metrics['fused_loss']) == pytest.approx(mse(out), rel=1e-5)
  assert float(metrics['loss']) == pytest.approx(mse(out) + 0.5 * sum(map(mse, aux)), rel=1e-5)


def test_branch_dropout_zeroes_whole_branches_in_training_only():
  features = [jnp.ones((1000, 3)), 2 * jnp.ones((1000, 2))]
  dropped = fusion.Fusion('concat', branch_dropout=0.4).apply(
    {}, features, train=True, rngs={'dropout': jax.random.key(0)}
  )
  cnn_kept, lstm_kept = dropped[:, 0] > 0, dropped[:, 3] > 0
  assert np.all(cnn_kept | lstm_kept)  # Never every branch.
  assert np.all((dropped[:, :3] == 0) | (dropped[:, :3] == 1))  # Whole branches, not units.
  # Kept with probability 0.6, plus 0.4 x 0.4 when both were drawn to drop: 0.76.
  assert 0.72 < np.mean(cnn_kept) < 0.80 and 0.72 < np.mean(lstm_kept) < 0.80
  same = fusion.Fusion('concat', branch_dropout=0.4).apply({}, features, train=False)
  np.testing.assert_array_equal(same, jnp.concatenate(features, axis=1))


def test_fix_arms_are_command_line_flags():
  flags = [
    '--config.model.fusion=concat_norm',
    '--config.model.aux_loss_weight=0.5',
    '--config.model.branch_dropout=0.2',
  ]
  done = cli_runner.run(
    ['-m', 'hybrid_jax.summary', '--config=configs/video.py', *flags], devices=1
  )
  assert done.returncode == 0, done.stderr[-2000:]
  assert 'fusion=concat_norm' in done.stdout and 'head/aux_1' in done.stdout
  bad = cli_runner.run(
    ['-m', 'hybrid_jax.summary', '--config=configs/video.py', '--config.model.branch_dropout=1.0'],
    devices=1,
  )
  assert bad.returncode != 0 and 'branch_dropout=1.0 must be a number in [0, 1)' in bad.stderr


def _jv(data_dir, **overrides):
  from configs import japanese_vowels  # pylint: disable=g-import-not-at-top

  config = japanese_vowels.get_config('smoke')
  config.dataset.update(name='japanese_vowels/tiny', data_dir=data_dir)
  config.update(num_train_steps=12, eval_every_steps=2, checkpoint_every_steps=2)
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    target = config
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  return config


def _evals(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [r for r in map(json.loads, f) if r['split'] == 'eval']


def test_early_stopping_stops_keeps_the_best_and_resumes_stopped(tiny_data_dir, tmp_path):
  # learning_rate=0: nothing ever improves after the first evaluation.
  config = _jv(tiny_data_dir, learning_rate=0.0, early_stopping_patience=2)
  workdir = str(tmp_path / 'stopped')
  train.train_and_evaluate(config, workdir)
  evals = _evals(workdir)
  assert [r['step'] for r in evals] == [2, 4, 6]  # Best at 2, then 2 without a better.
  best = train.evaluate(config, workdir, checkpoint='best')  # Kept (here all three tie).
  assert (best['accuracy'], best['loss']) == (evals[0]['accuracy'], evals[0]['loss'])
  train.train_and_evaluate(config, workdir)  # Re-running a stopped run trains nothing more.
  assert [r['step'] for r in _evals(workdir)] == [2, 4, 6]
  config.early_stopping_patience = 0  # Off: the run goes on to num_train_steps.
  train.train_and_evaluate(config, workdir)
  assert [r['step'] for r in _evals(workdir)][-1] == 12


def test_concat_norm_run_predicts_with_its_statistics(tiny_data_dir, tmp_path):
  config = _jv(tiny_data_dir, **{'model.fusion': 'concat_norm'})
  workdir = str(tmp_path / 'norm')
  train.train_and_evaluate(config, workdir)
  evaluated = train.evaluate(config, workdir, checkpoint='latest')
  model = hybrid_jax.load(workdir, checkpoint='latest')
  assert set(model.variables) == {'params', 'norm_stats'}
  from hybrid_jax.data import datasets  # pylint: disable=g-import-not-at-top

  source = datasets.resolve(config)
  records = source.records(source.config.dataset.eval_split)
  windows = [records[i]['window'] for i in range(len(records))]
  labels = np.array([records[i]['label'] for i in range(len(records))])
  predicted = model.predict(windows).label_ids
  assert np.mean(predicted == labels) == pytest.approx(evaluated['accuracy'])
