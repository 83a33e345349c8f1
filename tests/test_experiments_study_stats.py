"""experiments/study/stats.py on synthetic inputs with known answers."""

import itertools
import math

import numpy as np
import pytest

from experiments.study import stats


@pytest.mark.parametrize(
  'df,expected', [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423)]
)
def test_student_t_quantiles_match_tables(df, expected):
  assert stats.student_t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)
  assert stats.student_t_cdf(0.0, df) == pytest.approx(0.5)


def _coverage(method: str, n: int, reps: int = 400, num_resamples: int = 2_000) -> float:
  rng = np.random.default_rng(123)
  x_RS = rng.normal(loc=3.0, scale=2.0, size=(reps, n))  # True mean 3.
  _, lo, hi = stats.mean_ci(x_RS, method=method, num_resamples=num_resamples, rng=rng)
  return float(np.mean((lo <= 3.0) & (3.0 <= hi)))


@pytest.mark.parametrize('n', [5, 10])
def test_expanded_bootstrap_ci_covers_the_true_mean_at_the_nominal_rate(n):
  coverage = _coverage('expanded_percentile', n)
  assert 0.92 <= coverage <= 0.985, coverage  # 400 reps: the binomial s.e. at 0.95 is 0.011.


def test_plain_percentile_bootstrap_undercovers_with_five_seeds():
  # The reason the study uses the expanded interval (module docstring): ~85% at nominal 95%.
  assert _coverage('percentile', 5) < 0.91


def test_mean_ci_of_one_row_and_of_a_constant():
  mean, lo, hi = stats.mean_ci([0.5, 0.5, 0.5, 0.5])
  assert mean == lo == hi == 0.5
  mean, lo, hi = stats.mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
  assert mean == 3.0 and 1.0 <= lo < 3.0 < hi <= 5.0


def test_paired_difference_of_identical_arms_is_centred_on_zero():
  a = np.random.default_rng(0).normal(0.8, 0.05, size=8)
  d = stats.paired_difference(a, a.copy())
  assert d.mean == 0 and d.low == 0 and d.high == 0
  assert d.prob_better == 0.5 and d.wins == 4.0 and d.p_value == 1.0


def test_paired_difference_removes_the_shared_seed_effect():
  rng = np.random.default_rng(1)
  seed_effect = rng.normal(0, 0.05, size=10)  # Large, shared by both arms (same data order).
  noise_a, noise_b = rng.normal(0, 0.002, size=(2, 10))
  a, b = 0.80 + seed_effect + noise_a, 0.80 + seed_effect + noise_b
  same = stats.paired_difference(a, b)
  assert same.low < 0 < same.high  # Identical expected metrics: 0 inside the CI.
  better = stats.paired_difference(a + 0.01, b)
  assert better.low > 0 and better.prob_better > 0.99 and better.wins == 10
  assert better.p_value == pytest.approx(2 / 2**10)  # Every sign agrees: the exact floor.
  assert better.mean == pytest.approx(0.01 + np.mean(noise_a - noise_b))


def test_lower_is_better_flips_the_orientation():
  mae_a, mae_b = np.array([3.0, 3.1, 2.9, 3.05]), np.array([3.5, 3.6, 3.4, 3.55])
  d = stats.paired_difference(mae_a, mae_b, lower_is_better=True)
  assert d.mean == pytest.approx(0.5) and d.prob_better == 1.0 and d.wins == 4


def test_sign_flip_p_value_matches_hand_enumeration():
  d = np.array([0.3, -0.1, 0.2, 0.4])
  flips = [np.dot(s, d) / 4 for s in itertools.product((1, -1), repeat=4)]
  expected = np.mean(np.abs(flips) >= abs(d.mean()) - 1e-12)
  assert stats.sign_flip_p_value(d) == pytest.approx(expected)
  assert expected == pytest.approx(4 / 16)  # Means 0.2 (observed), 0.25, and their negatives.
  assert stats.min_p_value(5) == pytest.approx(0.0625)


def test_sign_flip_monte_carlo_agrees_with_exact_above_the_enumeration_limit():
  d = np.random.default_rng(3).normal(0.3, 1.0, size=stats.EXACT_PERMUTATION_MAX_N)
  exact = stats.sign_flip_p_value(d)
  longer = np.concatenate([d, d])  # 32 pairs: Monte Carlo; check it is a valid, small p.
  p = stats.sign_flip_p_value(longer, num_resamples=20_000, rng=np.random.default_rng(0))
  assert 0 < p < exact and p >= 1 / 20_001


def test_holm_on_a_hand_computed_example():
  # Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max(0.06, 0.04) = 0.06.
  np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
  np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])  # Capped at 1.
  np.testing.assert_allclose(stats.holm([0.02]), [0.02])  # One test: unchanged.


def test_wilson_interval_known_values():
  lo, hi = stats.wilson_interval(830, 1000)
  assert lo == pytest.approx(0.80547, abs=1e-4) and hi == pytest.approx(0.85201, abs=1e-4)
  lo, hi = stats.wilson_interval(0, 20)  # Never below 0 (unlike the Wald interval).
  assert lo == pytest.approx(0.0, abs=1e-12) and 0 < hi < 0.2


def test_example_bootstrap_of_an_mae_brackets_the_mean_with_the_normal_width():
  errors = np.abs(np.random.default_rng(4).normal(0, 3.0, size=2_000))
  lo, hi = stats.mean_ci_over_examples(errors, rng=np.random.default_rng(0))
  half_normal = 1.96 * errors.std(ddof=1) / math.sqrt(len(errors))
  assert lo < errors.mean() < hi
  assert (hi - lo) / 2 == pytest.approx(half_normal, rel=0.1)


def test_cka_identity_orthogonal_and_scale_invariance_and_independence():
  rng = np.random.default_rng(5)
  x = rng.normal(size=(400, 20)) @ rng.normal(size=(20, 20))  # Correlated features.
  q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
  assert stats.linear_cka(x, x) == pytest.approx(1.0)
  assert stats.linear_cka(x, 3.7 * x @ q) == pytest.approx(1.0)
  assert stats.linear_cka(x, x + 5.0) == pytest.approx(1.0)  # Centred: offsets do not matter.
  assert stats.linear_cka(x, rng.normal(size=(400, 10))) < 0.1
  assert stats.linear_cka(x, x[:, :5]) < 1.0  # A subset of the features is less than identical.


def test_cka_wide_features_use_the_gram_form_and_debiasing_removes_the_bias():
  rng = np.random.default_rng(6)
  x, y = rng.normal(size=(200, 1_000)), rng.normal(size=(200, 300))  # Wider than N.
  plain = stats.linear_cka(x, y)
  xc, yc = x - x.mean(0), y - y.mean(0)
  direct = np.sum((yc.T @ xc) ** 2) / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
  assert plain == pytest.approx(direct)
  assert plain > 0.5  # Independent but wide: the plain estimate is strongly biased upwards.
  assert abs(stats.linear_cka(x, y, debiased=True)) < 0.05
  assert stats.linear_cka(x, 2 * x, debiased=True) == pytest.approx(1.0)
