"""Hybrid CNN+LSTM models, built from a config.

  model = create_model(config)
  variables = model.init(jax.random.key(0), dummy_batch(config, 2))
  logits = model.apply(variables, batch, train=False)
"""

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np

from hybrid_jax import errors
from hybrid_jax.models.fusion import BRANCHES, FUSIONS, check_switches
from hybrid_jax.models.sensor import SensorModel
from hybrid_jax.models.text import TextModel
from hybrid_jax.models.video import VideoModel

TASKS = ('video', 'text', 'sensor')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def is_regression(config: ml_collections.ConfigDict) -> bool:
  """True for tasks whose head is a Dense(1) regression (trained with MSE)."""
  return config.task == 'sensor'


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
  """The task's model with the sizes and switches of `config.model`."""
  m = config.model
  check_switches(m.branches, m.fusion)
  if m.dtype not in DTYPES:
    raise errors.ConfigError(f'Unknown config.model.dtype={m.dtype!r}: use one of {tuple(DTYPES)}.')
  shared = dict(branches=m.branches, fusion=m.fusion, fusion_dim=m.fusion_dim,
                dropout_rate=m.dropout_rate, dtype=DTYPES[m.dtype],
                conv_features=tuple(m.conv_features), kernel_size=m.kernel_size,
                lstm_units=m.lstm_units)
  if config.task == 'video':
    if not -m.num_frames <= m.key_frame_index < m.num_frames:
      raise errors.ConfigError(f'config.model.key_frame_index={m.key_frame_index} is outside a clip of '
                               f'{m.num_frames} frames: use 0..{m.num_frames - 1} (or negative from the end).')
    return VideoModel(num_classes=m.num_classes, frame_shape=tuple(m.frame_shape),
                      key_frame_index=m.key_frame_index, **shared)
  if config.task == 'text':
    return TextModel(num_classes=m.num_classes, vocab_size=m.vocab_size, embed_dim=m.embed_dim,
                     **shared)
  if config.task == 'sensor':
    return SensorModel(window_shape=tuple(m.window_shape), **shared)
  raise errors.ConfigError(f'Unknown config.task={config.task!r}: use one of {TASKS}.')


def dummy_batch(config: ml_collections.ConfigDict, batch_size: int = 2) -> dict[str, np.ndarray]:
  """Zeros shaped like a batch of `config`'s task, for initialisation, shapes and summaries."""
  m = config.model
  if config.task == 'video':
    return {'clip': np.zeros((batch_size, m.num_frames, *m.frame_shape), np.uint8)}
  if config.task == 'text':
    return {'tokens': np.zeros((batch_size, m.max_length), np.int32),
            'length': np.full((batch_size,), m.max_length, np.int32)}
  if config.task == 'sensor':
    return {'window': np.zeros((batch_size, *m.window_shape), np.float32)}
  raise errors.ConfigError(f'Unknown config.task={config.task!r}: use one of {TASKS}.')
