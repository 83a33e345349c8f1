"""The sensor model: windows (time, sensors, features) read by a 1-D CNN and an LSTM."""

from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hybrid_jax.models import conv, fusion, lstm

Array = jax.Array


class SensorModel(fusion.HybridModel):
  """Reshape to (time, sensors·features) -> [SensorCNN, LSTM] -> fusion -> Dense(1).

  Batch keys read:
    'window': float [batch, time, sensors, features].
  Returns the regression output float32 [batch].
  """
  window_shape: Sequence[int] = (20, 4, 1)
  conv_features: Sequence[int] = (64,)
  lstm_units: int = 32

  @nn.compact
  def __call__(self, batch: Mapping[str, Array], *, train: bool = False) -> Array:
    window_BTSF = batch['window']
    if tuple(window_BTSF.shape[1:]) != tuple(self.window_shape):
      raise ValueError(
          f'Windows are {tuple(window_BTSF.shape[1:])} but config.model.window_shape='
          f'{tuple(self.window_shape)}: set --config.model.window_shape to match the data.')
    batch_size, time = window_BTSF.shape[:2]
    series_BTC = window_BTSF.reshape(batch_size, time, -1).astype(self.dtype)
    features = []
    for name in self.copies('cnn'):
      features.append(conv.SensorCNN(self.conv_features, self.kernel_size, self.dtype, name=name)(
          series_BTC))
    for name in self.copies('lstm'):
      features.append(lstm.LSTM(self.lstm_units, self.dtype, name=name)(series_BTC))
    return fusion.FusionHead(
        1, regression=True, **self.head_kwargs(), name='head')(features, train=train)
