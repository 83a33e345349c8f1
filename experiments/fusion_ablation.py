"""Is concatenating CNN and LSTM outputs worth it? Branch and fusion ablation on one task.

Trains the same task with each branch alone, and with both branches joined by every fusion, over
several seeds, and prints a markdown table of the final metrics on config.dataset.eval_split
(validation by default; the committed tables used test) as mean ± std over seeds. Every variant
trains for the same steps with the same optimizer; the metric is the one at the *last* step (no
checkpoint selection).

  python -m experiments.fusion_ablation --config=configs/sensor.py --seeds=0,1,2 \
      --config.dataset.eval_split=test --out=experiments/results/fusion_ablation_sensor.md
  python -m experiments.fusion_ablation --config=configs/text.py --config.num_train_steps=500

Runs go to --workdir/<variant>_seed<k> (a finished run there is re-evaluated, not retrained).
"""

import copy
import os
import sys
import time

from hybrid_jax import platforms

platforms.choose_platform()  # Before JAX starts: the CPU, quietly, where CUDA has no driver.

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags
import numpy as np

from hybrid_jax import cli
from hybrid_jax import input_kinds
from hybrid_jax import train
from hybrid_jax.data import datasets
# pylint: enable=g-import-not-at-top,wrong-import-position

# (label, branches, fusion): each branch alone, then both branches under every fusion.
VARIANTS = [('cnn only', 'cnn', 'concat'), ('lstm only', 'lstm', 'concat')] + [
  # The fusions this (superseded) ablation compared; concat_norm and the other fixes are arms of
  # the study (experiments/study/arms.py).
  (f'both, {fusion}', 'both', fusion)
  for fusion in ('concat', 'gated', 'projected_sum')
]


def variant_config(config, branches: str, fusion: str, seed: int):
  config = copy.deepcopy(config)
  config.model.branches, config.model.fusion, config.seed = branches, fusion, seed
  return config


def count_params(config) -> int:
  model = input_kinds.create_model(config)
  variables = jax.eval_shape(model.init, jax.random.key(0), input_kinds.dummy_batch(config))
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(variables['params']))


def headline_metrics(config) -> list[str]:
  return (
    ['mae_original_units', 'rmse_original_units']
    if input_kinds.is_regression(config)
    else ['accuracy', 'loss']
  )


def run_ablation(config, seeds: list[int], workdir: str) -> list[dict[str, object]]:
  """One row per variant: parameter count, per-metric (mean, std) over seeds, seconds per run."""
  config = datasets.resolve(config).config  # config.head (and None model fields) from the data.
  rows = []
  for label, branches, fusion in VARIANTS:
    results, seconds = [], []
    for seed in seeds:
      run_config = variant_config(config, branches, fusion, seed)
      start = time.perf_counter()
      results.append(
        train.train_and_evaluate(
          run_config, os.path.join(workdir, f'{branches}_{fusion}_seed{seed}')
        )
      )
      seconds.append(time.perf_counter() - start)
    stats = {
      name: (float(np.mean([r[name] for r in results])), float(np.std([r[name] for r in results])))
      for name in headline_metrics(config)
    }
    rows.append(
      {
        'variant': label,
        'params': count_params(run_config),
        'stats': stats,
        'seconds': float(np.mean(seconds)),
      }
    )
  return rows


def format_rows(config, rows: list[dict[str, object]], seeds: list[int]) -> str:
  """The markdown table of `run_ablation`'s rows (metrics: those of the rows, i.e. of the head)."""
  names = list(rows[0]['stats'])
  lines = [
    f'{config.task} on {config.dataset.name}: {config.num_train_steps} steps, batch '
    f'{config.batch_size}, lr {config.learning_rate} ({config.lr_schedule}), seeds '
    f'{",".join(map(str, seeds))}; final-step {config.dataset.eval_split} metrics, mean ± std over '
    'seeds.',
    '',
    '| variant | params | ' + ' | '.join(names) + ' | s / run |',
    '|---|---:|' + '---:|' * len(names) + '---:|',
  ]
  for row in rows:
    cells = [f'{row["stats"][n][0]:.4f} ± {row["stats"][n][1]:.4f}' for n in names]
    lines.append(
      f'| {row["variant"]} | {row["params"]:,} | '
      + ' | '.join(cells)
      + f' | {row["seconds"]:.0f} |'
    )
  return '\n'.join(lines)


def define_flags() -> None:
  """Command-line flags (defined only when run as a script, so tests can import this module)."""
  config_flags.DEFINE_config_file('config', None, 'Task config, e.g. configs/sensor.py.')
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds per variant.')
  flags.DEFINE_string('workdir', '/tmp/hybrid_jax_ablation', 'Where the runs go.')
  flags.DEFINE_string('out', None, 'Also write the markdown table to this file.')


def main(argv):
  del argv
  # Progress lines and tables are printed; library INFO is noise.
  logging.set_verbosity(logging.WARNING)
  args = flags.FLAGS
  config = args.config
  seeds = [int(s) for s in args.seeds]
  table = format_rows(config, run_ablation(config, seeds, args.workdir), seeds)
  print(table)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w', encoding='utf-8') as f:
      command = ' '.join(['python -m experiments.fusion_ablation', *sys.argv[1:]])
      f.write(f'# Fusion ablation\n\n`{command}`\n\n{table}\n')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
