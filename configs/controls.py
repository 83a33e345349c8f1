"""The synthetic controls (shipped dataset family: controls/local, order, both, redundant, xor).

Series of 384 steps x 2 channels whose verdict for "concat - best single branch" is known from
their construction (hybrid_jax/data/builders/controls.py). The sensor model at the reference sizes
(Conv1D64-k3 -> MaxPool2 -> global max over time ∥ LSTM(32)) with a softmax head; global max
pooling makes the CNN blind to where (and in which order) events happen.

  python -m hybrid_jax.main --config=configs/controls.py
  python -m hybrid_jax.main --config=configs/controls.py --config.dataset.name=controls/local
"""

import ml_collections
from ml_collections import config_dict

from configs import common
from configs import sensor


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  config = sensor.get_config()
  # 'controls/<local|order|both|redundant|xor>' ('controls/both_tiny' etc.: the test builds).
  config.dataset.name = 'controls/both'
  # (384, 2) from the data: steps x channels.
  config.model.window_shape = config_dict.placeholder(tuple)
  config.model.num_classes = None  # 2 or 4 (both), from the data.
  config.model.pooling = 'global_max'  # The CNN sees which windows occur, not where.

  config.batch_size = 32  # 4,096 train series: 128 batches per epoch.
  config.num_train_steps = 1_000  # ~8 epochs (experiments/results/controls_calibration.md).
  config.eval_every_steps = 200  # 5 evaluations of the 1,024 validation series per run.
  config.checkpoint_every_steps = 200
  return common.apply_variant(config, variant)
