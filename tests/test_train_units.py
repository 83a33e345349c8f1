"""Small pieces of the train stream: metric sums with padding, batch splitting, optimizer, progress."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import text
from hybrid_jax import config_validation
from hybrid_jax import metrics
from hybrid_jax import parallel
from hybrid_jax import reporting
from hybrid_jax import steps


def test_classification_sums_ignore_padding_and_fill_confusion():
  logits = jnp.array([[5.0, 0.0, 0.0], [0.0, 5.0, 1.0], [0.0, 0.0, 5.0], [9.0, 0.0, 0.0]])
  labels = jnp.array([0, 2, 2, 1])
  mask = jnp.array([True, True, True, False])  # The last row is padding: must not count.
  sums = metrics.classification_sums(logits, labels, mask, top_k=2, with_confusion=True)
  out = metrics.finalize(metrics.add_sums(None, jax.device_get(sums)), top_k=2)
  assert out['num_examples'] == 3
  assert out['accuracy'] == pytest.approx(2 / 3)
  assert out['top_2_accuracy'] == pytest.approx(1.0)  # Label 2 of row 1 is its 2nd-best class.
  assert out['confusion'] == [[1, 0, 0], [0, 0, 0], [0, 1, 1]]
  log_probs = jax.nn.log_softmax(np.asarray(logits[:3], np.float64))
  expected_ce = -np.mean([log_probs[0, 0], log_probs[1, 2], log_probs[2, 2]])
  assert out['loss'] == pytest.approx(expected_ce, rel=1e-5)


def test_sums_over_batches_equal_one_big_batch():
  rng = np.random.default_rng(0)
  prediction, target = (
    rng.normal(size=10).astype(np.float32),
    rng.normal(size=10).astype(np.float32),
  )
  whole = metrics.regression_sums(prediction, target, np.ones(10, bool))
  parts = None
  for lo, hi in ((0, 4), (4, 8), (8, 10)):
    pad = 4 - (hi - lo)  # Pad the last batch to 4 rows like the eval pipeline does.
    p = np.concatenate([prediction[lo:hi], np.full(pad, 100.0, np.float32)])
    t = np.concatenate([target[lo:hi], np.zeros(pad, np.float32)])
    m = np.arange(4) < hi - lo
    parts = metrics.add_sums(parts, jax.device_get(metrics.regression_sums(p, t, m)))
  a = metrics.finalize(metrics.add_sums(None, jax.device_get(whole)), target_std=2.0)
  b = metrics.finalize(parts, target_std=2.0)
  for name in ('mse', 'mae', 'rmse', 'mae_original_units'):
    assert a[name] == pytest.approx(b[name], rel=1e-6)
  assert a['mae_original_units'] == pytest.approx(
    2.0 * np.mean(np.abs(prediction - target)), rel=1e-5
  )


def test_batch_split_and_its_errors():
  batch = {'x': np.arange(24).reshape(8, 3), 'y': np.arange(8)}
  split = parallel.shard_batch(batch, 4)
  assert split['x'].shape == (4, 2, 3) and split['y'].tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
  with pytest.raises(ValueError, match='batch of 8 examples does not split over 3 local devices'):
    parallel.shard_batch(batch, 3)
  with pytest.raises(
    ValueError,
    match=r'config.batch_size=10 must be a positive multiple of the '
    r'4 devices.*--config.batch_size=8',
  ):
    parallel.per_process_batch_size(10, jax.devices(), 'batch_size')
  assert parallel.per_process_batch_size(16, jax.devices(), 'batch_size') == 16


def test_optimizer_schedule_and_validation():
  config = text.get_config('smoke')
  config.lr_schedule, config.warmup_steps, config.num_train_steps = 'warmup_cosine', 2, 10
  _, schedule = steps.create_optimizer(config)
  assert float(schedule(0)) == 0.0 and float(schedule(2)) == pytest.approx(config.learning_rate)
  assert float(schedule(10)) == pytest.approx(0.0, abs=1e-9)
  config.warmup_steps = 10
  # One check, in config_validation (it was also in the optimizer, with its own wording).
  with pytest.raises(ValueError, match='warmup_steps=10 must be < num_train_steps=10'):
    config_validation.validate(config)
  config.lr_schedule = 'linear'
  with pytest.raises(ValueError, match="config.lr_schedule='linear' is not one of"):
    config_validation.validate(config)


def test_weight_decay_skips_biases():
  config = text.get_config('smoke')
  config.weight_decay, config.learning_rate = 0.5, 0.1
  tx, _ = steps.create_optimizer(config)
  params = {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones((2,))}
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  assert float(jnp.abs(updates['bias']).max()) == 0.0  # Zero gradient, no decay on biases ...
  assert float(updates['kernel'][0, 0]) == pytest.approx(-0.1 * 0.5)  # ... decay on kernels.


def test_progress_line_and_table(capsys):
  progress = reporting.Progress(total_steps=100, global_batch_size=32, start_step=0)
  rates = progress.update(0, {'loss': 1.0})
  assert rates == {}  # No steps timed yet (compilation only).
  progress.reset_clock(0)
  rates = progress.update(10, {'loss': 0.5, 'accuracy': 0.25, 'learning_rate': 1e-3})
  line = capsys.readouterr().out.strip().splitlines()[-1]
  assert line.startswith('[train] step  10/100 | loss 0.5000 | accuracy 0.2500 |'), line
  assert 'steps/s' in line and 'ex/s' in line and 'ETA' in line
  assert rates['examples_per_sec'] == pytest.approx(32 * rates['steps_per_sec'])
  table = reporting.format_table(
    '[eval]', {'loss': 0.5, 'num_examples': 7, 'confusion': [[1]]}, {'chance_accuracy': 0.2}
  )
  assert '| loss' in table and '0.5000' in table and 'baseline: chance_accuracy' in table
  assert 'confusion' not in table
