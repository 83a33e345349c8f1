"""Choosing on validation (numpy only): the best candidate with a loss tie-break, the grid's edge.

i = select_best(val_metrics, val_losses)                   # ties on the metric: lower loss wins
edge = grid_edge(lrs, val_means)                           # chosen rate at the grid's edge?
"""

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np


def select_best(
  metrics: Sequence[Optional[float]],
  losses: Optional[Sequence[Optional[float]]] = None,
  lower_is_better: bool = False,
  tol: float = 1e-9,
) -> int:
  """Index of the best candidate by validation metric; ties broken by the lower validation loss.

  Used for an arm's learning rate (metric and loss: means over the selection seeds); a run's kept
  checkpoint is chosen the same way by `checkpoints.best_score` (orbax's best_fn). Accuracy on a small validation set moves in steps of
  1 / N, so ties are common; the loss is continuous. Candidates within `tol` of the best metric
  tie; among them the lowest loss wins, and among equal losses the first (e.g. the earliest step).
  None or NaN (a diverged run) is never preferred.
  """
  m = np.array([np.nan if v is None else v for v in metrics], np.float64)
  if not len(m) or np.all(np.isnan(m)):
    raise ValueError('No candidate has a finite validation metric.')
  score = np.where(np.isnan(m), np.inf, -m if not lower_is_better else m)
  tied = np.flatnonzero(score <= score.min() + tol)
  if losses is None or len(tied) == 1:
    return int(tied[0])
  loss = np.array([np.nan if v is None else v for v in losses], np.float64)
  if len(loss) != len(m):
    raise ValueError(f'One loss per candidate: {len(loss)} losses for {len(m)} metrics.')
  tied_loss = np.where(np.isnan(loss[tied]), np.inf, loss[tied])
  return int(tied[np.argmin(tied_loss)])


@dataclasses.dataclass(frozen=True)
class GridEdge:
  """Where the chosen learning rate sits in the grid.

  chosen: the selected rate. edge: 'largest' or 'smallest' when the choice is at that end of the
  grid (the optimum may lie beyond it), 'only' for a one-rate grid, None inside. next_rates: the
  rates to add before choosing again (empty inside the grid).
  """

  chosen: float
  edge: Optional[str]
  next_rates: tuple[float, ...]


def _nice(x: float, low: float, high: float) -> float:
  """The rate `x` beyond the tried range [low, high], snapped to the 1-3 half-decade grid (1e-3,
  3e-3, 1e-2, ...) when within 20%, else to 2 s.f.; either only where it stays outside the range
  (a rate tried already would extend nothing), else `x` as it is."""
  exponent = math.floor(math.log10(x))
  snapped = [
    float(f'{mantissa * 10.0**exponent:.1g}')
    for mantissa in (1.0, 3.0, 10.0)
    if abs(math.log(x / (mantissa * 10.0**exponent))) < math.log(1.2)
  ]
  return next((r for r in (*snapped, float(f'{x:.2g}')) if not low <= r <= high), x)


def grid_edge(
  lrs: Sequence[float],
  val_means: Sequence[Optional[float]],
  lower_is_better: bool = False,
  val_losses: Optional[Sequence[Optional[float]]] = None,
) -> GridEdge:
  """Whether an arm's chosen learning rate is at the grid's edge, and the rate to add next.

  Args:
    lrs: the rates tried; val_means[i] (and val_losses[i]) the arm's mean validation metric (loss)
      at lrs[i] over the selection seeds. The choice is `select_best` (ties: validation loss).
  Returns:
    GridEdge. The next rate goes one step outward by the grid's own geometric ratio
    ((max / min) ** (1 / (k - 1)); sqrt(10) for a one-rate grid, which gets both neighbours),
    snapped to the 1-3 half-decade grid when close and still outside the rates tried: 3e-4, 1e-3,
    3e-3 -> 1e-2 above, 1e-4 below; 3e-3, 3.3e-3 -> 2.7e-3 below (not 3e-3, tried already).
  """
  if len(lrs) != len(val_means) or not len(lrs):
    raise ValueError(f'One validation mean per rate: {len(val_means)} for {len(lrs)} rates.')
  chosen = float(lrs[select_best(val_means, val_losses, lower_is_better)])
  low, high = float(min(lrs)), float(max(lrs))
  if low == high:
    below, above = low / math.sqrt(10), low * math.sqrt(10)
    return GridEdge(chosen, 'only', (_nice(below, low, high), _nice(above, low, high)))
  ratio = (high / low) ** (1.0 / (len(set(lrs)) - 1))
  if chosen == high:
    return GridEdge(chosen, 'largest', (_nice(high * ratio, low, high),))
  if chosen == low:
    return GridEdge(chosen, 'smallest', (_nice(low / ratio, low, high),))
  return GridEdge(chosen, None, ())
