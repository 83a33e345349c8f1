"""The LSTM branch: the last valid hidden state of an LSTM read over time.

Parameter count equals Keras `LSTM(units)` and Flax `nn.LSTMCell`: 4·units·(input + units + 1).

Two implementations share one parameter tree (`input_kernel/{kernel, bias}`,
`cell/recurrent_kernel/kernel`), so checkpoints move freely between backends:
- 'scan': `jax.lax.scan` of the LSTM step (CPU, TPU); the input projection is computed for all
  steps at once or inside each step (`projection`, chosen by the input's width).
- 'cudnn': cuDNN's fused LSTM through `jax.experimental.rnn.lstm` (GPU), fed the same parameters
  packed into cuDNN's flat layout (`pack_cudnn_weights`).
'auto' picks 'cudnn' on a GPU backend and 'scan' elsewhere, and 'scan' inside `vmappable()`:
cuDNN's fused LSTM (jax.experimental.rnn's `rnn_fwd`) has no batching rule, so a step that
`jax.vmap` maps over models (a population's members) traces the scan. 'cudnn_reference' runs the
cuDNN packing through `jax.experimental.rnn.lstm_ref` (pure JAX, any backend): the CPU tests use it
to check the packing against the scan.
"""

import contextlib
import contextvars
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental import rnn

Array = jax.Array

IMPLEMENTATIONS = ('auto', 'scan', 'cudnn', 'cudnn_reference')


def _forget_bias_init(units: int):
  """Zero biases except the forget gate's, set to 1 (Keras `unit_forget_bias=True`)."""

  def init(key, shape, dtype=jnp.float32):
    del key
    return jnp.zeros(shape, dtype).at[units : 2 * units].set(1.0)

  return init


_VMAPPABLE = contextvars.ContextVar('hybrid_jax_lstm_vmappable', default=False)


@contextlib.contextmanager
def vmappable():
  """'auto' resolves to 'scan' while this is open (at trace time): for functions that jax.vmap
  maps over models, which cuDNN's fused LSTM cannot be (no batching rule). Same parameters."""
  token = _VMAPPABLE.set(True)
  try:
    yield
  finally:
    _VMAPPABLE.reset(token)


def resolve_implementation(implementation: str) -> str:
  """'auto' -> 'cudnn' on a GPU backend (outside `vmappable()`), else 'scan'; other names pass
  through after a check."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(
      f'Unknown LSTM implementation {implementation!r}: use one of {IMPLEMENTATIONS}.'
    )
  if implementation == 'auto':
    return 'cudnn' if jax.default_backend() == 'gpu' and not _VMAPPABLE.get() else 'scan'
  return implementation


PROJECTIONS = ('auto', 'hoisted', 'per_step')


def resolve_projection(projection: str, input_size: int, units: int) -> str:
  """'auto' -> 'per_step' on CPU when the input is no wider than the hidden state, else 'hoisted'.

  Hoisting the input projection out of the scan makes one big matmul forwards, but backwards XLA:CPU
  transposes the [time, batch, 4·units] gate gradients for one tall, thin kernel-gradient matmul;
  for narrow inputs (sensor channels) the per-step matmuls are faster, for wider ones (text
  embeddings, video frame features) the hoisted matmul is (measured:
  experiments/results/benchmark_train_step_reference.md). Off CPU (unmeasured) 'auto' keeps the
  hoisted matmul.
  """
  if projection not in PROJECTIONS:
    raise ValueError(f'Unknown LSTM input projection {projection!r}: use one of {PROJECTIONS}.')
  if projection == 'auto':
    narrow = input_size <= units and jax.default_backend() == 'cpu'
    return 'per_step' if narrow else 'hoisted'
  return projection


def scan_lstm(
  inputs_BTD: Array,
  lengths_B: Array | None,
  input_kernel_DG: Array,
  bias_G: Array,
  recurrent_kernel_UG: Array,
  dtype: Any = jnp.float32,
  per_step: bool = False,
) -> Array:
  """Last valid hidden state [batch, units] of an LSTM scanned over time (pure function).

  Gates are ordered (input, forget, cell, output). The matmuls run in `dtype`; the carry and the
  gate arithmetic stay float32. Steps at or past `lengths_B` leave the carry unchanged; with
  `lengths_B` None every step is valid and the scan skips that select.
  `per_step` computes the input projection inside the scan instead of for all steps at once.
  """
  batch, time = inputs_BTD.shape[:2]
  units = recurrent_kernel_UG.shape[0]
  x_TBD = jnp.swapaxes(inputs_BTD, 0, 1).astype(dtype)
  kernel_DG, b_G, recurrent_UG = (
    a.astype(dtype) for a in (input_kernel_DG, bias_G, recurrent_kernel_UG)
  )
  xs_TB_ = x_TBD if per_step else x_TBD @ kernel_DG + b_G
  valid_TB = None if lengths_B is None else jnp.arange(time)[:, None] < lengths_B[None, :]

  def step(carry, inputs):
    c_BU, h_BU = carry
    x_B_, valid_B = inputs
    input_gates_BG = x_B_ @ kernel_DG + b_G if per_step else x_B_
    gates_BG = input_gates_BG.astype(jnp.float32) + (h_BU.astype(dtype) @ recurrent_UG).astype(
      jnp.float32
    )
    i, f, g, o = jnp.split(gates_BG, 4, axis=-1)
    new_c_BU = jax.nn.sigmoid(f) * c_BU + jax.nn.sigmoid(i) * jnp.tanh(g)
    new_h_BU = jax.nn.sigmoid(o) * jnp.tanh(new_c_BU)
    if valid_B is None:
      return (new_c_BU, new_h_BU), None
    keep_B1 = valid_B[:, None]
    return (jnp.where(keep_B1, new_c_BU, c_BU), jnp.where(keep_B1, new_h_BU, h_BU)), None

  zeros_BU = jnp.zeros((batch, units), jnp.float32)
  (_, h_BU), _ = jax.lax.scan(step, (zeros_BU, zeros_BU), (xs_TB_, valid_TB))
  return h_BU


class _DenseParams(nn.Module):
  """Declares a Dense layer's parameters (same names, shapes and initialisers) without applying it."""

  shape: tuple[int, int]
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = None

  @nn.compact
  def __call__(self) -> tuple[Array, Array | None]:
    kernel = self.param('kernel', self.kernel_init, self.shape, jnp.float32)
    bias = None
    if self.bias_init is not None:
      bias = self.param('bias', self.bias_init, self.shape[-1:], jnp.float32)
    return kernel, bias


class _CellParams(nn.Module):
  """The recurrent kernel's parameter scope ('cell/recurrent_kernel/kernel')."""

  units: int

  @nn.compact
  def __call__(self) -> Array:
    kernel, _ = _DenseParams(
      (self.units, 4 * self.units), nn.initializers.orthogonal(), name='recurrent_kernel'
    )()
    return kernel


def pack_cudnn_weights(input_kernel_DG: Array, bias_G: Array, recurrent_kernel_UG: Array) -> Array:
  """This module's parameters in cuDNN's flat single-layer layout (W_ih, W_hh, b_ih, b_hh).

  W_ih = input_kernel.T [4·units, input], W_hh = recurrent_kernel.T [4·units, units],
  b_ih = bias, b_hh = 0; gates are ordered (input, forget, cell, output) in both.
  """
  return jnp.concatenate(
    [input_kernel_DG.T.ravel(), recurrent_kernel_UG.T.ravel(), bias_G, jnp.zeros_like(bias_G)]
  ).astype(jnp.float32)


def cudnn_lstm(
  inputs_BTD: Array, lengths_B: Array | None, weights: Array, units: int, reference: bool = False
) -> Array:
  """Last valid hidden state [batch, units] of `jax.experimental.rnn.lstm` (or `lstm_ref`).

  cuDNN runs float32 only and rejects zero-length sequences: inputs are cast to float32, lengths
  are clamped to [1, time] and the outputs of zero-length rows are set to zero afterwards.
  """
  batch, time, input_size = inputs_BTD.shape
  x_BTD = inputs_BTD.astype(jnp.float32)
  if lengths_B is None:
    lengths_B = jnp.full((batch,), time, jnp.int32)
  lengths_B = jnp.asarray(lengths_B, jnp.int32)
  seq_lengths_B = jnp.clip(lengths_B, 1, time)
  zeros_1BU = jnp.zeros((1, batch, units), jnp.float32)
  static = dict(
    input_size=input_size, hidden_size=units, num_layers=1, dropout=0.0, bidirectional=False
  )
  if reference:
    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(weights, input_size, units, 1, False)
    _, h_1BU, _ = rnn.lstm_ref(
      x_BTD, zeros_1BU, zeros_1BU, w_ih, w_hh, b_ih, b_hh, seq_lengths_B, **static
    )
  else:
    _, h_1BU, _ = rnn.lstm(x_BTD, zeros_1BU, zeros_1BU, weights, seq_lengths_B, **static)
  return jnp.where(lengths_B[:, None] > 0, h_1BU[0], 0.0)


class LSTM(nn.Module):
  """Reads [batch, time, features] and returns the last valid hidden state [batch, units].

  Attributes:
    units: hidden size.
    dtype: compute dtype of the matmuls (parameters stay float32). The carry and the gate arithmetic
      are float32 always; the cuDNN paths compute everything in float32 (cuDNN has no bfloat16 LSTM).
    implementation: one of `IMPLEMENTATIONS` (see the module docstring); 'auto' by backend.
    projection: the scan's input projection, one of `PROJECTIONS`; 'auto' by the input's width
      (`resolve_projection`). Same parameters and function either way.
  """

  units: int
  dtype: Any = jnp.float32
  implementation: str = 'auto'
  projection: str = 'auto'

  @nn.compact
  def __call__(self, inputs_BTD: Array, lengths_B: Array | None = None) -> Array:
    """`lengths_B[b]` valid steps of example b (None: all); a zero-length sequence gives zeros."""
    implementation = resolve_implementation(self.implementation)
    input_size = inputs_BTD.shape[-1]
    input_kernel_DG, bias_G = _DenseParams(
      (input_size, 4 * self.units), bias_init=_forget_bias_init(self.units), name='input_kernel'
    )()
    recurrent_kernel_UG = _CellParams(self.units, name='cell')()
    if implementation == 'scan':
      per_step = resolve_projection(self.projection, input_size, self.units) == 'per_step'
      return scan_lstm(
        inputs_BTD, lengths_B, input_kernel_DG, bias_G, recurrent_kernel_UG, self.dtype, per_step
      )
    weights = pack_cudnn_weights(input_kernel_DG, bias_G, recurrent_kernel_UG)
    return cudnn_lstm(
      inputs_BTD, lengths_B, weights, self.units, reference=implementation == 'cudnn_reference'
    )
