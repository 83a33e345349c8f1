"""The video model: a shared frame CNN for the key frame and, per frame, for an LSTM."""

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hybrid_jax import errors
from hybrid_jax.models import conv, fusion, lstm

Array = jax.Array

# 'batched': one CNN call on all batch·time frames; 'per_frame': one call per time step (a Python
# loop, so XLA can free each step's activations sooner: less peak memory at large batches).
FRAME_CNN_BATCHINGS = ('batched', 'per_frame')


class VideoModel(fusion.HybridModel):
  """[CNN(key frame), LSTM(CNN(frame_t) for t in clip)] -> fusion -> Dense softmax logits.

  The frame CNN is one module with one set of parameters, called on the key frame and on every
  frame of the clip (the reference's TimeDistributed wrapper of the same CNN). When the key frame is
  a clip frame, its features are taken from the per-frame pass rather than computed twice.

  Batch keys read:
    'clip': [batch, time, height, width, channels], uint8 (scaled by 1/255) or float.
    'frame': optional [batch, height, width, channels] key frame; else clip[:, key_frame_index].
    'length': optional [batch] valid frames per clip (the LSTM stops there).
  Returns logits float32 [batch, num_outputs] (or [batch] with `regression`).
  """

  frame_shape: Sequence[int] = (64, 64, 3)
  # Frames per clip (the LSTM's sequence length; clips of other lengths are resampled to it).
  num_frames: int = 10
  # Clip frame the CNN branch reads when no separate key frame is fed (negative: from the end).
  key_frame_index: int = 0
  conv_features: Sequence[int] = (32, 64)
  # How the frame CNN is computed; every choice gives the same values (speed and memory only):
  # one of conv.FRAME_CNN_FORMULATIONS, and one of FRAME_CNN_BATCHINGS.
  frame_cnn_formulation: str = 'pool_first'
  frame_cnn_batching: str = 'per_frame'

  @nn.compact
  def __call__(self, batch: Mapping[str, Array], *, train: bool = False) -> Array:
    clip_BTHWC = _as_float(batch['clip'], self.compute_dtype)
    batch_size, time = clip_BTHWC.shape[:2]
    if tuple(clip_BTHWC.shape[2:]) != tuple(self.frame_shape):
      raise errors.ConfigError(
        f'Clip frames are {tuple(clip_BTHWC.shape[2:])} but config.model.frame_shape='
        f'{tuple(self.frame_shape)}: set --config.model.frame_shape to match the data.'
      )
    frame_cnn = conv.FrameCNN(
      self.conv_features,
      self.kernel_size,
      self.compute_dtype,
      self.frame_cnn_formulation,
      name='frame_cnn',
    )
    features = []
    frame_features_BTF = None
    if self.uses('lstm'):
      if self.frame_cnn_batching == 'per_frame':
        frame_features_BTF = jnp.stack([frame_cnn(clip_BTHWC[:, t]) for t in range(time)], axis=1)
      elif self.frame_cnn_batching == 'batched':
        frame_features_BTF = frame_cnn(
          clip_BTHWC.reshape(batch_size * time, *clip_BTHWC.shape[2:])
        ).reshape(batch_size, time, -1)
      else:
        raise ValueError(
          f'Unknown frame_cnn_batching {self.frame_cnn_batching!r}: use one of '
          f'{FRAME_CNN_BATCHINGS}.'
        )
    if self.uses('cnn'):
      if 'frame' in batch:
        features.append(frame_cnn(_as_float(batch['frame'], self.compute_dtype)))
      elif frame_features_BTF is not None:
        features.append(frame_features_BTF[:, self.key_frame_index])
      else:
        features.append(frame_cnn(clip_BTHWC[:, self.key_frame_index]))
    # 'cnn+cnn': a second frame CNN of its own, on the key frame.
    for name in self.copies('cnn')[1:]:
      key_frame = batch['frame'] if 'frame' in batch else clip_BTHWC[:, self.key_frame_index]
      features.append(
        conv.FrameCNN(self.conv_features, self.kernel_size, self.compute_dtype, name=name)(
          _as_float(key_frame, self.compute_dtype)
        )
      )
    for name in self.copies('lstm'):  # 'lstm+lstm': two LSTMs over the one shared per-frame CNN.
      features.append(
        lstm.LSTM(self.lstm_units, self.compute_dtype, projection=self.lstm_projection, name=name)(
          frame_features_BTF, batch.get('length')
        )
      )
    return fusion.FusionHead(**self.head_kwargs(), name='head')(features, train=train)


def _as_float(images: Array, dtype: Any) -> Array:
  """uint8 pixels -> [0, 1] in `dtype`; float input is only cast."""
  if images.dtype == jnp.uint8:
    return images.astype(dtype) / 255.0
  return images.astype(dtype)
