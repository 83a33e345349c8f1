"""Fast paths are the same model: cuDNN LSTM packing and the video frame CNN formulations."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn

from configs import video
from hybrid_jax import input_kinds
from hybrid_jax.models import conv, lstm

UNITS = 7


def lstm_inputs(batch=5, time=6, features=4, seed=0):
  x = np.random.default_rng(seed).normal(size=(batch, time, features)).astype(np.float32)
  # Full, partial, empty, 1, past end.
  lengths = np.array([time, 3, 0, 1, time + 2][:batch], np.int32)
  return jnp.asarray(x), jnp.asarray(lengths)


def test_auto_picks_the_scan_off_gpu():
  assert jax.default_backend() != 'gpu'
  assert lstm.resolve_implementation('auto') == 'scan'
  with pytest.raises(ValueError, match='implementation'):
    lstm.resolve_implementation('cudnnn')


def test_auto_picks_the_scan_where_models_are_vmapped(monkeypatch):
  # cuDNN's fused LSTM has no batching rule: a population's vmapped step must trace the scan.
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert lstm.resolve_implementation('auto') == 'cudnn'
  with lstm.vmappable():
    assert lstm.resolve_implementation('auto') == 'scan'
    assert lstm.resolve_implementation('cudnn') == 'cudnn'
  assert lstm.resolve_implementation('auto') == 'cudnn'


def test_every_implementation_declares_the_same_parameters():
  x, lengths = lstm_inputs()
  trees = [
    lstm.LSTM(UNITS, implementation=i).init(jax.random.key(3), x, lengths)
    for i in ('scan', 'cudnn_reference')
  ]
  assert jax.tree.structure(trees[0]) == jax.tree.structure(trees[1])
  for a, b in zip(jax.tree.leaves(trees[0]), jax.tree.leaves(trees[1])):
    np.testing.assert_array_equal(a, b)  # Same names, shapes and initial values.


def test_packing_is_cudnns_layout():
  x, _ = lstm_inputs()
  params = lstm.LSTM(UNITS).init(jax.random.key(0), x)['params']
  kernel, bias = params['input_kernel']['kernel'], params['input_kernel']['bias']
  recurrent = params['cell']['recurrent_kernel']['kernel']
  weights = lstm.pack_cudnn_weights(kernel, bias, recurrent)
  assert weights.shape == (rnn.get_num_params_in_lstm(x.shape[-1], UNITS, 1, False),)
  w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(weights, x.shape[-1], UNITS, 1, False)
  np.testing.assert_array_equal(w_ih[0], kernel.T)
  np.testing.assert_array_equal(w_hh[0], recurrent.T)
  np.testing.assert_array_equal(b_ih[0], bias)
  np.testing.assert_array_equal(b_hh[0], np.zeros_like(bias))


def test_auto_projection_is_per_step_only_for_narrow_inputs_on_cpu():
  assert lstm.resolve_projection('auto', UNITS, UNITS) == 'per_step'
  assert lstm.resolve_projection('auto', UNITS + 1, UNITS) == 'hoisted'
  assert lstm.resolve_projection('hoisted', 1, UNITS) == 'hoisted'
  with pytest.raises(ValueError, match='projection'):
    lstm.resolve_projection('per-step', 1, UNITS)


@pytest.mark.parametrize('projection', ['hoisted', 'per_step'])
def test_packed_lstm_ref_equals_the_scan_values_and_gradients(projection):
  # Both scan projections against jax.experimental.rnn.lstm_ref, an independent implementation.
  x, lengths = lstm_inputs()
  scan = lstm.LSTM(UNITS, implementation='scan', projection=projection)
  packed = lstm.LSTM(UNITS, implementation='cudnn_reference')
  variables = scan.init(jax.random.key(0), x, lengths)
  # Non-zero biases so a mis-packed bias or gate order cannot hide behind zeros.
  variables = jax.tree.map(
    lambda p: p + 0.1 * jax.random.normal(jax.random.key(1), p.shape), variables
  )
  for lens in (None, lengths):
    out_scan = scan.apply(variables, x, lens)
    out_packed = packed.apply(variables, x, lens)
    np.testing.assert_allclose(out_packed, out_scan, atol=1e-6, rtol=1e-5)
  np.testing.assert_array_equal(out_packed[2], np.zeros(UNITS))  # Length 0: zeros, as the scan.

  def loss(module, variables, x):
    h = module.apply(variables, x, lengths)
    return jnp.sum(h * jnp.arange(1, UNITS + 1)) + jnp.sum(h**2)

  grads_scan = jax.grad(lambda v, x: loss(scan, v, x), argnums=(0, 1))(variables, x)
  grads_packed = jax.grad(lambda v, x: loss(packed, v, x), argnums=(0, 1))(variables, x)
  for a, b in zip(jax.tree.leaves(grads_packed), jax.tree.leaves(grads_scan)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
  # The test can fail: a wrong gate order (output and cell swapped) changes the result.
  params = variables['params']
  swapped = rnn.swap_lstm_gates(
    lstm.pack_cudnn_weights(
      params['input_kernel']['kernel'],
      params['input_kernel']['bias'],
      params['cell']['recurrent_kernel']['kernel'],
    ),
    x.shape[-1],
    UNITS,
    1,
    False,
  )
  wrong = lstm.cudnn_lstm(x, lengths, swapped, UNITS, reference=True)
  assert not np.allclose(wrong, out_scan, atol=1e-3)


def test_packed_path_keeps_float32_under_bfloat16_compute():
  x, lengths = lstm_inputs()
  variables = lstm.LSTM(UNITS).init(jax.random.key(0), x, lengths)
  f32 = lstm.LSTM(UNITS, implementation='scan').apply(variables, x, lengths)
  for implementation in ('scan', 'cudnn_reference'):
    out = lstm.LSTM(UNITS, jnp.bfloat16, implementation).apply(
      variables, x.astype(jnp.bfloat16), lengths
    )
    assert out.dtype == jnp.float32  # The carry is float32 whatever the compute dtype.
    np.testing.assert_allclose(out, f32, atol=3e-2)
  # The cuDNN paths compute the LSTM itself in float32: only the bfloat16 inputs differ.
  packed = lstm.LSTM(UNITS, jnp.bfloat16, 'cudnn_reference').apply(
    variables, x.astype(jnp.bfloat16), lengths
  )
  exact = lstm.LSTM(UNITS, implementation='scan').apply(
    variables, x.astype(jnp.bfloat16).astype(jnp.float32), lengths
  )
  np.testing.assert_allclose(packed, exact, atol=1e-6, rtol=1e-5)


def perturbed(variables, scale=0.1):
  """Parameters moved off their initial values (non-zero biases), the same for every formulation."""
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(7), len(leaves))
  return jax.tree.unflatten(
    tree, [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
  )


@pytest.mark.parametrize(
  'features,kernel_size,shape',
  [((32, 64), 3, (3, 16, 16, 3)), ((8,), 5, (2, 7, 9, 2)), ((4, 6), 3, (2, 10, 6, 1))],
)
def test_frame_cnn_formulations_are_the_same_function(features, kernel_size, shape):
  x = jax.random.normal(jax.random.key(0), shape)
  modules = {
    f: conv.FrameCNN(features, kernel_size, formulation=f) for f in conv.FRAME_CNN_FORMULATIONS
  }
  inits = {f: m.init(jax.random.key(1), x) for f, m in modules.items()}
  reference = inits['conv_relu_pool']
  for f in modules:  # Same parameter names, shapes and initial values.
    assert jax.tree.structure(inits[f]) == jax.tree.structure(reference)
    for a, b in zip(jax.tree.leaves(inits[f]), jax.tree.leaves(reference)):
      np.testing.assert_array_equal(a, b)
  variables = perturbed(reference)
  expected = modules['conv_relu_pool'].apply(variables, x)
  loss = lambda f, v, x: jnp.sum(modules[f].apply(v, x) ** 2)
  expected_grads = jax.grad(functools.partial(loss, 'conv_relu_pool'), argnums=(0, 1))(variables, x)
  for f in modules:
    np.testing.assert_allclose(modules[f].apply(variables, x), expected, atol=1e-6, rtol=1e-6)
    grads = jax.grad(functools.partial(loss, f), argnums=(0, 1))(variables, x)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads)):
      np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
  with pytest.raises(ValueError, match='formulation'):
    conv.FrameCNN(formulation='patches').init(jax.random.key(0), x)


def test_video_model_formulations_agree_and_keep_the_reference_parameter_count():
  config = video.get_config()
  config.model.update(frame_shape=(64, 64, 3), num_classes=10, num_frames=2)
  model = input_kinds.create_model(config)
  clip = np.random.default_rng(0).integers(0, 256, (2, 2, 64, 64, 3), dtype=np.uint8)
  batch = {'clip': clip, 'length': np.array([2, 1], np.int32)}
  variables = model.init(jax.random.key(0), batch)
  assert sum(p.size for p in jax.tree.leaves(variables)) == 4_394_826
  variables = perturbed(variables, 0.02)
  outs, grads = [], []
  for formulation, batching in [
    ('conv_relu_pool', 'batched'),
    ('pool_first', 'batched'),
    ('pool_first', 'per_frame'),
  ]:
    m = model.clone(frame_cnn_formulation=formulation, frame_cnn_batching=batching)
    outs.append(m.apply(variables, batch))
    grads.append(
      jax.grad(lambda v: jnp.sum(jax.nn.log_softmax(m.apply(v, batch))[:, 0]))(variables)
    )
  for out, grad in zip(outs[1:], grads[1:]):
    np.testing.assert_allclose(out, outs[0], atol=1e-5, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(grads[0])):
      np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
