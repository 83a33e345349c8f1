"""Calibration of the synthetic controls: what each branch reads at the committed knobs.

Trains cnn only, lstm only and concat (config.model.branches = cnn | lstm | both) of
configs/controls.py on every controls variant for a few seeds at one learning rate, plus the lstm
only arm on controls/local at the study's other learning rates and the next one outward (the LSTM
must not read the local cue at any of them), and writes markdown tables of the validation accuracy
at the last step and the best of each run's evaluations, mean and range over seeds. The knobs
(T, σ, D) are the builder's (hybrid_jax/data/builders/controls.py); change them there and re-run.

  python -m experiments.controls_calibration --out=experiments/results/controls_calibration.md

Runs go to --workdir/<variant>_<arm>_lr<lr>_seed<k> (a finished run there is re-evaluated, not
retrained); the datasets are prepared on first use into TFDS's data dir (or --data_dir).
"""

import json
import os
import platform
import sys
import time

from hybrid_jax import platforms

platforms.choose_platform()  # Before JAX starts: the CPU, quietly, where CUDA has no driver.

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging
import flax
import jax
import numpy as np
import tensorflow_datasets as tfds

from configs import controls as controls_config
from hybrid_jax import cli
from hybrid_jax import fileio
from hybrid_jax import train
from hybrid_jax.data import datasets
from hybrid_jax.data.builders import controls
# pylint: enable=g-import-not-at-top,wrong-import-position

# Arm -> config.model.branches.
ARMS = {'cnn only': 'cnn', 'lstm only': 'lstm', 'concat': 'both'}
# The study's learning rates and the next one outward (3e-4, 3e-3, 1e-2 besides --lr).
LSTM_LOCAL_LRS = (3e-4, 1e-3, 3e-3, 1e-2)


def run_config(variant: str, branches: str, lr: float, seed: int, args) -> object:
  config = controls_config.get_config()
  config.dataset.name = f'controls/{variant}'
  config.dataset.data_dir = args.data_dir
  config.model.branches = branches
  config.learning_rate = lr
  config.seed = seed
  config.num_train_steps = args.steps or config.num_train_steps
  # The config's evaluations (the best one is reported beside the final); one checkpoint.
  steps = config.num_train_steps
  config.checkpoint_every_steps = config.log_every_steps = steps
  return config


def train_one(variant: str, branches: str, lr: float, seed: int, args) -> dict[str, float]:
  """{'final', 'best'} validation accuracy and 'seconds' of one run."""
  config = run_config(variant, branches, lr, seed, args)
  workdir = os.path.join(args.workdir, f'{variant}_{branches}_lr{lr:g}_seed{seed}')
  start = time.perf_counter()
  final = train.train_and_evaluate(config, workdir)['accuracy']
  seconds = time.perf_counter() - start
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    evals = [r['accuracy'] for r in map(json.loads, f) if r['split'] == 'eval']
  print(
    f'controls/{variant} {branches} lr={lr:g} seed={seed}: accuracy {final:.4f} (evaluations: '
    f'{", ".join(f"{a:.3f}" for a in evals)}; {seconds:.0f} s)',
    flush=True,
  )
  return {'final': float(final), 'best': float(max(evals)), 'evals': len(evals), 'seconds': seconds}


def _cell(values: list[float]) -> str:
  return f'{np.mean(values):.3f} ({min(values):.3f}–{max(values):.3f})'


# The label of each variant, in the cues a (local) and b (order).
LABELS = {'local': 'a', 'order': 'b', 'both': '2a + b', 'redundant': 'a (= b)', 'xor': 'a ⊕ b'}


def _table(runs: dict, key: str, verdicts: bool) -> list[str]:
  """Variant x arm: `key` ('final' | 'best') accuracy, mean (min–max) over seeds."""
  lines = [
    '| variant | label | cnn only | lstm only | concat | concat − best single |'
    + (' designed verdict |' if verdicts else ''),
    '|---|---|---:|---:|---:|---:|' + ('---|' if verdicts else ''),
  ]
  for variant in controls.VARIANTS:
    values = {arm: [r[key] for r in runs[(variant, arm)]] for arm in ARMS}
    best_single = max(np.mean(values['cnn only']), np.mean(values['lstm only']))
    verdict, reason = controls.DESIGNED_VERDICTS[variant]
    lines.append(
      f'| {variant} | {LABELS[variant]} | '
      + ' | '.join(_cell(values[arm]) for arm in ARMS)
      + f' | {np.mean(values["concat"]) - best_single:+.3f} |'
      + (f' {verdict}: {reason} |' if verdicts else '')
    )
  return lines


def calibrate(args) -> str:
  """Runs every arm and returns the markdown report."""
  start = time.time()
  seeds = range(args.seeds)
  for variant in controls.VARIANTS:  # Prepared before the clock of any run starts.
    datasets.prepare_shipped(f'controls/{variant}', args.data_dir)
  runs, seconds = {}, []  # (variant, arm) -> runs; (branches, seconds) of every run.
  for variant in controls.VARIANTS:
    for arm, branches in ARMS.items():
      runs[(variant, arm)] = [train_one(variant, branches, args.lr, s, args) for s in seeds]
      seconds += [(branches, r['seconds']) for r in runs[(variant, arm)]]
  lstm_local = {args.lr: runs[('local', 'lstm only')]}
  for lr in LSTM_LOCAL_LRS:
    if lr != args.lr:
      lstm_local[lr] = [train_one('local', 'lstm', lr, s, args) for s in seeds]
      seconds += [('lstm', r['seconds']) for r in lstm_local[lr]]
  wall = time.time() - start

  builder_config = controls.Controls.builder_configs['both']
  config = run_config('both', 'both', args.lr, 0, args)
  evaluations = max(r['evals'] for rs in runs.values() for r in rs)
  command = ' '.join(['python -m experiments.controls_calibration', *sys.argv[1:]])
  lrs = sorted(lstm_local)
  return '\n'.join(
    [
      '# Calibration of the synthetic controls',
      '',
      f'Command: `{command}`  ',
      f'Python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}, '
      f'numpy {np.__version__}, tensorflow-datasets {tfds.__version__}; {os.cpu_count()} CPU '
      f'cores ({jax.devices()[0].platform}), shared with other jobs.  ',
      f'Wall time: {wall / 60:.1f} min for {len(seconds)} runs, one after another (mean per '
      'run: '
      + ', '.join(
        f'{b} {np.mean([s for x, s in seconds if x == b]):.0f} s' for b in ('cnn', 'lstm', 'both')
      )
      + '; datasets prepared before).',
      '',
      f'Knobs (hybrid_jax/data/builders/controls.py): T = {builder_config.length} steps, '
      f'σ = {builder_config.sigma}, D = {builder_config.distractors} distractors, seed '
      f'{builder_config.seed}; motif {controls.MOTIF}, spikes ±{controls.SPIKE}; '
      f'train / validation / test = {" / ".join(map(str, builder_config.sizes))} series.  ',
      f'Runs: configs/controls.py ({config.num_train_steps} steps, batch {config.batch_size}, '
      f'Adam lr {args.lr:g}, constant; {evaluations} validation evaluations), seeds '
      f'{", ".join(map(str, seeds))}. Validation accuracy, mean (min–max) over seeds; '
      '"concat − best single" compares means.',
      '',
      f'At the final step ({config.num_train_steps}):',
      '',
      *_table(runs, 'final', verdicts=True),
      '',
      f'The best of the {evaluations} evaluations (what a run that keeps its best checkpoint '
      'selects; a final value below it means the run lost accuracy it had):',
      '',
      *_table(runs, 'best', verdicts=False),
      '',
      'What each branch reads: the CNN reads a on `local` and b on `order`, the LSTM likewise. '
      "The LSTM must not read a at the study's learning rates (3e-4, 1e-3, 3e-3) nor at the next "
      'one outward (1e-2): lstm only on controls/local, validation accuracy at the final step and '
      '(best):',
      '',
      '| learning rate | ' + ' | '.join(f'{lr:g}' for lr in lrs) + ' |',
      '|---|' + '---:|' * len(lrs),
      '| final | ' + ' | '.join(_cell([r['final'] for r in lstm_local[lr]]) for lr in lrs) + ' |',
      '| best | ' + ' | '.join(_cell([r['best'] for r in lstm_local[lr]]) for lr in lrs) + ' |',
      '',
    ]
  )


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Progress lines and tables are printed.
  args = flags.FLAGS
  report = calibrate(args)
  print(report)
  if args.out:
    fileio.write_text(args.out, report)


def define_flags() -> None:
  """Command-line flags (defined only when run as a script, so tests can import this module)."""
  flags.DEFINE_integer('seeds', 3, 'Seeds per variant and arm (0..seeds-1).')
  flags.DEFINE_float('lr', 1e-3, 'Learning rate of the main table.')
  flags.DEFINE_integer('steps', None, "Steps per run (None: the config's).")
  flags.DEFINE_string('workdir', '/tmp/hybrid_jax_controls_calibration', 'Where the runs go.')
  flags.DEFINE_string('data_dir', None, "TFDS data dir (None: TFDS's default).")
  flags.DEFINE_string('out', None, 'Also write the markdown report to this file.')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
