"""experiments/study/selection.py: the choice on validation and the grid's edge."""

import pytest

from experiments.study import selection


def test_select_best_breaks_metric_ties_by_validation_loss():
  # Accuracy on 54 validation series moves in steps of 1/54: ties are common.
  acc = [50 / 54, 53 / 54, 53 / 54, 52 / 54]
  assert selection.select_best(acc) == 1  # Without losses: the first of the tied.
  # Lower loss among the tied:
  assert selection.select_best(acc, losses=[0.1, 0.30, 0.20, 0.05]) == 2
  assert selection.select_best([3.1, 3.1 + 1e-12, 3.4], [0.5, 0.4, 0.1], lower_is_better=True) == 1
  assert selection.select_best([None, 0.5, float('nan')], [0.0, 1.0, 0.0]) == 1  # Diverged: never.
  assert selection.select_best([0.9, 0.9], [None, 0.3]) == 1  # A missing loss loses the tie.
  with pytest.raises(ValueError, match='finite validation metric'):
    selection.select_best([None, float('nan')])


@pytest.mark.parametrize(
  'lrs,means,edge,next_rates',
  [
    ((3e-4, 1e-3, 3e-3), (0.90, 0.92, 0.95), 'largest', (1e-2,)),
    ((3e-4, 1e-3, 3e-3), (0.95, 0.92, 0.90), 'smallest', (1e-4,)),
    ((3e-4, 1e-3, 3e-3), (0.90, 0.95, 0.92), None, ()),
    ((1e-3, 2e-3, 4e-3), (0.90, 0.92, 0.95), 'largest', (8e-3,)),  # The grid's own ratio (2).
    ((1e-3,), (0.9,), 'only', (3e-4, 3e-3)),  # One rate: both neighbours, x / sqrt(10) and x.
    # Snapped onto the 1-3 grid, the next rate would be one tried already: 2 s.f. instead.
    ((3e-3, 3.3e-3), (0.95, 0.90), 'smallest', (2.7e-3,)),  # 2.73e-3, not 3e-3.
    ((1e-2, 1.05e-2), (0.90, 0.95), 'largest', (1.1e-2,)),  # 1.1025e-2, not 1e-2.
    ((3e-3, 3.01e-3), (0.95, 0.90), 'smallest', (3e-3 / (3.01e-3 / 3e-3),)),  # 2 s.f. is 3.0e-3.
  ],
)
def test_grid_edge_says_which_rate_to_add(lrs, means, edge, next_rates):
  result = selection.grid_edge(lrs, means)
  assert result.edge == edge and result.next_rates == pytest.approx(next_rates, rel=1e-9)
  assert not any(min(lrs) <= rate <= max(lrs) for rate in result.next_rates)  # Each one is new.


def test_grid_edge_uses_the_loss_tie_break_and_lower_is_better():
  # Tied at the top between 1e-3 and 3e-3: the lower validation loss (1e-3) wins, inside the grid.
  tied = selection.grid_edge((3e-4, 1e-3, 3e-3), (0.9, 0.95, 0.95), val_losses=(0.3, 0.1, 0.2))
  assert (tied.chosen, tied.edge) == (1e-3, None)
  mae = selection.grid_edge((3e-4, 1e-3, 3e-3), (4.0, 3.8, 3.6), lower_is_better=True)
  assert (mae.chosen, mae.edge, mae.next_rates) == (3e-3, 'largest', (1e-2,))
