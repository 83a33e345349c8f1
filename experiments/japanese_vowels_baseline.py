"""A non-deep baseline for japanese_vowels: logistic regression on per-channel summary statistics.

Features of a series [time, 12]: per channel mean, std, min, max, first and last value (72), plus
the series length; standardized with train statistics. The inverse regularization C is picked on
the validation split from a fixed grid (ties: the smaller C); the model is fit on the train split
only (the same 216 series the network trains on) and scored once on test. Needs scikit-learn
(not a hybrid_jax dependency: `pip install scikit-learn`).

  python -m experiments.japanese_vowels_baseline \\
      --out=experiments/results/japanese_vowels_baseline.md
"""

import argparse
import platform
import sys

import numpy as np

from hybrid_jax.data.builders import japanese_vowels

GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def summary_features(series: list[np.ndarray]) -> np.ndarray:
  """float64 [n, 12 * 6 + 1]: per-channel mean, std, min, max, first, last; and the length."""
  rows = []
  for x in series:
    x = x.astype(np.float64)
    rows.append(np.concatenate([x.mean(0), x.std(0), x.min(0), x.max(0), x[0], x[-1], [len(x)]]))
  return np.stack(rows)


def run() -> dict[str, object]:
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top

  splits = japanese_vowels.load_splits()
  features = {s: summary_features(x) for s, (x, _) in splits.items()}
  labels = {s: y for s, (_, y) in splits.items()}
  mean, std = features['train'].mean(0), features['train'].std(0) + 1e-12
  features = {s: (f - mean) / std for s, f in features.items()}

  def fit(c):
    return LogisticRegression(C=c, max_iter=5000).fit(features['train'], labels['train'])

  validation = {c: fit(c).score(features['validation'], labels['validation']) for c in GRID}
  best_c = max(GRID, key=lambda c: (validation[c], -c))
  return {
    'validation_accuracy_by_C': validation,
    'C': best_c,
    'validation_accuracy': validation[best_c],
    'test_accuracy': fit(best_c).score(features['test'], labels['test']),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default='', help='Also write the result table here (markdown).')
  args = parser.parse_args()
  import sklearn  # pylint: disable=g-import-not-at-top

  result = run()
  command = ' '.join(['python -m experiments.japanese_vowels_baseline', *sys.argv[1:]])
  lines = [
    '# japanese_vowels: logistic regression on per-channel summary statistics',
    '',
    f'Command: `{command}`  ',
    f'Python {platform.python_version()}, numpy {np.__version__}, scikit-learn {sklearn.__version__}.',
    '',
    'Train 216 / validation 54 / test 370 series (the splits of the japanese_vowels builder).',
    '',
    '| C | validation accuracy |',
    '|---:|---:|',
    *[f'| {c:g} | {a:.4f} |' for c, a in result['validation_accuracy_by_C'].items()],
    '',
    f"Chosen on validation: C={result['C']:g} (validation {result['validation_accuracy']:.4f}); "
    f"**test accuracy {result['test_accuracy']:.4f}**.",
    '',
  ]
  text = '\n'.join(lines)
  print(text)
  if args.out:
    with open(args.out, 'w', encoding='utf-8') as f:
      f.write(text)


if __name__ == '__main__':
  main()
