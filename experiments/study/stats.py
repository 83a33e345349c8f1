"""Statistics of the study (numpy only): seed and two-level bootstraps, paired tests, Holm.

Conventions. Every per-seed array is float [num_seeds]; arms compared "paired" hold the same seeds in
the same order (seed k of arm A and seed k of arm B saw the same data order). Differences are
oriented by the caller so that positive means "A is better" (for a lower-is-better metric such as
MAE, pass `b - a`). All bootstraps use a caller-given `np.random.Generator`, so a report is
reproducible from its seed.

  mean, lo, hi = mean_ci(accuracy_S)                        # 95% CI of the mean over seeds
  d = paired_difference(concat_S, cnn_S)                     # mean, CI, P(better), wins, p-value
  adjusted = holm([d.p_value, ...])                          # family-wise correction of a dataset
  lo, hi = wilson_interval(correct=830, n=1000)              # test-set sampling CI of one accuracy
  lo, hi = mean_ci_over_examples(abs_errors_N)               # the same for an MAE
  mean, lo, hi = two_level_ci(scores_SN, blocks_N)            # over seeds and test examples (blocks)
  mean, lo, hi = two_level_paired_ci(a_SN, b_SN, blocks_N)    # the same for a paired difference
  adjusted = holm_by_family(p_values, ['primary', 'secondary', ...])  # Holm per declared family

The choice of a learning rate is in selection.py, CKA in cka.py.

Why the "expanded percentile" bootstrap (Hesterberg 2015, "What teachers should know about the
bootstrap", The American Statistician 69(4), sec. 3.5): with 5-10 seeds the plain percentile interval
of a mean is too narrow (it uses the plug-in variance and normal tails; it covers about 85% at a
nominal 95% for n = 5, see tests). The expanded version takes the percentiles at the adjusted level
alpha' = 2 * Phi(-sqrt(n / (n - 1)) * t_{n-1, 1 - alpha/2}), which restores nominal coverage for
normal data and keeps the bootstrap's shape (skewness) otherwise. Student-t quantiles are computed
here exactly for integer degrees of freedom (no scipy).
"""

import dataclasses
import itertools
import math
from typing import Optional, Sequence

import numpy as np

NUM_RESAMPLES = 10_000  # Bootstrap resamples per interval (seed counts are tiny: this is cheap).
EXACT_PERMUTATION_MAX_N = 16  # Sign-flip tests enumerate all 2^n flips up to this many pairs.


def _rng(rng: Optional[np.random.Generator]) -> np.random.Generator:
  return rng if rng is not None else np.random.default_rng(0)


def normal_cdf(x: float) -> float:
  return 0.5 * math.erfc(-x / math.sqrt(2.0))


def student_t_cdf(t: float, df: int) -> float:
  """P(T <= t) for Student's t with integer `df` >= 1 (closed form, Abramowitz & Stegun 26.7.3-4)."""
  if df < 1 or int(df) != df:
    raise ValueError(f'df must be a positive integer, got {df}.')
  theta = math.atan2(t, math.sqrt(df))
  s, c = math.sin(theta), math.cos(theta)
  if df % 2 == 1:  # A = (2 / pi) * (theta + sin cos (1 + 2/3 cos^2 + ... ))
    series, term = 0.0, 1.0
    if df > 1:
      series = term = 1.0
      for k in range(1, (df - 3) // 2 + 1):
        term *= c * c * (2 * k) / (2 * k + 1)
        series += term
      series *= c
    a = (2.0 / math.pi) * (theta + s * series) if df > 1 else (2.0 / math.pi) * theta
  else:  # A = sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
    series = term = 1.0
    for k in range(1, (df - 2) // 2 + 1):
      term *= c * c * (2 * k - 1) / (2 * k)
      series += term
    a = s * series
  return 0.5 * (1.0 + a)


def student_t_quantile(p: float, df: int) -> float:
  """The `p` quantile of Student's t with integer `df` (bisection on `student_t_cdf`)."""
  if not 0 < p < 1:
    raise ValueError(f'p must be in (0, 1), got {p}.')
  lo, hi = -1e3, 1e3
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    if student_t_cdf(mid, df) < p:
      lo = mid
    else:
      hi = mid
  return 0.5 * (lo + hi)


def expanded_alpha(n: int, alpha: float = 0.05) -> float:
  """Hesterberg's adjusted two-sided level for the expanded percentile interval of a mean."""
  if n < 2:
    return alpha
  return 2.0 * normal_cdf(-math.sqrt(n / (n - 1)) * student_t_quantile(1 - alpha / 2, n - 1))


def bootstrap_means(
  x_S: np.ndarray, num_resamples: int = NUM_RESAMPLES, rng: Optional[np.random.Generator] = None
) -> np.ndarray:
  """Means of `num_resamples` resamples (with replacement) of `x_S`: float [num_resamples].

  Also works on a batch `x_RS` (rows resampled independently), returning [rows, num_resamples].
  """
  x = np.asarray(x_S, np.float64)
  n = x.shape[-1]
  idx = _rng(rng).integers(0, n, size=x.shape[:-1] + (num_resamples, n))
  return np.take_along_axis(x[..., None, :], idx, axis=-1).mean(axis=-1)


def mean_ci(
  x_S: Sequence[float],
  alpha: float = 0.05,
  method: str = 'expanded_percentile',
  num_resamples: int = NUM_RESAMPLES,
  rng: Optional[np.random.Generator] = None,
) -> tuple[float, float, float]:
  """(mean, low, high): bootstrap 1 - alpha CI of the mean over seeds.

  Args:
    x_S: per-seed values [num_seeds] (or [rows, num_seeds]: one interval per row).
    method: 'expanded_percentile' (default; nominal coverage at small n, see module docstring) or
      'percentile' (the plain percentile interval).
  Returns:
    Floats, or arrays [rows] for a batch. One value gives (x, x, x).
  """
  x = np.asarray(x_S, np.float64)
  n = x.shape[-1]
  mean = x.mean(axis=-1)
  if n < 2:
    return mean, mean, mean
  if method == 'expanded_percentile':
    level = expanded_alpha(n, alpha)
  elif method == 'percentile':
    level = alpha
  else:
    raise ValueError(f"Unknown method {method!r}: use 'expanded_percentile' or 'percentile'.")
  means = bootstrap_means(x, num_resamples, rng)
  lo, hi = np.quantile(means, [level / 2, 1 - level / 2], axis=-1)
  return mean, lo, hi


def sign_flip_p_value(
  d_S: Sequence[float], num_resamples: int = 100_000, rng: Optional[np.random.Generator] = None
) -> float:
  """Two-sided paired permutation test of mean(d) = 0 (H0: each difference is symmetric about 0).

  Exact for n <= EXACT_PERMUTATION_MAX_N (all 2^n sign flips); Monte Carlo above, with the observed
  sign pattern counted (p = (1 + hits) / (1 + resamples)). Note the floor: with n pairs the exact
  p-value is at least 2 / 2^n unless every difference is 0 (n = 5 gives 0.0625, so a 5-seed study can
  never reach p < 0.05 with this test; n = 10 gives 0.002).
  """
  d = np.asarray(d_S, np.float64)
  n = len(d)
  if n == 0:
    raise ValueError('No paired differences.')
  observed = abs(d.mean())
  tol = 1e-12 * max(1.0, float(np.abs(d).max()))
  if n <= EXACT_PERMUTATION_MAX_N:
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    return float(np.mean(np.abs(signs @ d / n) >= observed - tol))
  signs = _rng(rng).choice((1.0, -1.0), size=(num_resamples, n))
  hits = np.sum(np.abs(signs @ d / n) >= observed - tol)
  return float((1 + hits) / (1 + num_resamples))


def min_p_value(n: int) -> float:
  """The smallest two-sided exact sign-flip p-value reachable with n pairs (2 / 2^n)."""
  return min(1.0, 2.0 / 2**n)


def holm(p_values: Sequence[float]) -> np.ndarray:
  """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the input order.

  Rejecting where adjusted < alpha controls the family-wise error rate at alpha.
  """
  p = np.asarray(p_values, np.float64)
  m = len(p)
  order = np.argsort(p, kind='stable')
  adjusted_sorted = np.maximum.accumulate((m - np.arange(m)) * p[order])
  out = np.empty(m)
  out[order] = np.minimum(adjusted_sorted, 1.0)
  return out


@dataclasses.dataclass(frozen=True)
class PairedDifference:
  """Arm A minus arm B over paired seeds, oriented so that positive = A better.

  mean, low, high: mean difference and its 95% bootstrap CI (expanded percentile).
  prob_better: P*(mean difference > 0) under the bootstrap over seeds: the fraction of resampled
    seed sets whose mean difference is > 0, ties counted half. With a flat prior this approximates
    the posterior probability that A's expected metric beats B's; it is not a p-value.
  wins: seeds where A beat B (ties count half), out of n.
  p_value: two-sided exact sign-flip permutation test (see `sign_flip_p_value`).
  """

  mean: float
  low: float
  high: float
  prob_better: float
  wins: float
  n: int
  p_value: float


def paired_difference(
  a_S: Sequence[float],
  b_S: Sequence[float],
  lower_is_better: bool = False,
  alpha: float = 0.05,
  num_resamples: int = NUM_RESAMPLES,
  rng: Optional[np.random.Generator] = None,
) -> PairedDifference:
  """Compares arm A with arm B seed by seed (a_S[k] and b_S[k] share seed k).

  Args:
    a_S, b_S: per-seed metrics [num_seeds], same seed order.
    lower_is_better: for errors (MAE): the difference is then b - a, so positive still = A better.
  """
  a, b = np.asarray(a_S, np.float64), np.asarray(b_S, np.float64)
  if a.shape != b.shape or a.ndim != 1:
    raise ValueError(f'Paired arms need equal 1-D shapes, got {a.shape} and {b.shape}.')
  d = b - a if lower_is_better else a - b
  rng = _rng(rng)
  mean, lo, hi = mean_ci(d, alpha, num_resamples=num_resamples, rng=rng)
  boot = bootstrap_means(d, num_resamples, rng)
  prob = float(np.mean(boot > 0) + 0.5 * np.mean(boot == 0))
  wins = float(np.sum(d > 0) + 0.5 * np.sum(d == 0))
  return PairedDifference(
    float(mean), float(lo), float(hi), prob, wins, len(d), sign_flip_p_value(d, rng=rng)
  )


def wilson_interval(correct: float, n: int, alpha: float = 0.05) -> tuple[float, float]:
  """Wilson score interval of a binomial proportion (one accuracy on n test examples)."""
  if n <= 0:
    raise ValueError('n must be positive.')
  z = -_normal_quantile(alpha / 2)
  p = correct / n
  denom = 1 + z * z / n
  centre = (p + z * z / (2 * n)) / denom
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
  return centre - half, centre + half


def _normal_quantile(p: float) -> float:
  """Standard normal quantile by bisection on erfc (exact to ~1e-12; only used for a few levels)."""
  lo, hi = -40.0, 40.0
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    if normal_cdf(mid) < p:
      lo = mid
    else:
      hi = mid
  return 0.5 * (lo + hi)


def mean_ci_over_examples(
  values_N: Sequence[float],
  alpha: float = 0.05,
  num_resamples: int = 2_000,
  rng: Optional[np.random.Generator] = None,
) -> tuple[float, float]:
  """Percentile bootstrap CI of a mean over test examples (e.g. per-example absolute errors -> MAE).

  Test sets hold hundreds to thousands of examples, where the plain percentile interval is accurate;
  resamples are drawn in chunks to bound memory.
  """
  x = np.asarray(values_N, np.float64)
  n = len(x)
  rng = _rng(rng)
  chunk = max(1, 2**22 // max(n, 1))
  means = np.concatenate(
    [
      x[rng.integers(0, n, size=(min(chunk, num_resamples - s), n))].mean(1)
      for s in range(0, num_resamples, chunk)
    ]
  )
  lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
  return float(lo), float(hi)


def per_example_scores(outputs: dict) -> np.ndarray:
  """Per-example score whose mean is the run's metric: float [N].

  Classification ('probs' [N, classes], 'label' [N]): 1.0 where the top class is the label, so the
  mean is the accuracy. Regression ('prediction', 'target' [N] normalized, 'scale'): the absolute
  error in original units, so the mean is the MAE.
  """
  if 'probs' in outputs:
    return (np.argmax(outputs['probs'], -1) == outputs['label']).astype(np.float64)
  errors = np.abs(np.asarray(outputs['prediction'], np.float64) - outputs['target'])
  return errors * float(outputs['scale'])


def _block_sums(x_SN: np.ndarray, blocks_N: Optional[Sequence]) -> tuple[np.ndarray, np.ndarray]:
  """(per-seed sums over each block [S, K], examples per block [K]); None: one block per example."""
  if blocks_N is None:
    return x_SN, np.ones(x_SN.shape[1])
  blocks = np.asarray(blocks_N)
  if blocks.shape != (x_SN.shape[1],):
    raise ValueError(f'Need one block id per test example: {blocks.shape} for {x_SN.shape[1]}.')
  _, inverse = np.unique(blocks, return_inverse=True)
  k = int(inverse.max()) + 1
  sums = np.stack([np.bincount(inverse, weights=row, minlength=k) for row in x_SN])
  return sums, np.bincount(inverse, minlength=k).astype(np.float64)


def two_level_means(
  x_SN: np.ndarray,
  blocks_N: Optional[Sequence] = None,
  num_resamples: int = NUM_RESAMPLES,
  rng: Optional[np.random.Generator] = None,
) -> np.ndarray:
  """Means of `num_resamples` two-level resamples of per-seed, per-example scores: float [R].

  Each resample draws the seeds with replacement and, independently, the test blocks with
  replacement (one block per example when `blocks_N` is None), and averages every drawn seed over
  every drawn block (a ratio mean, so unequal blocks are fine). The block draw is shared by all
  seeds of the resample because every seed is scored on the same test set (a crossed design; Owen
  2007, "The pigeonhole bootstrap"): an example that is hard for one seed is hard for all, and
  drawing examples independently per seed would average that shared variation away (see tests).
  Resampling the per-example differences of two arms is the paired version: both arms then get
  the same seed and example draw.

  Args:
    x_SN: scores [num_seeds, num_examples] (e.g. `per_example_scores` of each seed's run).
    blocks_N: one id per test example; examples with the same id are resampled together (e.g. the
      day of an hourly window whose neighbours share most of their inputs). None: each example is
      its own block.
  """
  x = np.asarray(x_SN, np.float64)
  if x.ndim != 2:
    raise ValueError(f'Scores must be [seeds, examples], got shape {x.shape}.')
  sums_SK, counts_K = _block_sums(x, blocks_N)
  s, k = sums_SK.shape
  rng = _rng(rng)
  chunk = max(1, 2**22 // max(k, s))
  means = []
  for start in range(0, num_resamples, chunk):
    r = min(chunk, num_resamples - start)
    seeds = rng.integers(0, s, size=(r, s))
    seed_counts = np.bincount((seeds + s * np.arange(r)[:, None]).ravel(), minlength=r * s)
    blocks = rng.integers(0, k, size=(r, k))
    block_counts = np.bincount((blocks + k * np.arange(r)[:, None]).ravel(), minlength=r * k)
    block_counts = block_counts.reshape(r, k).astype(np.float64)
    seed_counts = seed_counts.reshape(r, s).astype(np.float64)
    numerator = np.einsum('rk,rk->r', seed_counts @ sums_SK, block_counts)
    means.append(numerator / (s * (block_counts @ counts_K)))
  return np.concatenate(means)


def effective_sample_size(x_SN: np.ndarray, blocks_N: Optional[Sequence] = None) -> int:
  """Welch-Satterthwaite sample size (df + 1) of the grand mean's two variance components.

  v_seed = var(seed means) / S and v_block = var(block totals about the mean) / (K c^2) (c: mean
  block size); df = (v_seed + v_block)^2 / (v_seed^2 / (S - 1) + v_block^2 / (K - 1)), which lies
  between min(S, K) - 1 and S + K - 2: the seed count when seeds dominate, more when the test set
  does. Rounded down (conservative).
  """
  x = np.asarray(x_SN, np.float64)
  sums_SK, counts_K = _block_sums(x, blocks_N)
  s, k = sums_SK.shape
  if s < 2 or k < 2:
    raise ValueError(f'A two-level CI needs >= 2 seeds and >= 2 blocks, got {s} and {k}.')
  mean = x.mean()
  v_seed = float(np.var(x.mean(axis=1), ddof=1)) / s
  totals = sums_SK.mean(axis=0) - mean * counts_K
  v_block = float(np.sum(totals**2)) / (k * (k - 1) * counts_K.mean() ** 2)
  denominator = v_seed**2 / (s - 1) + v_block**2 / (k - 1)
  if denominator == 0:
    return min(s, k)
  df = (v_seed + v_block) ** 2 / denominator
  return int(min(max(math.floor(df), min(s, k) - 1), s + k - 2)) + 1


def two_level_ci(
  x_SN: np.ndarray,
  blocks_N: Optional[Sequence] = None,
  alpha: float = 0.05,
  num_resamples: int = NUM_RESAMPLES,
  rng: Optional[np.random.Generator] = None,
) -> tuple[float, float, float]:
  """(mean, low, high): 1 - alpha CI of the mean over seeds and test examples (or blocks).

  The interval a new test set would also fall in: it combines the seed-to-seed spread with the
  test set's sampling (`two_level_means`). Percentiles are taken at Hesterberg's expanded level, as
  `mean_ci` does for seeds alone, for the effective sample size of the two components
  (`effective_sample_size`): with few seeds and little example noise this is the seed interval's
  width; the bootstrap itself slightly over-counts the seed x example interaction (Owen 2007), so
  it errs on the wide side (tests: coverage on simulated seeds x correlated blocks).
  """
  x = np.asarray(x_SN, np.float64)
  if x.ndim != 2:
    raise ValueError(f'Scores must be [seeds, examples], got shape {x.shape}.')
  level = expanded_alpha(effective_sample_size(x, blocks_N), alpha)
  means = two_level_means(x, blocks_N, num_resamples, rng)
  lo, hi = np.quantile(means, [level / 2, 1 - level / 2])
  return float(x.mean()), float(lo), float(hi)


def two_level_paired_ci(
  a_SN: np.ndarray,
  b_SN: np.ndarray,
  blocks_N: Optional[Sequence] = None,
  lower_is_better: bool = False,
  alpha: float = 0.05,
  num_resamples: int = NUM_RESAMPLES,
  rng: Optional[np.random.Generator] = None,
) -> tuple[float, float, float]:
  """(mean, low, high) of arm A minus arm B over seeds and test examples, positive = A better.

  a_SN[k, i] and b_SN[k, i] are seed k's scores of test example i in each arm (same seeds, same
  examples, same order); the resample is shared by both arms (paired). `lower_is_better`: b - a.
  """
  a, b = np.asarray(a_SN, np.float64), np.asarray(b_SN, np.float64)
  if a.shape != b.shape:
    raise ValueError(f'Paired arms need the same seeds and examples, got {a.shape} and {b.shape}.')
  return two_level_ci(b - a if lower_is_better else a - b, blocks_N, alpha, num_resamples, rng)


def holm_by_family(p_values: Sequence[float], families: Sequence[str]) -> np.ndarray:
  """Holm-adjusted p-values with each family corrected on its own (families[i] names p_values[i]).

  The family whose comparisons enter a decision is declared before the data are seen; secondary
  comparisons get their own correction so that reporting them costs the decision no power.
  """
  p = np.asarray(p_values, np.float64)
  names = list(families)
  if len(names) != len(p):
    raise ValueError(f'One family per p-value: {len(names)} families for {len(p)} p-values.')
  out = np.empty(len(p))
  for name in dict.fromkeys(names):
    idx = [i for i, f in enumerate(names) if f == name]
    out[idx] = holm(p[idx])
  return out
