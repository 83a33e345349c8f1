"""hybrid_jax: hybrid CNN+LSTM models in JAX/Flax, and the code to train and evaluate them.

model = hybrid_jax.load(workdir, checkpoint='best')   # a trained run, see hybrid_jax.inference
model.predict(raw_inputs).probabilities
"""

_INFERENCE = ('load', 'TrainedModel', 'Predictions')


def __getattr__(name: str):
  """`hybrid_jax.load` etc. import JAX only when first used (`import hybrid_jax` stays light)."""
  if name in _INFERENCE:
    from hybrid_jax import inference  # pylint: disable=g-import-not-at-top

    return getattr(inference, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
