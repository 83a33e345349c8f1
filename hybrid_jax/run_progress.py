"""Host-side run state saved with every checkpoint (its `progress` item), so that a resumed run goes on
exactly as the uninterrupted one would: early stopping's count of evaluations, and the train
metrics of the steps since the last train record.

  stopping = EarlyStopping('accuracy', patience=5)
  stop = stopping.update(eval_metrics)                  # after each evaluation
  progress = to_save(stopping, window)                  # JSON-able, for checkpoints.save
  stopping.restore(progress); window = train_window(progress)   # on resume
"""

import dataclasses
from typing import Any, Optional

from hybrid_jax import checkpoints
from hybrid_jax import metrics as metrics_lib

# The host train metrics ({name: float} per step) of the steps after the last train record. A
# train record averages the steps since the previous one; with the window saved, the first record
# after a resume averages the same steps, with the same values, as the uninterrupted run's
# (floats round-trip exactly through JSON).
_TRAIN_WINDOW = 'train_window'
_EARLY_STOPPING = 'early_stopping'


@dataclasses.dataclass
class EarlyStopping:
  """Counts evaluations since the best `metric` (ties broken by the eval loss, as the kept best
  checkpoint is chosen); `stopped` after `patience` of them without a better one (0: never)."""

  metric: str
  patience: int
  best: Optional[float] = None
  evals_since_best: int = 0
  stopped: bool = False

  def update(self, eval_metrics: dict[str, object]) -> bool:
    """Takes one evaluation's metrics; returns whether to stop now."""
    value = checkpoints.best_score(eval_metrics, self.metric)
    lower = metrics_lib.is_lower_better(self.metric)
    if self.best is None or (value < self.best if lower else value > self.best):
      self.best, self.evals_since_best = value, 0
    else:
      self.evals_since_best += 1
    self.stopped = bool(self.patience) and self.evals_since_best >= self.patience
    return self.stopped

  def restore(self, progress: dict[str, Any]) -> None:
    saved = progress.get(_EARLY_STOPPING, {})
    self.best = saved.get('best')
    self.evals_since_best = int(saved.get('evals_since_best', 0))
    # A larger patience given on resume (config.early_stopping_patience may change) goes on.
    self.stopped = bool(self.patience) and self.evals_since_best >= self.patience


def to_save(stopping: EarlyStopping, window: list[dict[str, float]]) -> dict[str, Any]:
  """The progress item of a checkpoint."""
  return {_EARLY_STOPPING: dataclasses.asdict(stopping), _TRAIN_WINDOW: list(window)}


def train_window(progress: dict[str, Any]) -> list[dict[str, float]]:
  """The saved train-metric window ([] for a checkpoint written before windows were saved)."""
  return [dict(step) for step in progress.get(_TRAIN_WINDOW, [])]
