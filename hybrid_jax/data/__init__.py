"""Data: the shipped datasets (shipped.py, builders/), your files (files.py, file_splits.py,
file_dataset.py), TFDS catalog datasets (catalog.py), one resolution per run (datasets.py), decoders
from records and raw inputs to model inputs (decoders.py) and the grain input pipelines (pipeline.py).

  source = datasets.resolve(config)              # prepares/validates; source.config is resolved
  train_it = pipeline.create_train_iterator(source)
  for batch in pipeline.create_eval_batches(source): ...
  hybrid_jax.data.from_arrays('my_set', train=(x, y), test=(x, y))   # then dataset.name='my_set'
"""

from hybrid_jax.data.file_dataset import from_arrays  # noqa: F401  (the public name)
