"""The LSTM branch: an LSTM cell scanned over time, returning the last valid hidden state.

Parameter count equals Keras `LSTM(units)` and Flax `nn.LSTMCell`: 4·units·(input + units + 1).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def _forget_bias_init(units: int):
  """Zero biases except the forget gate's, set to 1 (Keras `unit_forget_bias=True`)."""

  def init(key, shape, dtype=jnp.float32):
    del key
    return jnp.zeros(shape, dtype).at[units:2 * units].set(1.0)

  return init


class LSTMCell(nn.Module):
  """One LSTM step on pre-computed input gates.

  The input-to-hidden product does not depend on the carry, so `LSTM` computes it for all time steps
  at once outside the scan; this cell adds the hidden-to-hidden product and updates the state.
  Steps where `valid_B` is False leave the carry unchanged (padding after a sequence's end).

  Attributes:
    units: hidden size.
    dtype: compute dtype of the recurrent matmul; the carry and the gate arithmetic stay float32.
  """
  units: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, carry: tuple[Array, Array], inputs: tuple[Array, Array]):
    """carry: (c [batch, units], h [batch, units]); inputs: (input gates [batch, 4·units], valid [batch])."""
    c_BU, h_BU = carry
    input_gates_BG, valid_B = inputs
    recurrent_BG = nn.Dense(
        4 * self.units, use_bias=False, dtype=self.dtype,
        kernel_init=nn.initializers.orthogonal(), name='recurrent_kernel')(h_BU)
    gates_BG = input_gates_BG.astype(jnp.float32) + recurrent_BG.astype(jnp.float32)
    i, f, g, o = jnp.split(gates_BG, 4, axis=-1)
    new_c_BU = jax.nn.sigmoid(f) * c_BU + jax.nn.sigmoid(i) * jnp.tanh(g)
    new_h_BU = jax.nn.sigmoid(o) * jnp.tanh(new_c_BU)
    keep_B1 = valid_B[:, None]
    c_BU = jnp.where(keep_B1, new_c_BU, c_BU)
    h_BU = jnp.where(keep_B1, new_h_BU, h_BU)
    return (c_BU, h_BU), None


class LSTM(nn.Module):
  """Reads [batch, time, features] and returns the last valid hidden state [batch, units].

  Attributes:
    units: hidden size.
    dtype: compute dtype of the matmuls (parameters stay float32).
  """
  units: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs_BTD: Array, lengths_B: Array | None = None) -> Array:
    """`lengths_B[b]` valid steps of example b (None: all); a zero-length sequence gives zeros."""
    batch, time = inputs_BTD.shape[:2]
    input_gates_BTG = nn.Dense(
        4 * self.units, dtype=self.dtype, bias_init=_forget_bias_init(self.units),
        name='input_kernel')(inputs_BTD)
    if lengths_B is None:
      valid_BT = jnp.ones((batch, time), bool)
    else:
      valid_BT = jnp.arange(time)[None, :] < lengths_B[:, None]
    scan_cell = nn.scan(
        LSTMCell, variable_broadcast='params', split_rngs={'params': False},
        in_axes=1, out_axes=1, length=time)
    zeros_BU = jnp.zeros((batch, self.units), jnp.float32)
    (_, h_BU), _ = scan_cell(self.units, self.dtype, name='cell')(
        (zeros_BU, zeros_BU), (input_gates_BTG, valid_BT))
    return h_BU
