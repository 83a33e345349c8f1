"""Model output shapes, parameter parity with the reference Keras models, and switch validation."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import sensor, text, video
from hybrid_jax import input_kinds
from hybrid_jax.models.fusion import BRANCHES, FUSIONS
from hybrid_jax import config_validation
from hybrid_jax import summary

# The reference (Keras) input shapes and their parameter counts (DEVELOPERS.md, issue "Models").
REFERENCE = {
  'video': (video, dict(frame_shape=(64, 64, 3), num_classes=10), 4_394_826),
  'text': (text, dict(vocab_size=10_000, embed_dim=100, max_length=50, num_classes=5), 1_131_013),
  'sensor': (sensor, dict(window_shape=(20, 4, 1)), 6_241),
}


def reference_config(task, **model_overrides):
  module, shapes, _ = REFERENCE[task]
  config = module.get_config()
  config.model.update(shapes)
  config.model.update(model_overrides)
  return config


def random_batch(config, batch_size, seed=0):
  rng = np.random.default_rng(seed)
  batch = input_kinds.dummy_batch(config, batch_size)
  if config.task == 'video':
    batch['clip'] = rng.integers(0, 256, batch['clip'].shape, dtype=np.uint8)
  elif config.task == 'text':
    batch['tokens'] = rng.integers(
      2, config.model.vocab_size, batch['tokens'].shape, dtype=np.int32
    )
    batch['length'] = rng.integers(1, config.model.max_length + 1, batch_size, dtype=np.int32)
  else:
    batch['window'] = rng.normal(size=batch['window'].shape).astype(np.float32)
  return batch


def count_params(params):
  return sum(leaf.size for leaf in jax.tree.leaves(params))


@pytest.mark.parametrize('task', list(REFERENCE))
def test_parameter_count_matches_reference_keras_model(task):
  config = reference_config(task)
  model = input_kinds.create_model(config)
  variables = jax.eval_shape(model.init, jax.random.key(0), input_kinds.dummy_batch(config))
  assert count_params(variables['params']) == REFERENCE[task][2]
  assert summary.summarize(config).splitlines()[-1] == f'Total params: {REFERENCE[task][2]:,}'


@pytest.mark.parametrize('task', ['video', 'text', 'sensor'])
def test_shipped_configs_keep_reference_layer_sizes(task):
  m = REFERENCE[task][0].get_config().model
  expected = {'video': ((32, 64), 64), 'text': ((128, 128), 64), 'sensor': ((64,), 32)}[task]
  assert (tuple(m.conv_features), m.lstm_units, m.kernel_size) == (*expected, 3)
  assert (m.branches, m.fusion, m.dtype) == ('both', 'concat', 'float32')


# Every task x every branch selection x every fusion: real init + apply on a small batch.
SWITCHES = [
  (task, branches, fusion)
  for task, branches, fusion in itertools.product(REFERENCE, BRANCHES, FUSIONS)
  if branches == 'both' or fusion == 'concat'
]  # One branch ignores the fusion kind.


@pytest.mark.parametrize('task,branches,fusion', SWITCHES)
def test_output_shapes_for_every_switch(task, branches, fusion):
  overrides = dict(branches=branches, fusion=fusion, fusion_dim=16)
  if task == 'video':  # Smaller frames keep the sweep fast; the layers are the same.
    overrides.update(frame_shape=(16, 16, 3), num_frames=3)
  config = reference_config(task, **overrides)
  model = input_kinds.create_model(config)
  batch = random_batch(config, batch_size=3)
  variables = model.init(jax.random.key(0), batch)
  out = jax.jit(model.apply)(variables, batch)
  expected = (3,) if task == 'sensor' else (3, config.model.num_classes)
  assert out.shape == expected and out.dtype == jnp.float32
  assert np.all(np.isfinite(out))
  top = set(variables['params'])
  assert ('lstm' in top) == (branches in ('both', 'lstm', 'lstm+lstm'))
  assert ('cnn' in top or 'frame_cnn' in top) == (
    task == 'video' or branches != 'lstm' and branches != 'lstm+lstm'
  )
  assert ('cnn_copy' in top, 'lstm_copy' in top) == (branches == 'cnn+cnn', branches == 'lstm+lstm')
  learned = fusion in ('gated', 'projected_sum')  # concat and concat_norm have no parameters.
  assert ('fusion' in variables['params']['head']) == (branches == 'both' and learned)


def test_fusion_widths():
  """Concat joins widths; learned fusions project both branches to fusion_dim."""
  base = reference_config('text')
  widths = {}
  for fusion in FUSIONS:
    config = reference_config('text', fusion=fusion, fusion_dim=24)
    variables = jax.eval_shape(
      input_kinds.create_model(config).init, jax.random.key(0), input_kinds.dummy_batch(base)
    )
    widths[fusion] = variables['params']['head']['output']['kernel'].shape[0]
  assert widths == {'concat': 128 + 64, 'concat_norm': 128 + 64, 'gated': 24, 'projected_sum': 24}


@pytest.mark.parametrize('task', list(REFERENCE))
def test_bfloat16_computes_in_bf16_with_float32_params(task):
  overrides = {'frame_shape': (16, 16, 3), 'num_frames': 3} if task == 'video' else {}
  config32 = reference_config(task, **overrides)
  config16 = reference_config(task, dtype='bfloat16', **overrides)
  batch = random_batch(config32, 4)
  variables = input_kinds.create_model(config32).init(jax.random.key(1), batch)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  out32 = input_kinds.create_model(config32).apply(variables, batch)
  out16 = input_kinds.create_model(config16).apply(variables, batch)
  assert out16.dtype == jnp.float32  # Heads return float32 for the loss.
  # The LSTM's matmuls inside its scan run in bfloat16 too.
  jaxpr = jax.make_jaxpr(input_kinds.create_model(config16).apply)(variables, batch).jaxpr
  scans = [e for e in jaxpr.eqns if e.primitive.name == 'scan']
  assert scans and all(
    any(
      e.primitive.name == 'dot_general' and e.invars[0].aval.dtype == jnp.bfloat16
      for e in scan.params['jaxpr'].jaxpr.eqns
    )
    for scan in scans
  )
  np.testing.assert_allclose(out16, out32, atol=0.1, rtol=0.1)
  assert not np.allclose(out16, out32, atol=1e-7, rtol=0)  # bf16 really was used.


def test_dropout_is_active_only_in_training():
  config = reference_config('sensor', dropout_rate=0.5)
  model = input_kinds.create_model(config)
  batch = random_batch(config, 8)
  variables = model.init(jax.random.key(0), batch)
  np.testing.assert_array_equal(model.apply(variables, batch), model.apply(variables, batch))
  a = model.apply(variables, batch, train=True, rngs={'dropout': jax.random.key(1)})
  b = model.apply(variables, batch, train=True, rngs={'dropout': jax.random.key(2)})
  assert not np.allclose(a, b)


@pytest.mark.parametrize(
  'field,value,message',
  [
    ('branches', 'all', 'config.model.branches'),
    ('fusion', 'attention', 'config.model.fusion'),
    ('dtype', 'float16', 'config.model.dtype'),
  ],
)
def test_unknown_switches_fail_with_one_line(field, value, message):
  config = reference_config('text', **{field: value})
  with pytest.raises(ValueError, match=message) as error:
    config_validation.validate(config)
  assert '\n' not in str(error.value)


def test_shape_mismatch_between_config_and_batch_says_what_to_set():
  config = reference_config('sensor')
  model = input_kinds.create_model(config)
  with pytest.raises(ValueError, match=r'--config.model.window_shape'):
    model.init(jax.random.key(0), {'window': np.zeros((2, 24, 3, 5), np.float32)})
  config = reference_config('video', num_frames=4)
  config.model.key_frame_index = 4
  with pytest.raises(ValueError, match='key_frame_index'):
    config_validation.validate(config)
