"""Losses and metrics by task, as sums that add up exactly across devices, batches and processes.

Each per-device function returns *sums* (and a 'count') over the unmasked examples; the step
`psum`s them over devices, the host adds them over batches in float64, and `finalize` divides once
at the end. Means of means are never taken, so a padded last eval batch counts correctly.
"""

from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hybrid_jax import errors

# Eval metrics that are better when smaller (the rest are better when larger).
LOWER_IS_BETTER = ('loss', 'mse', 'mae', 'rmse', 'mae_original_units', 'rmse_original_units')


def classification_loss(logits_BC: jax.Array, labels_B: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy; logits [batch, classes] float, labels [batch] int -> scalar."""
  return optax.softmax_cross_entropy_with_integer_labels(
    logits_BC.astype(jnp.float32), labels_B
  ).mean()


def regression_loss(prediction_B: jax.Array, target_B: jax.Array) -> jax.Array:
  """Mean squared error on normalized targets; [batch], [batch] -> scalar."""
  return jnp.mean(jnp.square(prediction_B.astype(jnp.float32) - target_B))


def classification_sums(
  logits_BC: jax.Array,
  labels_B: jax.Array,
  mask_B: jax.Array,
  top_k: int = 0,
  with_confusion: bool = False,
) -> dict[str, jax.Array]:
  """Per-batch sums for classification.

  Args:
    logits_BC: [batch, classes] logits.
    labels_B: [batch] int labels.
    mask_B: [batch] bool, False on padding rows.
    top_k: also count top-k hits when 0 < top_k < classes.
    with_confusion: add 'confusion' [classes(true), classes(predicted)] counts.

  Returns:
    dict of float32 scalars 'loss', 'correct', 'count' (+ 'correct_top_k', 'confusion').
  """
  logits_BC = logits_BC.astype(jnp.float32)
  weight_B = mask_B.astype(jnp.float32)
  num_classes = logits_BC.shape[-1]
  loss_B = optax.softmax_cross_entropy_with_integer_labels(logits_BC, labels_B)
  predicted_B = jnp.argmax(logits_BC, axis=-1)
  sums = {
    'loss': jnp.sum(loss_B * weight_B),
    'correct': jnp.sum((predicted_B == labels_B) * weight_B),
    'count': jnp.sum(weight_B),
  }
  if 0 < top_k < num_classes:
    _, top_BK = jax.lax.top_k(logits_BC, top_k)
    hit_B = jnp.any(top_BK == labels_B[:, None], axis=-1)
    sums['correct_top_k'] = jnp.sum(hit_B * weight_B)
  if with_confusion:
    onehot_true_BC = jax.nn.one_hot(labels_B, num_classes) * weight_B[:, None]
    onehot_pred_BC = jax.nn.one_hot(predicted_B, num_classes)
    sums['confusion'] = onehot_true_BC.T @ onehot_pred_BC
  return sums


def regression_sums(
  prediction_B: jax.Array, target_B: jax.Array, mask_B: jax.Array
) -> dict[str, jax.Array]:
  """Per-batch sums for regression on normalized targets; all inputs [batch]."""
  weight_B = mask_B.astype(jnp.float32)
  error_B = prediction_B.astype(jnp.float32) - target_B
  return {
    'loss': jnp.sum(jnp.square(error_B) * weight_B),  # The MSE's numerator.
    'abs_error': jnp.sum(jnp.abs(error_B) * weight_B),
    'count': jnp.sum(weight_B),
  }


def add_sums(
  total: Optional[dict[str, np.ndarray]], sums: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
  """Accumulates host-side sums in float64 (order-independent enough to be exact for counts)."""
  sums = {k: np.asarray(v, np.float64) for k, v in sums.items()}
  if total is None:
    return sums
  return {k: total[k] + sums[k] for k in total}


def finalize(
  sums: Mapping[str, np.ndarray], top_k: int = 0, target_std: Optional[float] = None
) -> dict[str, object]:
  """Turns accumulated sums into metrics.

  Classification -> loss (mean cross-entropy), accuracy, top_{k}_accuracy, confusion (list of
  lists, rows = true class). Regression -> loss = mse, mae, rmse on normalized targets, and
  mae/rmse in the target's original units when `target_std` is given. Scalars are Python floats.
  """
  count = float(sums['count'])
  if count <= 0:
    raise errors.DataError(
      'No examples were evaluated: the eval split is empty; check config.dataset.eval_split.'
    )
  out: dict[str, object] = {'loss': float(sums['loss']) / count, 'num_examples': int(count)}
  if 'correct' in sums:
    out['accuracy'] = float(sums['correct']) / count
    if 'correct_top_k' in sums:
      out[f'top_{top_k}_accuracy'] = float(sums['correct_top_k']) / count
    if 'confusion' in sums:
      out['confusion'] = np.rint(sums['confusion']).astype(np.int64).tolist()
  else:
    out['mse'] = out['loss']
    out['mae'] = float(sums['abs_error']) / count
    out['rmse'] = float(np.sqrt(out['mse']))
    if target_std is not None:
      out['mae_original_units'] = out['mae'] * float(target_std)
      out['rmse_original_units'] = out['rmse'] * float(target_std)
  return out


def scalars(metrics: Mapping[str, object]) -> dict[str, float]:
  """The scalar entries of a metrics dict (drops the confusion matrix and counts)."""
  return {
    k: float(v)
    for k, v in metrics.items()
    if isinstance(v, (int, float, np.floating)) and k not in ('num_examples', 'step')
  }


def is_lower_better(name: str) -> bool:
  """Whether a smaller value of eval metric `name` is better (for picking the best checkpoint)."""
  return name in LOWER_IS_BETTER
