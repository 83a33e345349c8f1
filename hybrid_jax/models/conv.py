"""The convolutional branches: a 2-D frame CNN and two 1-D sequence CNNs (text, sensor).

All convolutions use 'SAME' padding and ReLU, as the reference Keras models.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


class ConvPoolFlatten(nn.Module):
  """[batch, *spatial, channels] -> [batch, features]: (Conv -> ReLU -> MaxPool2)* -> Flatten.

  `spatial_dims` is 2 for images, 1 for sequences; kernels and pools span every spatial axis.
  """

  conv_features: Sequence[int] = (64,)
  kernel_size: int = 3
  dtype: Any = jnp.float32
  spatial_dims: int = 1

  @nn.compact
  def __call__(self, x: Array) -> Array:
    for i, features in enumerate(self.conv_features):
      x = nn.Conv(
        features,
        (self.kernel_size,) * self.spatial_dims,
        padding='SAME',
        dtype=self.dtype,
        name=f'conv_{i}',
      )(x)
      x = max_pool2(nn.relu(x), self.spatial_dims)
    return x.reshape(x.shape[0], -1)


FRAME_CNN_FORMULATIONS = ('pool_first', 'conv_relu_pool')


class FrameCNN(nn.Module):
  """[batch, height, width, channels] -> [batch, features].

  Defaults reproduce the reference: Conv32-3x3 -> MaxPool2 -> Conv64-3x3 -> MaxPool2 -> Flatten
  (each convolution with bias and ReLU; parameters `conv_{i}/{kernel, bias}` as `nn.Conv`'s).

  `formulation` picks how the same function is computed:
  - 'pool_first' (default): convolution without bias -> MaxPool2 -> bias -> ReLU. Max-pooling
    commutes with adding a per-channel bias and with ReLU (both are monotone, rounding included), so
    the values are identical, while the bias, the ReLU and their gradients touch a 4x smaller tensor
    and the backward pass keeps fewer full-resolution activations (less time and memory on CPU).
  - 'conv_relu_pool': the literal order, `nn.Conv` -> ReLU -> MaxPool2 (the equality tests' reference).
  """

  conv_features: Sequence[int] = (32, 64)
  kernel_size: int = 3
  dtype: Any = jnp.float32
  formulation: str = 'pool_first'

  @nn.compact
  def __call__(self, x: Array) -> Array:
    if self.formulation not in FRAME_CNN_FORMULATIONS:
      raise ValueError(
        f'Unknown FrameCNN formulation {self.formulation!r}: use one of {FRAME_CNN_FORMULATIONS}.'
      )
    window = (self.kernel_size, self.kernel_size)
    for i, features in enumerate(self.conv_features):
      if self.formulation == 'conv_relu_pool':
        x = nn.Conv(features, window, padding='SAME', dtype=self.dtype, name=f'conv_{i}')(x)
        x = max_pool2(nn.relu(x), 2)
        continue
      kernel, bias = _ConvParams(window + (x.shape[-1], features), name=f'conv_{i}')()
      x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
      x = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
      )
      x = nn.relu(max_pool2(x, 2) + bias)
    return x.reshape(x.shape[0], -1)


class _ConvParams(nn.Module):
  """Declares `nn.Conv`'s parameters (names, shapes, initialisers) without applying the layer."""

  kernel_shape: Sequence[int]

  @nn.compact
  def __call__(self) -> tuple[Array, Array]:
    kernel = self.param(
      'kernel', nn.initializers.lecun_normal(), tuple(self.kernel_shape), jnp.float32
    )
    bias = self.param('bias', nn.initializers.zeros_init(), (self.kernel_shape[-1],), jnp.float32)
    return kernel, bias


# How SensorCNN turns its last feature map into a vector (see its docstring).
SENSOR_POOLINGS = ('flatten', 'global_max')


class SensorCNN(nn.Module):
  """[batch, time, channels] (+ lengths [batch]) -> [batch, features].

  Defaults reproduce the reference: Conv1D64-k3 -> MaxPool2 -> Flatten. Steps at or past
  `lengths_B` are zeroed before every convolution and after it (so a 'SAME' convolution sees the
  same zeros at a series' end whether padding follows or not), as in `TextCNN`.

  Attributes:
    pooling: 'flatten' (the reference: Keras 'valid' pooling, output size fixed by the time
      length) or 'global_max' (pooling keeps a trailing odd step, then a max over the valid steps:
      the output does not depend on how much padding follows a series).
  """

  conv_features: Sequence[int] = (64,)
  kernel_size: int = 3
  dtype: Any = jnp.float32
  pooling: str = 'flatten'

  @nn.compact
  def __call__(self, series_BTC: Array, lengths_B: Array | None = None) -> Array:
    if self.pooling not in SENSOR_POOLINGS:
      raise ValueError(f'Unknown pooling {self.pooling!r}: use one of {SENSOR_POOLINGS}.')
    keep_odd = self.pooling == 'global_max'
    x = series_BTC
    for i, features in enumerate(self.conv_features):
      if lengths_B is not None:
        x = jnp.where(_valid_mask(lengths_B, x.shape[1]), x, 0)
      x = nn.relu(
        nn.Conv(features, (self.kernel_size,), padding='SAME', dtype=self.dtype, name=f'conv_{i}')(
          x
        )
      )
      if lengths_B is not None:  # ReLU outputs are >= 0: zeros never win the pooling max.
        x = jnp.where(_valid_mask(lengths_B, x.shape[1]), x, 0)
        lengths_B = (lengths_B + 1) // 2 if keep_odd else lengths_B // 2
      x = max_pool2(x, 1, keep_odd=keep_odd)
    if self.pooling == 'flatten':
      if lengths_B is not None:
        x = jnp.where(_valid_mask(lengths_B, x.shape[1]), x, 0)
      return x.reshape(x.shape[0], -1)
    if lengths_B is None:
      return jnp.max(x, axis=1)
    pooled_BF = jnp.max(jnp.where(_valid_mask(lengths_B, x.shape[1]), x, -jnp.inf), axis=1)
    return jnp.where(lengths_B[:, None] > 0, pooled_BF, 0).astype(x.dtype)


class TextCNN(nn.Module):
  """[batch, length, embed] -> [batch, features]: Conv1D -> MaxPool2 -> ... -> Conv1D -> GlobalMaxPool.

  Defaults reproduce the reference: Conv1D128-k3 -> MaxPool2 -> Conv1D128-k3 -> GlobalMaxPool.
  Padding is invisible: positions at or past `lengths_B` are zeroed before every convolution (so a
  'SAME' convolution sees the same zeros at a sequence's end whether padding follows or not) and left
  out of the global max. Pooling keeps a trailing odd position (ceil(length / 2) outputs), so a
  sequence's last token is never dropped; for even padded lengths (the reference's 50) the output
  size equals Keras's 'valid' pooling.
  """

  conv_features: Sequence[int] = (128, 128)
  kernel_size: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, embedded_BLD: Array, lengths_B: Array | None = None) -> Array:
    batch, length = embedded_BLD.shape[:2]
    if lengths_B is None:
      lengths_B = jnp.full((batch,), length, jnp.int32)
    valid_BL1 = _valid_mask(lengths_B, length)
    x = jnp.where(valid_BL1, embedded_BLD, 0)
    for i, features in enumerate(self.conv_features):
      # Invalid positions hold zeros here, and ReLU outputs are >= 0: the max ignores them.
      if i > 0:
        x = max_pool2(x, 1, keep_odd=True)
        lengths_B = (lengths_B + 1) // 2
        valid_BL1 = _valid_mask(lengths_B, x.shape[1])
      x = nn.relu(
        nn.Conv(features, (self.kernel_size,), padding='SAME', dtype=self.dtype, name=f'conv_{i}')(
          x
        )
      )
      x = jnp.where(valid_BL1, x, 0)
    pooled_BF = jnp.max(jnp.where(valid_BL1, x, -jnp.inf), axis=1)
    return jnp.where(lengths_B[:, None] > 0, pooled_BF, 0).astype(x.dtype)


def max_pool2(x: Array, spatial_dims: int, keep_odd: bool = False) -> Array:
  """Max over non-overlapping windows of 2 on each spatial axis of [batch, *spatial, channels].

  An odd trailing position is dropped (Keras 'valid') or, with `keep_odd`, pooled alone ('SAME').
  Written as reshape + max, whose gradient is several times faster on CPU than the
  select-and-scatter of `nn.max_pool`; the values are identical.
  """
  spatial = x.shape[1 : 1 + spatial_dims]
  if keep_odd:
    pads = [(0, 0)] + [(0, n % 2) for n in spatial] + [(0, 0)]
    x = jnp.pad(x, pads, constant_values=-jnp.inf)
  else:
    x = x[(slice(None),) + tuple(slice(0, n - n % 2) for n in spatial)]
  pooled_shape = [x.shape[0]]
  for n in x.shape[1 : 1 + spatial_dims]:
    pooled_shape += [n // 2, 2]
  x = x.reshape(*pooled_shape, x.shape[-1])
  return x.max(axis=tuple(range(2, 2 + 2 * spatial_dims, 2)))


def _valid_mask(lengths_B: Array, length: int) -> Array:
  """[batch, length, 1] booleans: True where the position is before the example's length."""
  return (jnp.arange(length)[None, :] < lengths_B[:, None])[..., None]
