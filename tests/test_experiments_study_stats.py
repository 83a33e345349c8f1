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


# Two-level (seeds x test examples) and block bootstraps: coverage on simulated data with a known
# true mean. Scores x[s, i] = TRUE + seed effect + block effect (shared by the block's examples and
# by every seed: all seeds are scored on the same test set) + noise.
TRUE = 0.3


def _crossed(rng, seeds=8, blocks=20, per_block=6, sd_seed=0.2, sd_block=1.0, sd_noise=1.0):
  seed_S1 = rng.normal(0, sd_seed, (seeds, 1))
  block_1N = np.repeat(rng.normal(0, sd_block, blocks), per_block)[None]
  x_SN = TRUE + seed_S1 + block_1N + rng.normal(0, sd_noise, (seeds, blocks * per_block))
  return x_SN, np.repeat(np.arange(blocks), per_block)


def _nested_ci(x_SN, rng, num_resamples=300, alpha=0.05):
  """The reference the crossed design rules out: examples drawn independently within each seed."""
  s, n = x_SN.shape
  seeds = rng.integers(0, s, (num_resamples, s, 1))
  examples = rng.integers(0, n, (num_resamples, s, n))
  means = x_SN[seeds, examples].mean(axis=(1, 2))
  return np.quantile(means, [alpha / 2, 1 - alpha / 2])


def _two_level_coverage(reps=160, **kwargs):
  rng = np.random.default_rng(7)
  hits = {'blocks': 0, 'examples': 0, 'nested': 0, 'seeds': 0}
  for _ in range(reps):
    x, blocks = _crossed(rng, **kwargs)
    _, lo, hi = stats.two_level_ci(x, blocks, num_resamples=500, rng=rng)
    hits['blocks'] += lo <= TRUE <= hi
    _, lo, hi = stats.two_level_ci(x, None, num_resamples=300, rng=rng)
    hits['examples'] += lo <= TRUE <= hi
    lo, hi = _nested_ci(x, rng)
    hits['nested'] += lo <= TRUE <= hi
    _, lo, hi = stats.mean_ci(x.mean(1), num_resamples=500, rng=rng)
    hits['seeds'] += lo <= TRUE <= hi
  return {k: v / reps for k, v in hits.items()}


def test_block_two_level_ci_covers_and_the_iid_and_seed_only_intervals_undercover():
  coverage = _two_level_coverage()
  # 160 reps: the binomial s.e. at 0.95 is 0.017.
  assert 0.9 <= coverage['blocks'] <= 0.99, coverage
  # Correlated examples resampled one by one: the block variance is undercounted by ~6x.
  assert coverage['examples'] < 0.8, coverage
  # Independent example draws per seed average the shared example effects away.
  assert coverage['nested'] < 0.6, coverage
  # One fixed test set: the seed-only interval ignores the test set's sampling.
  assert coverage['seeds'] < 0.7, coverage


def test_two_level_ci_covers_when_seeds_dominate():
  coverage = _two_level_coverage(reps=120, seeds=5, sd_seed=1.0, sd_block=0.2)
  assert 0.9 <= coverage['blocks'] <= 0.995, coverage


def test_two_level_ci_without_example_variation_is_the_seed_interval():
  seeds_S = np.random.default_rng(8).normal(0.8, 0.05, size=6)
  x_SN = np.repeat(seeds_S[:, None], 50, axis=1)
  assert stats.effective_sample_size(x_SN) == 6
  mean, lo, hi = stats.two_level_ci(x_SN, num_resamples=20_000, rng=np.random.default_rng(0))
  ref = stats.mean_ci(seeds_S, num_resamples=20_000, rng=np.random.default_rng(1))
  assert mean == pytest.approx(ref[0])
  assert (lo, hi) == pytest.approx(ref[1:], abs=0.1 * seeds_S.std())


def test_paired_two_level_ci_shares_the_resample_across_arms():
  rng = np.random.default_rng(9)
  b_SN, _ = _crossed(rng, sd_seed=1.0, sd_block=1.0)
  # A constant improvement: every resample sees it exactly, however large the shared noise.
  assert stats.two_level_paired_ci(b_SN + 0.05, b_SN, rng=rng) == pytest.approx((0.05,) * 3)
  # Lower-is-better (an error): b - a, positive = A better.
  mean, lo, hi = stats.two_level_paired_ci(b_SN - 0.05, b_SN, lower_is_better=True, rng=rng)
  assert mean == pytest.approx(0.05) and lo == pytest.approx(0.05) and hi == pytest.approx(0.05)
  with pytest.raises(ValueError, match='same seeds and examples'):
    stats.two_level_paired_ci(b_SN, b_SN[:, :-1])


def test_block_resample_of_unequal_blocks_is_a_ratio_mean():
  x_SN = np.array([[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
  blocks = np.array([5, 5, 5, 9])  # Ids need not be contiguous: one block of 3, one of 1.
  means = stats.two_level_means(x_SN, blocks, num_resamples=4_000, rng=np.random.default_rng(0))
  # Blocks drawn (both, twice the big one, twice the small one) w.p. 1/2, 1/4, 1/4 -> means
  # 1/4, 0, 1: each resample's mean weighs its examples, not its blocks.
  values, counts = np.unique(np.round(means, 6), return_counts=True)
  assert list(values) == [0.0, 0.25, 1.0]
  np.testing.assert_allclose(counts / 4_000, [0.25, 0.5, 0.25], atol=0.03)
  with pytest.raises(ValueError, match='one block id per test example'):
    stats.two_level_means(x_SN, blocks[:3])


def test_per_example_scores_average_to_accuracy_and_mae():
  probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
  scores = stats.per_example_scores({'probs': probs, 'label': np.array([0, 0, 0])})
  np.testing.assert_array_equal(scores, [1.0, 0.0, 1.0])
  outputs = {'prediction': np.array([0.5, -1.0]), 'target': np.array([0.0, 0.0]), 'scale': 4.0}
  np.testing.assert_allclose(stats.per_example_scores(outputs), [2.0, 4.0])
