"""Data: the shipped datasets (shipped.py, builders/), TFDS catalog datasets (catalog.py), one
resolution per run (datasets.py), decoders from records and raw inputs to model inputs
(decoders.py) and the grain input pipelines (pipeline.py).

  source = datasets.resolve(config)              # prepares/validates; source.config is resolved
  train_it = pipeline.create_train_iterator(source)
  for batch in pipeline.create_eval_batches(source): ...
"""
