"""Fusion of the branch outputs, and the task heads.

The question the project studies is whether naive concatenation of CNN and LSTM features is worth
it; the learned fusions here are the alternatives an ablation compares it with.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hybrid_jax import errors

Array = jax.Array

# 'cnn+cnn' / 'lstm+lstm': two independently initialised copies of one branch, fused like 'both' (a
# capacity control: does concat help because the branches differ, or because there are two?).
BRANCHES = ('both', 'cnn', 'lstm', 'cnn+cnn', 'lstm+lstm')
FUSIONS = ('concat', 'gated', 'projected_sum')


class Fusion(nn.Module):
  """Joins branch features [batch, d_i] into one vector [batch, d].

  - 'concat': [cnn, lstm] (the reference; d = sum of d_i, no parameters).
  - 'gated': each branch projected to `dim`; a sigmoid gate computed from all branches picks, per
    unit, a convex mix: g * proj(cnn) + (1 - g) * proj(lstm).
  - 'projected_sum': ReLU(sum of per-branch projections to `dim`).
  A single branch passes through unchanged, whatever `kind` says.
  """

  kind: str = 'concat'
  dim: int = 128
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, branch_features: Sequence[Array]) -> Array:
    if len(branch_features) == 1:
      return branch_features[0]
    if self.kind == 'concat':
      return jnp.concatenate(branch_features, axis=-1)
    projected = [
      nn.Dense(self.dim, dtype=self.dtype, name=f'proj_{i}')(f)
      for i, f in enumerate(branch_features)
    ]
    if self.kind == 'projected_sum':
      return nn.relu(sum(projected))
    if self.kind == 'gated':
      if len(projected) != 2:
        raise errors.ConfigError(f"fusion='gated' mixes exactly 2 branches, got {len(projected)}.")
      gate = nn.sigmoid(
        nn.Dense(self.dim, dtype=self.dtype, name='gate')(jnp.concatenate(branch_features, axis=-1))
      )
      return gate * projected[0] + (1 - gate) * projected[1]
    raise ValueError(f'Unknown fusion {self.kind!r}: use one of {FUSIONS}.')


class FusionHead(nn.Module):
  """Branch features -> fusion -> dropout -> Dense head.

  Returns logits float32 [batch, num_outputs], or float32 [batch] when `num_outputs` is 1 and
  `regression` is set (the reference's Dense(1)).
  """

  num_outputs: int
  regression: bool = False
  fusion: str = 'concat'
  fusion_dim: int = 128
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, branch_features: Sequence[Array], *, train: bool) -> Array:
    fused_BF = Fusion(self.fusion, self.fusion_dim, self.dtype, name='fusion')(branch_features)
    fused_BF = nn.Dropout(self.dropout_rate, deterministic=not train)(fused_BF)
    out_BO = nn.Dense(self.num_outputs, dtype=self.dtype, name='output')(fused_BF).astype(
      jnp.float32
    )
    return out_BO[:, 0] if self.regression else out_BO


# Compute dtypes by config name (parameters stay float32).
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


class HybridModel(nn.Module):
  """The fields every task model shares: head width, branch sizes, ablation/fusion switches, dtype.

  A task model's fields are exactly `config.model`'s (input_kinds.create_model passes them all),
  plus `regression`, which comes from `config.head`. The head's width is `num_outputs`: the number
  of classes, or 1 with `regression` (the model then returns [batch]).
  """

  num_classes: Optional[int] = None
  regression: bool = False
  conv_features: Sequence[int] = (64,)
  kernel_size: int = 3
  lstm_units: int = 64
  # The LSTM scan's input projection: one of lstm.PROJECTIONS (same values, speed only).
  lstm_projection: str = 'auto'
  branches: str = 'both'
  fusion: str = 'concat'
  fusion_dim: int = 128
  dropout_rate: float = 0.0
  # Compute dtype by name, one of DTYPES.
  dtype: str = 'float32'

  @property
  def num_outputs(self) -> int:
    if self.regression:
      return 1
    if self.num_classes is None:
      raise errors.ConfigError(
        'config.model.num_classes is None: set it, or let the data fill it (train/eval).'
      )
    return int(self.num_classes)

  @property
  def compute_dtype(self) -> Any:
    return DTYPES[self.dtype]

  def uses(self, branch: str) -> bool:
    """Whether the 'cnn' or 'lstm' branch feeds the head."""
    return bool(self.copies(branch))

  def copies(self, branch: str) -> tuple[str, ...]:
    """Module names of the copies of the 'cnn' or 'lstm' branch that feed the head, in order.

    () when unused, (branch,) normally, (branch, branch + '_copy') for 'cnn+cnn' / 'lstm+lstm'
    (the second copy has its own parameters, initialised independently).
    """
    if self.branches == f'{branch}+{branch}':
      return (branch, f'{branch}_copy')
    return (branch,) if self.branches in ('both', branch) else ()

  def head_kwargs(self) -> dict[str, Any]:
    """Keyword arguments of `FusionHead` that come from the shared fields."""
    return dict(
      num_outputs=self.num_outputs,
      regression=self.regression,
      fusion=self.fusion,
      fusion_dim=self.fusion_dim,
      dropout_rate=self.dropout_rate,
      dtype=self.compute_dtype,
    )
