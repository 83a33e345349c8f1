"""The branches: module shapes, LSTM numerics, padding invariance, shared video CNN, gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import sensor, text, video
from hybrid_jax import input_kinds
from hybrid_jax.models import fusion
from hybrid_jax.models.fusion import BRANCHES
from hybrid_jax.models import conv, lstm


def init_apply(module, *args):
  variables = module.init(jax.random.key(0), *args)
  return variables, module.apply(variables, *args)


@pytest.mark.parametrize(
  'module,input_shape,output_shape',
  [
    (conv.FrameCNN(), (2, 64, 64, 3), (2, 16 * 16 * 64)),
    (conv.FrameCNN((8,), kernel_size=5), (2, 10, 12, 1), (2, 5 * 6 * 8)),
    (conv.TextCNN(), (2, 50, 100), (2, 128)),
    (conv.TextCNN((16, 8, 4)), (2, 9, 5), (2, 4)),
    (conv.SensorCNN(), (2, 20, 4), (2, 10 * 64)),
    (conv.SensorCNN((8, 16)), (2, 24, 15), (2, 6 * 16)),
    (lstm.LSTM(64), (2, 7, 30), (2, 64)),
  ],
)
def test_branch_output_shapes(module, input_shape, output_shape):
  _, out = init_apply(module, jnp.ones(input_shape))
  assert out.shape == output_shape


@pytest.mark.parametrize(
  'kind,dim,width', [('concat', 8, 5 + 3), ('gated', 8, 8), ('projected_sum', 8, 8)]
)
def test_fusion_output_shapes(kind, dim, width):
  _, out = init_apply(fusion.Fusion(kind, dim), [jnp.ones((4, 5)), jnp.ones((4, 3))])
  assert out.shape == (4, width)
  _, single = init_apply(fusion.Fusion(kind, dim), [jnp.arange(10.0).reshape(2, 5)])
  np.testing.assert_array_equal(single, jnp.arange(10.0).reshape(2, 5))


def reference_lstm(params, x_BTD, units):
  """The textbook LSTM equations in NumPy, gates ordered (input, forget, cell, output)."""
  w_x = np.asarray(params['input_kernel']['kernel'])
  b = np.asarray(params['input_kernel']['bias'])
  w_h = np.asarray(params['cell']['recurrent_kernel']['kernel'])
  sigmoid = lambda z: 1 / (1 + np.exp(-z))
  h = c = np.zeros((x_BTD.shape[0], units))
  for t in range(x_BTD.shape[1]):
    i, f, g, o = np.split(x_BTD[:, t] @ w_x + b + h @ w_h, 4, axis=-1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(c)
  return h


def test_lstm_matches_textbook_equations_and_stops_at_length():
  units = 6
  x = np.random.default_rng(0).normal(size=(3, 9, 4)).astype(np.float32)
  module = lstm.LSTM(units)
  variables, h = init_apply(module, jnp.asarray(x))
  params = variables['params']
  assert sum(p.size for p in jax.tree.leaves(params)) == 4 * units * (4 + units + 1)
  np.testing.assert_allclose(params['input_kernel']['bias'][units : 2 * units], 1.0)  # Forget bias.
  np.testing.assert_allclose(h, reference_lstm(params, x, units), atol=1e-5)
  lengths = np.array([9, 4, 0])
  h_len = module.apply(variables, jnp.asarray(x), jnp.asarray(lengths))
  for b, length in enumerate(lengths):
    expected = reference_lstm(params, x[b : b + 1, :length], units)[0]
    np.testing.assert_allclose(h_len[b], expected, atol=1e-5)


def test_lstm_without_lengths_equals_full_lengths_values_and_gradients():
  # Without lengths the scan skips the per-step padding select: the same function, faster.
  x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 7, 3)).astype(np.float32))
  module = lstm.LSTM(5)
  params = module.init(jax.random.key(0), x)['params']

  def value_and_grads(lengths):
    loss = lambda p: jnp.sum(jnp.sin(module.apply({'params': p}, x, lengths)))  # noqa: E731
    return jax.value_and_grad(loss)(params)

  value_none, grads_none = value_and_grads(None)
  value_full, grads_full = value_and_grads(jnp.full((4,), 7))
  np.testing.assert_allclose(value_full, value_none, atol=1e-6)
  for g_full, g_none in zip(jax.tree.leaves(grads_full), jax.tree.leaves(grads_none)):
    np.testing.assert_allclose(g_full, g_none, atol=1e-6)
  value_short, _ = value_and_grads(jnp.array([7, 3, 7, 0]))  # The test can fail.
  assert not np.allclose(value_short, value_none, atol=1e-6)


@pytest.mark.parametrize('branches', BRANCHES)
def test_text_padding_never_changes_an_examples_output(branches):
  config = text.get_config()
  config.model.branches = branches
  model = input_kinds.create_model(config)
  rng = np.random.default_rng(0)
  params = model.init(jax.random.key(0), input_kinds.dummy_batch(config))
  for length in (1, 2, 7, 30):
    sentence = rng.integers(2, config.model.vocab_size, (1, length), dtype=np.int32)
    unpadded = {'tokens': sentence, 'length': np.array([length], np.int32)}
    padded = {'tokens': np.pad(sentence, ((0, 0), (0, 20))), 'length': np.array([length], np.int32)}
    junk = dict(padded, tokens=padded['tokens'].copy())  # Garbage after the end is ignored too.
    junk['tokens'][0, length:] = rng.integers(2, 500, 20)
    logits = [model.apply(params, b) for b in (unpadded, padded, junk)]
    np.testing.assert_allclose(logits[1], logits[0], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(logits[2], logits[0], atol=1e-5, rtol=1e-5)
  # The test can fail: without lengths, the padded sentence is a different input.
  no_lengths = model.apply(params, {'tokens': padded['tokens']})
  assert not np.allclose(no_lengths, logits[0], atol=1e-5)


def small_video_config(**overrides):
  config = video.get_config()
  config.model.update(frame_shape=(16, 16, 3), num_frames=4, **overrides)
  return config


def test_video_key_frame_and_lstm_frames_share_one_cnn():
  config = small_video_config(key_frame_index=2)
  model = input_kinds.create_model(config)
  clip = np.random.default_rng(0).integers(0, 256, (2, 4, 16, 16, 3), dtype=np.uint8)
  variables = model.init(jax.random.key(0), {'clip': clip})
  params = variables['params']
  assert [k for k in params if 'cnn' in k] == ['frame_cnn']  # One CNN parameter set, no copy.
  # Feeding the key frame separately runs the same CNN: identical logits.
  from_clip = model.apply(variables, {'clip': clip})
  separate = model.apply(variables, {'clip': clip, 'frame': clip[:, 2]})
  np.testing.assert_allclose(separate, from_clip, atol=1e-6)
  # Both branches train that one CNN: each alone sends gradient into it.
  for branches in ('cnn', 'lstm'):
    branch_model = input_kinds.create_model(small_video_config(branches=branches))
    branch_params = branch_model.init(jax.random.key(0), {'clip': clip})
    grads = jax.grad(lambda p: branch_model.apply(p, {'clip': clip}).sum())(branch_params)
    kernel_grad = grads['params']['frame_cnn']['conv_0']['kernel']
    assert float(jnp.abs(kernel_grad).sum()) > 0


def test_video_key_frame_index_selects_the_frame():
  clip = np.random.default_rng(1).integers(0, 256, (2, 4, 16, 16, 3), dtype=np.uint8)
  outs = []
  for index in (0, 3):
    model = input_kinds.create_model(small_video_config(branches='cnn', key_frame_index=index))
    params = model.init(jax.random.key(0), {'clip': clip})
    outs.append(model.apply(params, {'clip': clip}))
    np.testing.assert_allclose(
      outs[-1], model.apply(params, {'clip': clip, 'frame': clip[:, index]}), atol=1e-6
    )
  assert not np.allclose(outs[0], outs[1])


def loss_fn(model, params, batch, regression):
  out = model.apply(params, batch)
  if regression:
    return jnp.mean((out - batch['target']) ** 2)
  return optax.softmax_cross_entropy_with_integer_labels(out, batch['label']).mean()


@pytest.mark.parametrize(
  'config_module,variant', [(m, v) for m in (video, text, sensor) for v in ('', 'smoke')]
)
def test_shipped_configs_jit_with_finite_gradients(config_module, variant):
  config = config_module.get_config(variant)
  model = input_kinds.create_model(config)
  batch = input_kinds.dummy_batch(config, batch_size=2)
  rng = np.random.default_rng(0)
  for key, value in batch.items():
    if key == 'tokens':
      batch[key] = rng.integers(0, config.model.vocab_size, value.shape, dtype=np.int32)
    elif key != 'length':
      batch[key] = (rng.random(value.shape) * (255 if value.dtype == np.uint8 else 1)).astype(
        value.dtype
      )
  regression = input_kinds.is_regression(config)
  if regression:
    batch['target'] = np.array([0.5, -1.0], np.float32)
  else:
    batch['label'] = np.array([0, 1], np.int32)
  params = model.init(jax.random.key(0), batch)
  out = jax.jit(model.apply)(params, batch)
  assert out.shape == ((2,) if regression else (2, config.model.num_classes))
  loss, grads = jax.jit(jax.value_and_grad(lambda p: loss_fn(model, p, batch, regression)))(params)
  leaves = jax.tree.leaves(grads)
  assert np.isfinite(float(loss))
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0


@pytest.mark.parametrize(
  'shape,spatial_dims,keep_odd',
  [
    ((2, 8, 6, 3), 2, False),
    ((2, 7, 5, 3), 2, False),
    ((3, 9, 4), 1, False),
    ((3, 9, 4), 1, True),
    ((3, 10, 4), 1, True),
  ],
)
def test_max_pool2_equals_flax_max_pool(shape, spatial_dims, keep_odd):
  x = jax.random.normal(jax.random.key(0), shape)
  window = (2,) * spatial_dims
  expected = nn.max_pool(x, window, strides=window, padding='SAME' if keep_odd else 'VALID')
  np.testing.assert_array_equal(conv.max_pool2(x, spatial_dims, keep_odd), expected)
