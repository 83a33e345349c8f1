"""The study's arms: one registry of what each arm trains, and the parameter-matched capacity controls.

An arm turns a task's base config into the config it trains (`configure(config, sizes)`); `sizes`
holds the widths found by `match_sizes` so that the capacity controls have about concat's parameter
count. The late ensemble trains nothing: it averages the cnn-only and lstm-only runs of each seed.

  sizes = match_sizes(base_config)                 # {'cnn_width': ..., 'lstm_units': ..., ...}
  config = ARMS['cnn_wide'].configure(base_config, sizes)
  count_params(config)

Parameter counts come from `jax.eval_shape` of `model.init` (no arrays are allocated), so a search
over widths costs milliseconds per candidate for every task.
"""

import copy
import dataclasses
from typing import Callable, Optional

import jax
import ml_collections
import numpy as np

from hybrid_jax import ablation
from hybrid_jax import input_kinds

Config = ml_collections.ConfigDict
MATCH_TOLERANCE = 0.10  # A "matched" arm within 10% of concat's parameter count is called matched.


def _count(config: Config) -> int:
  model = input_kinds.create_model(config)
  variables = jax.eval_shape(model.init, jax.random.key(0), input_kinds.dummy_batch(config, 2))
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(variables['params']))


_COUNTS: dict[tuple[str, str], int] = {}


def count_params(config: Config) -> int:
  """Trainable parameters of the model `config` builds (shapes only, nothing allocated; cached)."""
  key = (config.task, config.model.to_json_best_effort(sort_keys=True))
  if key not in _COUNTS:
    _COUNTS[key] = _count(config)
  return _COUNTS[key]


def branch_widths(config: Config) -> list[int]:
  """The feature width of each branch at the head of the concat model (shapes only)."""
  config = with_model(config, branches='both', fusion='concat')
  model = input_kinds.create_model(config)
  batch = input_kinds.dummy_batch(config, 2)
  widths = []

  def forward():
    variables = model.init(jax.random.key(0), batch)
    with ablation.branch_features() as features:
      model.apply(variables, batch)
    widths.extend(int(f.shape[-1]) for f in features)

  jax.eval_shape(forward)
  return widths


def narrow_fusions(sizes: dict[str, object], widths: list[int]) -> list[str]:
  """The parameter-matched learned fusions whose projection is narrower than the narrower branch
  (a bottleneck, not a fair alternative to concat): the study leaves them out."""
  return [
    f'{fusion}_matched'
    for fusion in ('gated', 'projected_sum')
    if int(sizes[f'{fusion}_dim']) < min(widths)
  ]


def with_model(config: Config, **fields) -> Config:
  """A copy of `config` (unlocked) with `config.model` fields replaced."""
  config = copy.deepcopy(config)
  with config.unlocked():
    config.model.update(fields)
  return config


def widened_conv_features(base: tuple[int, ...], last_width: int) -> tuple[int, ...]:
  """Every conv layer scaled by last_width / base[-1] (rounded, at least 1): the shape is kept."""
  return tuple(max(1, int(round(f * last_width / base[-1]))) for f in base)


def _closest_int(count_at: Callable[[int], int], target: int, start: int) -> int:
  """The integer w >= 1 whose nondecreasing count_at(w) is closest to `target` (ties: smaller w)."""
  lo, hi = 1, max(1, start)
  while count_at(hi) < target:  # Exponential bracket, then bisection for the first w >= target.
    lo, hi = hi, hi * 2
  while lo < hi:
    mid = (lo + hi) // 2
    if count_at(mid) < target:
      lo = mid + 1
    else:
      hi = mid
  candidates = [w for w in (hi - 1, hi) if w >= 1]
  return min(candidates, key=lambda w: (abs(count_at(w) - target), w))


def match_sizes(config: Config) -> dict[str, object]:
  """Sizes that bring the capacity controls to about concat's parameter count.

  Args:
    config: the task's base config with every model field filled (`datasets.resolve(c).config`).
  Returns:
    {'target': concat's count, 'cnn_width': last conv width of the widened CNN-only model (all conv
     layers scaled alike), 'lstm_units': units of the widened LSTM-only model, 'gated_dim' and
     'projected_sum_dim': fusion_dim of the learned fusions, and 'params' of each matched arm}.
    A learned fusion whose smallest width (1) already exceeds the target gets fusion_dim 1; the
    report flags every arm more than MATCH_TOLERANCE away from the target.
  """
  base_conv = tuple(config.model.conv_features)
  target = count_params(with_model(config, branches='both', fusion='concat'))

  def cnn(width: int) -> int:
    conv_features = widened_conv_features(base_conv, width)
    return count_params(with_model(config, branches='cnn', conv_features=conv_features))

  def lstm(units: int) -> int:
    return count_params(with_model(config, branches='lstm', lstm_units=units))

  sizes = {
    'target': target,
    'cnn_width': _closest_int(cnn, target, base_conv[-1]),
    'lstm_units': _closest_int(lstm, target, int(config.model.lstm_units)),
  }
  for fusion in ('gated', 'projected_sum'):  # The count is affine in fusion_dim: solve, then check.
    at = lambda d, f=fusion: count_params(
      with_model(config, branches='both', fusion=f, fusion_dim=d)
    )
    slope = at(2) - at(1)
    dim = max(1, int(round((target - (at(1) - slope)) / slope)))
    sizes[f'{fusion}_dim'] = min(
      (d for d in (dim - 1, dim, dim + 1) if d >= 1), key=lambda d: abs(at(d) - target)
    )
  return sizes


@dataclasses.dataclass(frozen=True)
class Arm:
  """One arm of the study.

  label: how tables name it.
  model: fields of `config.model` it sets (values may be callables of (config, sizes)).
  trained: False for the late ensemble, which averages other arms' test outputs.
  matched: whether it is a capacity control sized to concat's parameter count.
  """

  label: str
  model: dict
  trained: bool = True
  matched: bool = False

  def configure(self, config: Config, sizes: Optional[dict[str, object]] = None) -> Config:
    """The config this arm trains (a copy of `config`)."""
    fields = {k: (v(config, sizes) if callable(v) else v) for k, v in self.model.items()}
    return with_model(config, **fields)


def _wide_cnn(config, sizes):
  return widened_conv_features(tuple(config.model.conv_features), int(sizes['cnn_width']))


ARMS: dict[str, Arm] = {
  'cnn': Arm('cnn only', dict(branches='cnn', fusion='concat')),
  'lstm': Arm('lstm only', dict(branches='lstm', fusion='concat')),
  'concat': Arm('concat (reference)', dict(branches='both', fusion='concat')),
  'gated': Arm('gated', dict(branches='both', fusion='gated')),
  'projected_sum': Arm('projected_sum', dict(branches='both', fusion='projected_sum')),
  'gated_matched': Arm(
    'gated, matched',
    dict(branches='both', fusion='gated', fusion_dim=lambda c, s: int(s['gated_dim'])),
    matched=True,
  ),
  'projected_sum_matched': Arm(
    'projected_sum, matched',
    dict(
      branches='both', fusion='projected_sum', fusion_dim=lambda c, s: int(s['projected_sum_dim'])
    ),
    matched=True,
  ),
  'cnn_wide': Arm(
    'cnn only, widened',
    dict(branches='cnn', fusion='concat', conv_features=_wide_cnn),
    matched=True,
  ),
  'lstm_wide': Arm(
    'lstm only, widened',
    dict(branches='lstm', fusion='concat', lstm_units=lambda c, s: int(s['lstm_units'])),
    matched=True,
  ),
  # The fixes that tell "the branches are not complementary" from "joint training fails": each
  # branch brought to a common scale, a loss per branch, whole-branch dropout.
  'concat_norm': Arm('concat, normalised branches', dict(branches='both', fusion='concat_norm')),
  'concat_aux': Arm(
    'concat + a loss per branch (weight 1)',
    dict(branches='both', fusion='concat', aux_loss_weight=1.0),
  ),
  'concat_branch_dropout': Arm(
    'concat + branch dropout (0.25)', dict(branches='both', fusion='concat', branch_dropout=0.25)
  ),
  'cnn+cnn': Arm('cnn ∥ cnn', dict(branches='cnn+cnn', fusion='concat')),
  'lstm+lstm': Arm('lstm ∥ lstm', dict(branches='lstm+lstm', fusion='concat')),
  'ensemble': Arm('late ensemble (cnn, lstm)', {}, trained=False),
  # A linear head on the frozen features of the cnn-only and lstm-only runs of each seed.
  'probe': Arm('probe: a head on the frozen cnn and lstm features', {}, trained=False),
}
ENSEMBLE_MEMBERS = ('cnn', 'lstm')
