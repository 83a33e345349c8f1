"""Branch features at the head: capture them, and replace a branch's (ablation) inside one call.

  with branch_features() as captured:                  # record the head's inputs
    out = model.apply(variables, batch, train=False)    # captured: [features of branch 0, 1, ...]
  with branch_features({1: 'zero'}):                   # the second branch's features -> zeros
    out = model.apply(variables, batch, train=False)
  with branch_features({0: mean_F}):                   # mean ablation: a constant vector [F]
    out = model.apply(variables, batch, train=False)

The features are the inputs of `fusion.FusionHead` (one [batch, d_i] array per branch, in the
model's branch order, before any fusion); works inside `jax.jit` (the context wraps the trace).
Used by `hybrid_jax.load(...).predict(zero_branches=...)`/`embed` and by the study.
"""

import contextlib
from typing import Any, Iterator, Mapping, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from hybrid_jax.models import fusion

# 'zero': replace by zeros; an array [features]: replace every example's features by it.
Replacement = Union[str, jax.Array, Any]


def _replaced(features: jax.Array, replacement: Replacement) -> jax.Array:
  if isinstance(replacement, str):
    if replacement != 'zero':
      raise ValueError(f"Unknown branch replacement {replacement!r}: use 'zero' or an array.")
    return jnp.zeros_like(features)
  return jnp.broadcast_to(jnp.asarray(replacement, features.dtype), features.shape)


@contextlib.contextmanager
def branch_features(replace: Mapping[int, Replacement] | None = None) -> Iterator[list]:
  """Within the context, records the head's branch features and replaces those in `replace`.

  Args:
    replace: branch index -> 'zero' or an array [features] that stands in for every example's.

  Yields:
    The list the branch features are appended to (as the model computed them, before replacing).
  """
  replace = dict(replace or {})
  captured: list = []

  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, fusion.FusionHead) and context.method_name == '__call__':
      features = list(args[0])
      captured.extend(features)
      for index, replacement in replace.items():
        features[index] = _replaced(features[index], replacement)
      args = (features, *args[1:])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    yield captured
