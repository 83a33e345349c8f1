"""The sensor model: multivariate series (time, *channels) read by a 1-D CNN and an LSTM."""

from typing import Mapping, Sequence

import flax.linen as nn
import jax

from hybrid_jax import errors
from hybrid_jax.models import conv, fusion, lstm

Array = jax.Array


class SensorModel(fusion.HybridModel):
  """Reshape to (time, channels) -> [SensorCNN, LSTM] -> fusion -> Dense head.

  The reference (regression) head is Dense(1); the classification head is Dense(num_outputs).
  Series shorter than the window are zero-padded at the end and carry their 'length': the CNN
  masks padded steps out of its convolutions and pooling, and the LSTM stops at the length, so
  padding never changes an example's output.

  Batch keys read:
    'window': float [batch, time, *channels] (e.g. [time, sensors, features]).
    'length': optional int [batch] valid steps per series (None: all steps are valid).
  Returns float32 [batch] (regression) or logits [batch, num_outputs].

  Attributes:
    window_shape: (time, *channels) of a window; with pooling='flatten' the time must match.
    pooling: 'flatten' (the reference: the CNN's last feature map is flattened, so the time
      length is fixed) or 'global_max' (max over valid steps: any length).
  """

  window_shape: Sequence[int] = (20, 4, 1)
  pooling: str = 'flatten'
  conv_features: Sequence[int] = (64,)
  lstm_units: int = 32

  @nn.compact
  def __call__(self, batch: Mapping[str, Array], *, train: bool = False) -> Array:
    window_BT_ = batch['window']
    lengths_B = batch.get('length')
    shape = tuple(window_BT_.shape[1:])
    expected = tuple(self.window_shape)
    if shape[1:] != expected[1:] or (self.pooling == 'flatten' and shape[0] != expected[0]):
      raise errors.ConfigError(
        f'Windows are {shape} but config.model.window_shape={expected}: set '
        '--config.model.window_shape to match the data.'
      )
    batch_size, time = window_BT_.shape[:2]
    series_BTC = window_BT_.reshape(batch_size, time, -1).astype(self.compute_dtype)
    features = []
    for name in self.copies('cnn'):
      features.append(
        conv.SensorCNN(
          self.conv_features, self.kernel_size, self.compute_dtype, pooling=self.pooling, name=name
        )(series_BTC, lengths_B)
      )
    for name in self.copies('lstm'):
      features.append(
        lstm.LSTM(self.lstm_units, self.compute_dtype, projection=self.lstm_projection, name=name)(
          series_BTC, lengths_B
        )
      )
    return fusion.FusionHead(**self.head_kwargs(), name='head')(features, train=train)
