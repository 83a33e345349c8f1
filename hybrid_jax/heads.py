"""The head table: what a model predicts and how it is scored, one entry per head.

  HEADS   'classification'  softmax over num_classes; label = a ClassLabel 'label' feature
          'regression'      Dense(1), MSE on the normalized 'target'; MAE in original units

`config.head` names the head ('' = decided by the data: a ClassLabel 'label' feature ->
classification, a 'target' feature -> regression). Code elsewhere asks this table (e.g.
`head(config).regression`, `head(config).outputs(out)`) instead of branching on a head's name.
"""

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from hybrid_jax import metrics as metrics_lib
from hybrid_jax.errors import ConfigError
from hybrid_jax.errors import DataError


@dataclasses.dataclass(frozen=True)
class Head:
  """What a head predicts and how it is scored.

  Attributes:
    name: 'classification' | 'regression'.
    regression: whether the model's output is one value per example (Dense(1), [batch]).
    label_key: the batch (and dataset feature) key of the supervision: 'label' or 'target'.
    label_dtype: its batch dtype.
    loss: (model output, labels) -> scalar mean loss (traced inside the train step).
    train_metrics: (output, labels) -> {name: scalar} shown on the progress line besides the loss.
    sums: (output, labels, mask, top_k, with_confusion) -> exact per-batch metric sums (metrics.py).
    best_metric: the eval metric that picks the kept "best" checkpoint when config.best_metric=''.
    primary_metric: (name, lower is better) of the metric a study compares arms on (test split).
    eval_metrics: (top_k) -> names of the scalar eval metrics it reports.
    outputs: (model output) -> the named arrays a prediction returns (traced).
    in_features: (a dataset's top-level features) -> whether they carry this head's supervision.
  """

  name: str
  regression: bool
  label_key: str
  label_dtype: Any
  loss: Callable[..., jax.Array]
  train_metrics: Callable[..., dict[str, jax.Array]]
  sums: Callable[..., dict[str, jax.Array]]
  best_metric: str
  primary_metric: tuple[str, bool]
  eval_metrics: Callable[[int], list[str]]
  outputs: Callable[[jax.Array], dict[str, jax.Array]]
  in_features: Callable[[Mapping[str, Any]], bool]

  def num_outputs(self, model_config: ml_collections.ConfigDict) -> int:
    """Width of the last Dense layer."""
    return 1 if self.regression else int(model_config.num_classes)


def _accuracy(logits_BC, labels_B):
  return {'accuracy': jnp.mean(jnp.argmax(logits_BC, -1) == labels_B).astype(jnp.float32)}


def _mae(prediction_B, target_B):
  return {'mae': jnp.mean(jnp.abs(prediction_B.astype(jnp.float32) - target_B))}


HEADS = {
  'classification': Head(
    name='classification',
    regression=False,
    label_key='label',
    label_dtype=np.int32,
    loss=metrics_lib.classification_loss,
    train_metrics=_accuracy,
    sums=metrics_lib.classification_sums,
    best_metric='accuracy',
    primary_metric=('accuracy', False),
    eval_metrics=lambda top_k: ['loss', 'accuracy'] + ([f'top_{top_k}_accuracy'] if top_k else []),
    outputs=lambda out: {'logits': out, 'probabilities': jax.nn.softmax(out, axis=-1)},
    in_features=lambda features: isinstance(features.get('label'), tfds.features.ClassLabel),
  ),
  'regression': Head(
    name='regression',
    regression=True,
    label_key='target',
    label_dtype=np.float32,
    loss=metrics_lib.regression_loss,
    train_metrics=_mae,
    sums=lambda out, target, mask, top_k, with_confusion: metrics_lib.regression_sums(
      out, target, mask
    ),
    best_metric='mae',
    primary_metric=('mae_original_units', True),
    eval_metrics=lambda top_k: [
      'loss',
      'mse',
      'mae',
      'rmse',
      'mae_original_units',
      'rmse_original_units',
    ],
    outputs=lambda out: {'values': out},
    in_features=lambda features: 'target' in features,
  ),
}


def head(config_or_name, default: str = 'classification') -> Head:
  """The Head of `config.head` (or of a head name); '' is `default` (the input kind's default)."""
  if isinstance(config_or_name, str):
    name = config_or_name or default
  else:
    name = config_or_name.get('head') or default
  if name not in HEADS:
    raise ConfigError(
      f"Unknown config.head={name!r}: use one of {tuple(HEADS)} or '' (from the data)."
    )
  return HEADS[name]


def head_of_features(features: Mapping[str, Any], forced: str, dataset: str) -> Head:
  """The head a dataset's features call for; `forced` (config.head) must agree with them.

  Args:
    features: the builder's top-level features (name -> tfds feature).
    forced: config.head ('' lets the data decide).
    dataset: name shown in errors.
  """
  features = dict(features.items())
  if forced:
    found = head(forced)
    if not found.in_features(features):
      raise DataError(
        f"{dataset} has no {found.label_key!r} feature for config.head={forced!r}: set "
        f"--config.head='' (from the data) or use a dataset with a {found.label_key!r}."
      )
    return found
  available = [h for h in HEADS.values() if h.in_features(features)]
  if len(available) == 1:
    return available[0]
  if available:
    raise DataError(
      f'{dataset} has both a ClassLabel label and a target feature: set --config.head to one '
      f'of {tuple(HEADS)}.'
    )
  raise DataError(
    f'{dataset} has neither a ClassLabel label nor a target feature: a builder must store one '
    'of them.'
  )
