"""Finished study runs evaluated again on the XLA:CPU kernels every entry point now chooses.

Until 2026-11-26 the study's command line set no XLA:CPU flag, so the runs it had finished were
trained and tested on XLA's default kernels (YNNPACK on jaxlib 0.10.2: the kernels of
jax-ml/jax#39103, a wrong `jit` result for a vmapped matrix-vector product followed by a reduction
over >= 16k rows). This evaluates each selected run's kept checkpoint on its test split again, on the
kernels `platforms.choose_platform()` picks (YNNPACK off), and compares with the test outputs the
study saved: the largest difference in a per-example output, and the test metric before and after.

  python -m experiments.kernel_check --study_dir=workdirs/study \
      --datasets=japanese_vowels,weather_stations,bbc_news,tweet_sentiment --arms=cnn,lstm,concat,cnn_wide,lstm_wide
"""

import argparse
import json
import os
import sys

from hybrid_jax import platforms

platforms.choose_platform()  # Before JAX starts: the kernels every entry point chooses.

# pylint: disable=g-import-not-at-top,wrong-import-position
import ml_collections
import numpy as np

from experiments.study import outputs as study_outputs
from experiments.study import protocol as study_protocol
from experiments.study import runs as study_runs
from hybrid_jax import fileio
from hybrid_jax.data import datasets
# pylint: enable=g-import-not-at-top,wrong-import-position


def check_run(workdir: str) -> dict:
  """One run: its kept checkpoint's test outputs now against the ones saved by the study."""
  with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
    config = ml_collections.ConfigDict(json.load(f))
  result = study_runs.read_json(os.path.join(workdir, 'result.json'))
  split = study_runs.read_json(os.path.join(workdir, 'test.json'))['split']
  saved = study_outputs.load_outputs(workdir)
  now = study_outputs.predict_split(datasets.resolve(config), workdir, result['best_step'], split)
  key = 'prediction' if 'prediction' in saved else 'probs'
  return {
    'max_abs_difference': float(np.max(np.abs(now[key] - saved[key]))),
    'metric_saved': study_outputs.metric_of(saved),
    'metric_now': study_outputs.metric_of(now),
  }


def main(argv) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--study_dir', default='workdirs/study')
  parser.add_argument(
    '--datasets', default='japanese_vowels,weather_stations,bbc_news,tweet_sentiment'
  )
  parser.add_argument('--arms', default='cnn,lstm,concat,cnn_wide,lstm_wide')
  parser.add_argument('--out', default='experiments/results/kernel_check.md')
  args = parser.parse_args(argv)
  lines = [
    '# Finished study runs on the kernels the study now uses',
    '',
    f'Command: `python -m experiments.kernel_check --study_dir={args.study_dir} '
    f'--datasets={args.datasets} --arms={args.arms}`',
    '',
    f'XLA_FLAGS `{os.environ.get("XLA_FLAGS", "")}`. Each run at its arm\'s chosen rate, every '
    'seed: the kept checkpoint on the test split, against test_outputs.npz as the study saved it '
    '(trained and tested on XLA\'s default kernels). Output: probabilities, or the normalised '
    'prediction for regression.',
    '',
    '| dataset | arm | runs | largest output difference | largest metric difference | runs with the same metric |',
    '|---|---|---:|---:|---:|---:|',
  ]
  for dataset in args.datasets.split(','):
    summary = study_runs.read_json(os.path.join(args.study_dir, dataset, 'summary.json'))
    for arm in args.arms.split(','):
      lr = summary['chosen_lr'][arm]
      checks = [
        check_run(os.path.join(args.study_dir, dataset, arm, study_protocol.run_name(lr, seed)))
        for seed in summary['seeds']
      ]
      metric = [abs(c['metric_now'] - c['metric_saved']) for c in checks]
      row = (
        f'| {dataset} | {arm} | {len(checks)} | '
        f'{max(c["max_abs_difference"] for c in checks):.2e} | {max(metric):.2e} | '
        f'{sum(m == 0 for m in metric)} |'
      )
      print(row, flush=True)
      lines.append(row)
  fileio.write_text(args.out, '\n'.join(lines) + '\n')


if __name__ == '__main__':
  main(sys.argv[1:])
