"""Fusion of the branch outputs, and the task heads.

The question the project studies is whether naive concatenation of CNN and LSTM features is worth
it; the learned fusions here are the alternatives an ablation compares it with.
"""

from typing import Any, Optional, Sequence

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from hybrid_jax import errors
from hybrid_jax import parallel

Array = jax.Array

# Where FusionHead sows the auxiliary heads' outputs (collection 'intermediates').
AUX_OUTPUTS = 'aux_outputs'

# 'cnn+cnn' / 'lstm+lstm': two independently initialised copies of one branch, fused like 'both' (a
# capacity control: does concat help because the branches differ, or because there are two?).
BRANCHES = ('both', 'cnn', 'lstm', 'cnn+cnn', 'lstm+lstm')
FUSIONS = ('concat', 'concat_norm', 'gated', 'projected_sum')


class RunningStandardize(nn.Module):
  """Per-feature standardisation with running statistics: (x - mean) / sqrt(var + epsilon).

  The statistics (collection 'norm_stats': the mean and the mean square of each feature) are an
  exponential moving average of the training batches' (`momentum`), set from the first training
  batch outright; evaluation uses them as they are. Training normalises with the statistics
  updated by its own batch (so the first batch is standardised exactly), with no gradient through
  them. Inside a mapped step the batch statistics are averaged over the devices (the global
  batch's), so the result does not depend on how the batch is split. Per feature this is an affine
  map, the same for every example: an example's level relative to the others is kept (unlike a
  per-example LayerNorm, which removes the level a regression head needs).
  """

  momentum: float = 0.99
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x_BF: Array, *, train: bool) -> Array:
    x_BF = x_BF.astype(jnp.float32)
    width = x_BF.shape[-1:]
    mean = self.variable('norm_stats', 'mean', jnp.zeros, width, jnp.float32)
    square = self.variable('norm_stats', 'mean_square', jnp.ones, width, jnp.float32)
    seen = self.variable('norm_stats', 'batches', jnp.zeros, (), jnp.float32)
    if train and not self.is_initializing():
      batch = jax.lax.stop_gradient(jnp.stack([x_BF.mean(0), jnp.square(x_BF).mean(0)]))
      batch = parallel.pmean_if_mapped(batch)
      keep = jnp.where(seen.value > 0, self.momentum, 0.0)
      mean.value = keep * mean.value + (1 - keep) * batch[0]
      square.value = keep * square.value + (1 - keep) * batch[1]
      seen.value = seen.value + 1
    variance = jnp.maximum(square.value - jnp.square(mean.value), 0.0)
    return (x_BF - mean.value) * jax.lax.rsqrt(variance + self.epsilon)


def _drop_branches(features: list[Array], rate: float, rng: jax.Array) -> list[Array]:
  """Zeroes each branch's features per example with probability `rate` (at least one is kept)."""
  batch = features[0].shape[0]
  keep_BN = jax.random.bernoulli(rng, 1.0 - rate, (batch, len(features)))
  keep_BN = keep_BN | ~keep_BN.any(axis=1, keepdims=True)  # Never drop every branch.
  return [f * keep_BN[:, i, None].astype(f.dtype) for i, f in enumerate(features)]


class Fusion(nn.Module):
  """Joins branch features [batch, d_i] into one vector [batch, d].

  - 'concat': [cnn, lstm] (the reference; d = sum of d_i, no parameters).
  - 'concat_norm': each branch standardised per feature with running statistics
    (`RunningStandardize`) and scaled by 1/sqrt(d_i), then concatenated: every feature has unit
    variance and every branch the same total variance at the head, whatever its width or range
    (no parameters; the statistics are in the 'norm_stats' collection).
  - 'gated': each branch projected to `dim`; a sigmoid gate computed from all branches picks, per
    unit, a convex mix: g * proj(cnn) + (1 - g) * proj(lstm).
  - 'projected_sum': ReLU(sum of per-branch projections to `dim`).
  A single branch passes through unchanged, whatever `kind` says. With `branch_dropout` > 0, each
  branch's (normalised) features are zeroed per example with that probability in training, never
  all of them: for 'concat_norm' a zeroed branch stands at its training mean.
  """

  kind: str = 'concat'
  dim: int = 128
  dtype: Any = jnp.float32
  branch_dropout: float = 0.0

  @nn.compact
  def __call__(self, branch_features: Sequence[Array], *, train: bool = False) -> Array:
    if len(branch_features) == 1:
      return branch_features[0]
    features = list(branch_features)
    if self.kind == 'concat_norm':
      features = [
        RunningStandardize(name=f'norm_{i}')(f, train=train).astype(self.dtype)
        * (1.0 / math.sqrt(f.shape[-1]))
        for i, f in enumerate(features)
      ]
    if train and self.branch_dropout > 0:
      features = _drop_branches(features, self.branch_dropout, self.make_rng('dropout'))
    if self.kind in ('concat', 'concat_norm'):
      return jnp.concatenate(features, axis=-1)
    projected = [
      nn.Dense(self.dim, dtype=self.dtype, name=f'proj_{i}')(f) for i, f in enumerate(features)
    ]
    if self.kind == 'projected_sum':
      return nn.relu(sum(projected))
    if self.kind == 'gated':
      gate = nn.sigmoid(
        nn.Dense(self.dim, dtype=self.dtype, name='gate')(jnp.concatenate(features, axis=-1))
      )
      return gate * projected[0] + (1 - gate) * projected[1]
    raise ValueError(f'Unknown fusion {self.kind!r}: use one of {FUSIONS}.')


class FusionHead(nn.Module):
  """Branch features -> fusion -> dropout -> Dense head (+ one auxiliary head per branch).

  Returns logits float32 [batch, num_outputs], or float32 [batch] when `num_outputs` is 1 and
  `regression` is set (the reference's Dense(1)). With `aux_heads`, every branch also gets its own
  Dense head on its raw features (`aux_{i}`); their outputs are sown into the 'intermediates'
  collection as 'aux_outputs' (one per branch, shaped like the output), for an auxiliary loss
  (steps.train_step: loss = fused + aux_loss_weight * sum of branch losses).
  """

  num_outputs: int
  regression: bool = False
  fusion: str = 'concat'
  fusion_dim: int = 128
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  branch_dropout: float = 0.0
  aux_heads: bool = False

  @nn.compact
  def __call__(self, branch_features: Sequence[Array], *, train: bool) -> Array:
    def dense_out(x: Array, name: str) -> Array:
      out_BO = nn.Dense(self.num_outputs, dtype=self.dtype, name=name)(x).astype(jnp.float32)
      return out_BO[:, 0] if self.regression else out_BO

    fusion = Fusion(self.fusion, self.fusion_dim, self.dtype, self.branch_dropout, name='fusion')
    fused_BF = fusion(branch_features, train=train)
    fused_BF = nn.Dropout(self.dropout_rate, deterministic=not train)(fused_BF)
    out = dense_out(fused_BF, 'output')
    if self.aux_heads:
      aux = tuple(dense_out(f, f'aux_{i}') for i, f in enumerate(branch_features))
      self.sow('intermediates', AUX_OUTPUTS, aux)
    return out


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
  # A linear head per branch, trained beside the fused one: loss = fused + weight * sum of the
  # branch losses (0: none).
  aux_loss_weight: float = 0.0
  # Probability of zeroing a branch's features per example in training (0: never; see Fusion).
  branch_dropout: float = 0.0

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
      branch_dropout=self.branch_dropout,
      aux_heads=self.aux_loss_weight > 0,
    )
