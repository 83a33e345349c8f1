"""Hybrid CNN+LSTM models, built from a config.

  model = create_model(config)
  variables = model.init(jax.random.key(0), dummy_batch(config, 2))
  outputs = model.apply(variables, batch, train=False)

Which model class reads which batch keys, and the head's width, come from `hybrid_jax.tasks`.
"""

import ml_collections

from hybrid_jax import tasks
from hybrid_jax.models.fusion import BRANCHES, FUSIONS, check_switches

TASKS = tuple(tasks.INPUT_KINDS)
create_model = tasks.create_model
dummy_batch = tasks.dummy_batch


def is_regression(config: ml_collections.ConfigDict) -> bool:
  """True when `config.head` (resolved from the data, or the input kind's default) is regression."""
  return tasks.is_regression(config)
