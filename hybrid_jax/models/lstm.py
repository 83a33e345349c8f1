"""The LSTM branch: the last valid hidden state of an LSTM read over time.

Parameter count equals Keras `LSTM(units)` and Flax `nn.LSTMCell`: 4·units·(input + units + 1).

Two implementations share one parameter tree (`input_kernel/{kernel, bias}`,
`cell/recurrent_kernel/kernel`), so checkpoints move freely between backends:
- 'scan': the input projection for all steps at once, then a scan of the recurrent step (CPU, TPU).
- 'cudnn': cuDNN's fused LSTM through `jax.experimental.rnn.lstm` (GPU), fed the same parameters
  packed into cuDNN's flat layout (`pack_cudnn_weights`).
'auto' picks 'cudnn' on a GPU backend and 'scan' elsewhere. 'cudnn_reference' runs the cuDNN
packing through `jax.experimental.rnn.lstm_ref` (pure JAX, any backend): the CPU tests use it to
check the packing against the scan.
"""

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


def resolve_implementation(implementation: str) -> str:
  """'auto' -> 'cudnn' on a GPU backend, else 'scan'; other names pass through after a check."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(
      f'Unknown LSTM implementation {implementation!r}: use one of {IMPLEMENTATIONS}.'
    )
  if implementation == 'auto':
    return 'cudnn' if jax.default_backend() == 'gpu' else 'scan'
  return implementation


class LSTMCell(nn.Module):
  """One LSTM step on pre-computed input gates.

  The input-to-hidden product does not depend on the carry, so `LSTM` computes it for all time steps
  at once outside the scan; this cell adds the hidden-to-hidden product and updates the state.
  Steps where `valid_B` is False leave the carry unchanged (padding after a sequence's end); with
  `valid_B` None (every sequence full length) the step skips that select, ~8% of a sensor step.

  Attributes:
    units: hidden size.
    dtype: compute dtype of the recurrent matmul; the carry and the gate arithmetic stay float32.
  """

  units: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, carry: tuple[Array, Array], inputs: tuple[Array, Array | None]):
    """carry: (c [batch, units], h [batch, units]); inputs: (gates [batch, 4·units], valid [batch] or None)."""
    c_BU, h_BU = carry
    input_gates_BG, valid_B = inputs
    recurrent_BG = nn.Dense(
      4 * self.units,
      use_bias=False,
      dtype=self.dtype,
      kernel_init=nn.initializers.orthogonal(),
      name='recurrent_kernel',
    )(h_BU)
    gates_BG = input_gates_BG.astype(jnp.float32) + recurrent_BG.astype(jnp.float32)
    i, f, g, o = jnp.split(gates_BG, 4, axis=-1)
    new_c_BU = jax.nn.sigmoid(f) * c_BU + jax.nn.sigmoid(i) * jnp.tanh(g)
    new_h_BU = jax.nn.sigmoid(o) * jnp.tanh(new_c_BU)
    if valid_B is None:
      return (new_c_BU, new_h_BU), None
    keep_B1 = valid_B[:, None]
    c_BU = jnp.where(keep_B1, new_c_BU, c_BU)
    h_BU = jnp.where(keep_B1, new_h_BU, h_BU)
    return (c_BU, h_BU), None


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
  """The scan cell's parameter scope ('cell/recurrent_kernel/kernel'), for the packed paths."""

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
  """

  units: int
  dtype: Any = jnp.float32
  implementation: str = 'auto'

  @nn.compact
  def __call__(self, inputs_BTD: Array, lengths_B: Array | None = None) -> Array:
    """`lengths_B[b]` valid steps of example b (None: all); a zero-length sequence gives zeros."""
    implementation = resolve_implementation(self.implementation)
    if implementation != 'scan':
      input_kernel_DG, bias_G = _DenseParams(
        (inputs_BTD.shape[-1], 4 * self.units),
        bias_init=_forget_bias_init(self.units),
        name='input_kernel',
      )()
      recurrent_kernel_UG = _CellParams(self.units, name='cell')()
      weights = pack_cudnn_weights(input_kernel_DG, bias_G, recurrent_kernel_UG)
      return cudnn_lstm(
        inputs_BTD, lengths_B, weights, self.units, reference=implementation == 'cudnn_reference'
      )
    batch, time = inputs_BTD.shape[:2]
    input_gates_BTG = nn.Dense(
      4 * self.units, dtype=self.dtype, bias_init=_forget_bias_init(self.units), name='input_kernel'
    )(inputs_BTD)
    valid_BT = None if lengths_B is None else jnp.arange(time)[None, :] < lengths_B[:, None]
    scan_cell = nn.scan(
      LSTMCell,
      variable_broadcast='params',
      split_rngs={'params': False},
      in_axes=1,
      out_axes=1,
      length=time,
    )
    zeros_BU = jnp.zeros((batch, self.units), jnp.float32)
    (_, h_BU), _ = scan_cell(self.units, self.dtype, name='cell')(
      (zeros_BU, zeros_BU), (input_gates_BTG, valid_BT)
    )
    return h_BU
