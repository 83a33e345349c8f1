"""Sensor classification on variable-length series (shipped dataset: japanese_vowels, 9 speakers).

The sensor model (Conv1D64-k3 -> MaxPool2 and an LSTM(32) reading the same 12-channel series) with
a softmax head: the data's ClassLabel 'label' picks the classification head. Series of 7-29 frames
are zero-padded to 29 and carry their length; the CNN masks padded frames and ends in a global max
over the valid frames (instead of the reference's Flatten), the LSTM stops at each series' end.

  python -m hybrid_jax.main --config=configs/japanese_vowels.py
  python -m hybrid_jax.main --config=configs/japanese_vowels.py --mode=eval --checkpoint=best --split=test
"""

import ml_collections
from ml_collections import config_dict

from configs import common
from configs import sensor


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  config = sensor.get_config()
  config.dataset.name = 'japanese_vowels'
  # (29, 12) from the data: longest series x 12 coefficients.
  config.model.window_shape = config_dict.placeholder(tuple)
  config.model.num_classes = None  # 9 speakers, from the data.
  config.model.pooling = 'global_max'  # Any series length; padded frames never count.

  config.batch_size = 16  # 216 train series: 13 batches per epoch.
  config.num_train_steps = 600  # ~44 epochs; validation accuracy plateaus after ~300 steps.
  config.eval_every_steps = 50  # 54 validation series: an eval takes well under a second.
  config.checkpoint_every_steps = 50
  return common.apply_variant(config, variant)
