"""The study's datasets and their default grids: what `python -m experiments.study` runs on each
shipped dataset (the controls first) unless told otherwise: arms, seeds, learning rates, run length.

`DATASETS` holds every dataset's `DatasetSpec`; a dataset without an entry in `_GRIDS` runs the
full protocol (DatasetSpec's defaults). The flags --arms, --seeds, --lrs, --steps, --evals_per_run
and --selection_seeds override a grid's fields (experiments/study/protocol.py).
"""

import dataclasses
from typing import Optional

from experiments.study import arms as study_arms
from hybrid_jax.data import shipped

ALL_ARMS = tuple(study_arms.ARMS)
# Video's arms: those of the comparison concat - best single branch, the normalised concat (the fix
# its 256:1 width ratio asks for) and the late ensemble (which trains nothing); the widened
# branches, CNN∥CNN, LSTM∥LSTM and the other fixes are left out (budget: an lstm or concat run is
# up to ~25 minutes of a 2-core CPU). The cnn branch reads one key frame (<= 50% by construction);
# the lstm branch reads the same CNN on every frame, so it sees appearance and motion on its own.
VIDEO_ARMS = ('cnn', 'lstm', 'concat', 'concat_norm', 'ensemble')


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """How the study runs one shipped dataset (its config and margin: `shipped.SHIPPED`).

  seeds: default number of seeds (0..seeds-1); arms: default arms; lrs: default learning rates.
  evals_per_run: default validation evaluations (and checkpoints) per run.
  steps: default run length (None: the config's num_train_steps).
  note: why the dataset's default grid differs from the full protocol (printed in its report).
  early_stopping_patience: config.early_stopping_patience of every run (0: full-length runs).
  selection_seeds: choose the learning rate on the first K seeds only (None: all); the other seeds
    then run only at the chosen rate (a budget lever for slow datasets).
  test_when_trained: test each run as soon as it is trained, not only the chosen rate's after
    selection (its test outputs wait, unread, until selection on validation is done), so that a
    finished run needs no checkpoint any more: a study longer than one machine's stay resumes
    from its committed records (docs/study.md#a-study-that-spans-machines). The probe arm still
    reads its members' checkpoints in the test phase.
  """

  seeds: int = 10
  evals_per_run: int = 10
  selection_seeds: Optional[int] = 2
  arms: tuple[str, ...] = ALL_ARMS
  steps: Optional[int] = None
  note: str = ''
  lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
  early_stopping_patience: int = 0
  test_when_trained: bool = False


# The grids that differ from DatasetSpec's defaults, by shipped dataset.
_GRIDS: dict[str, DatasetSpec] = {
  # Video to convergence (issue 18): every arm trains until validation stops improving
  # (early stopping, patience 3 evaluations of 100 steps) within a 1,500-step cap; rates chosen on
  # 2 seeds; 8 seeds (with 3 primary comparisons the exact sign-flip test needs at least 7 to
  # pass Holm at 0.05). Arms: cnn, lstm, concat, concat_norm and the late ensemble; the widened
  # branches, copies and learned fusions are left out (budget). Hours of CPU, more than one
  # session: each run is tested when trained, so its committed records resume it elsewhere.
  'moving_digits': DatasetSpec(
    seeds=8,
    arms=VIDEO_ARMS,
    evals_per_run=15,
    selection_seeds=2,
    steps=1_500,
    early_stopping_patience=3,
    test_when_trained=True,
    note=(
      'Video grid: arms cnn, lstm, concat, concat_norm and the late ensemble; 8 seeds; rates '
      'chosen on seeds 0-1; runs until the validation accuracy stops improving (3 evaluations '
      'of 100 steps without a better one) within 1,500 steps.'
    ),
  ),
  # Text: 1,000 steps, half the config's 2,000, so that a dataset's 154 runs fit one session.
  'bbc_news': DatasetSpec(steps=1_000),
  'tweet_sentiment': DatasetSpec(steps=1_000),
}
# The synthetic controls (one study dataset per variant, 'controls/both', ...; each report states the
# verdict it was designed to give and the one it got): arms cnn, lstm, concat, the late ensemble and
# the probe (the fix arms answer questions about the real datasets; the controls test the
# instrument); 8 seeds (the primary family is 2 comparisons here: Holm needs n >= 7); rates chosen
# on 2 seeds; the config's 1,000 steps, 5 evaluations (experiments/results/controls_calibration.md).
CONTROL_ARMS = ('cnn', 'lstm', 'concat', 'ensemble', 'probe')
_CONTROL_GRID = DatasetSpec(
  seeds=8,
  arms=CONTROL_ARMS,
  evals_per_run=5,
  selection_seeds=2,
  note=(
    'Controls grid: arms cnn, lstm, concat, the late ensemble and the probe; 8 seeds; rates chosen '
    'on seeds 0-1; the config\'s 1,000 steps.'
  ),
)
for _name in shipped.study_names():
  if shipped.designed_verdict(_name):
    _GRIDS.setdefault(_name, _CONTROL_GRID)
# Every study dataset (the controls first, then the real datasets in the table's order), its grid.
DATASETS: dict[str, DatasetSpec] = {
  name: _GRIDS.get(name, DatasetSpec()) for name in shipped.study_names()
}
assert set(_GRIDS) <= set(DATASETS), f'_GRIDS names a dataset not studied: {list(_GRIDS)}'
