"""Data: shipped TFDS builders (offline, prepared on first use), TFDS catalog datasets, grain pipelines.

info = load_info(config)                     # prepares/validates; fills None model fields
train_it = create_train_iterator(config)     # endless per-process batches; get_state/set_state
for batch in create_eval_batches(config): ...   # every example once, padded last batch + 'mask'
"""

from hybrid_jax.data.datasets import DataError
from hybrid_jax.data.datasets import DataInfo
from hybrid_jax.data.pipeline import create_eval_batches
from hybrid_jax.data.pipeline import create_train_iterator


def load_info(config) -> DataInfo:
  """Prepares the dataset on first use (offline), checks `config` against it, returns its DataInfo.

  Model fields of `config` that are None (e.g. num_classes) are filled from the data; explicit values
  that disagree raise DataError (a ValueError) with the override to use.
  """
  from hybrid_jax.data import datasets  # pylint: disable=g-import-not-at-top

  return datasets.resolve(config).info
