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
  config.model.key_frame_index = (
    0  # Clip frame the CNN branch reads when no separate key frame is fed.
  )
  config.model.conv_features = (
    32,
    64,
  )  # Filters of the 3x3 conv layers, each followed by MaxPool2.
  config.model.kernel_size = 3  # Conv kernel size (square).
  config.model.lstm_units = 64  # LSTM hidden size.
  config.model.num_classes = (
    20  # Classes of the softmax head (moving_digits: 10 digits x 2 senses of rotation).
  )

  # Run length: ~6 min on an idle 2-core CPU (~1.5 steps/s at batch 32; see README results).
  config.num_train_steps = 500  # Constant lr 1e-3: a 300-step cosine decay ended far worse.
  config.eval_every_steps = 250  # An eval of the 2000 test clips takes 20-60 s on CPU.
  config.checkpoint_every_steps = 250  # Save with every eval.
  return common.apply_variant(config, variant)
