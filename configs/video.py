"""Video: action/motion classification on clips (shipped dataset: moving_digits).

A 2-D frame CNN (Conv32-3x3 -> MaxPool2 -> Conv64-3x3 -> MaxPool2 -> Flatten) reads a key frame; the
same CNN (shared weights) reads every frame and an LSTM(64) reads those features; the concatenation
goes to a Dense softmax head.

  python -m hybrid_jax.main --config=configs/video.py
  python -m hybrid_jax.main --config=configs/video.py:smoke   # seconds-long run for tests and CI
"""

import ml_collections

from configs import common


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  config = common.get_config()
  config.task = 'video'
  config.dataset.name = 'moving_digits'

  config.model.frame_shape = (64, 64, 1)  # (height, width, channels) of a frame.
  config.model.num_frames = 10  # Frames per clip (the LSTM's sequence length).
  # Clip frame the CNN branch reads when no separate key frame is fed.
  config.model.key_frame_index = 0
  # Filters of the 3x3 conv layers, each followed by MaxPool2.
  config.model.conv_features = (32, 64)
  config.model.kernel_size = 3  # Conv kernel size (square).
  config.model.lstm_units = 64  # LSTM hidden size.
  # Classes of the softmax head (moving_digits: 10 digits x 2 senses of rotation).
  config.model.num_classes = 20
  # How the frame CNN is computed (the same values; speed and memory only, see
  # hybrid_jax/models/conv.py and video.py): 'pool_first' | 'conv_relu_pool', and
  # 'per_frame' | 'batched'.
  config.model.frame_cnn_formulation = 'pool_first'
  config.model.frame_cnn_batching = 'per_frame'

  # Run length and wall time: docs/training.md. Adam at a constant 1e-3.
  config.num_train_steps = 500
  config.eval_every_steps = 250
  config.checkpoint_every_steps = 250  # Save with every eval.
  return common.apply_variant(config, variant)
