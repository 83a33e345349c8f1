"""Sensor: multivariate time series (shipped datasets: weather_stations regression, japanese_vowels).

Windows shaped (time, sensors, features) are reshaped to (time, sensors*features) -> Conv1D64-k3 ->
MaxPool2 -> Flatten, and an LSTM(32) reads the same sequence -> concat -> Dense(1), trained with MSE
and reported with MAE. A dataset with a ClassLabel 'label' gets a softmax head instead (config.head).

  python -m hybrid_jax.main --config=configs/sensor.py
"""

import ml_collections
from ml_collections import config_dict

from configs import common


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  config = common.get_config()
  config.task = 'sensor'
  config.dataset.name = 'weather_stations'

  config.model.window_shape = (24, 3, 5)  # (time steps, sensors, features per sensor) of a window.
  config.model.conv_features = (64,)  # Filters of the Conv1D layers, each followed by MaxPool2.
  config.model.kernel_size = 3  # Conv1D kernel size.
  config.model.lstm_units = 32  # LSTM hidden size.
  # CNN output: 'flatten' (reference, fixed length) | 'global_max' (any length).
  config.model.pooling = 'flatten'
  # Classification head only; None: from the data.
  config.model.num_classes = config_dict.placeholder(int)

  # Validation MAE is best near step 500, which is kept as 'best' (docs/training.md).
  config.num_train_steps = 1_000
  return common.apply_variant(config, variant)
