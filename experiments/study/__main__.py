"""The study's command line: `python -m experiments.study [--flags]` (see protocol.py).

python -m experiments.study --plan                        # what would be trained, then stop
python -m experiments.study --datasets=bbc_news --seeds=10 --lrs=3e-4,1e-3,3e-3
python -m experiments.study --config=configs/text.py --files=reviews.csv --margin=0.02   # your data
"""

import os
import sys
from typing import Sequence

from hybrid_jax import platforms

platforms.choose_platform()  # Before JAX starts: the platform and the XLA:CPU flags of every entry point.

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging

from experiments.study import conduct
from experiments.study import grids as study_grids
from experiments.study import progress
from experiments.study import protocol
from hybrid_jax import cli
from hybrid_jax.errors import ConfigError
# pylint: enable=g-import-not-at-top,wrong-import-position


def define_flags(flag_values=flags.FLAGS) -> None:
  """Command-line flags (defined only when run as a script, so tests can import this module)."""
  f = dict(flag_values=flag_values)
  datasets = list(study_grids.DATASETS)
  flags.DEFINE_list('datasets', datasets, f'Datasets to study, of {datasets}.', **f)
  flags.DEFINE_list(
    'arms', None, f"Arms (default: each dataset's own list), of {list(study_grids.ALL_ARMS)}.", **f
  )
  flags.DEFINE_string(
    'seeds',
    None,
    'Seeds: a count N (0..N-1) or a list 0,1,2 (default: each dataset\'s own count).',
    **f,
  )
  flags.DEFINE_list(
    'lrs', None, 'Learning-rate grid, chosen per arm on validation (default 3e-4,1e-3,3e-3).', **f
  )
  flags.DEFINE_list(
    'steps',
    [],
    'Run length per dataset, e.g. bbc_news=500, or N for every dataset (default: the config).',
    **f,
  )
  flags.DEFINE_string(
    'config',
    '',
    'With --files: the config of your data\'s kind, configs/<kind>.py (video, text, sensor; '
    "':smoke' allowed).",
    **f,
  )
  flags.DEFINE_string(
    'files',
    '',
    'Study your files instead of --datasets (as --config.dataset.files: PATH, NAME_TRAIN.ts or '
    'train=PATH,test=PATH[,validation=PATH]; docs/data.md).',
    **f,
  )
  flags.DEFINE_float(
    'margin',
    None,
    f'With --files: the equivalence margin, in the primary metric\'s units (default '
    f'{protocol.FILES_MARGIN:g} accuracy, or {protocol.FILES_MARGIN:g} x the train targets\' std '
    'of MAE).',
    **f,
  )
  flags.DEFINE_integer(
    'evals_per_run',
    None,
    'Validation evaluations (and checkpoints) per run (default: each dataset\'s own, '
    'experiments/study/grids.py).',
    **f,
  )
  flags.DEFINE_integer(
    'selection_seeds',
    None,
    'Choose learning rates on the first K seeds; the other seeds run only at the chosen rate '
    "(default: each dataset's own, experiments/study/grids.py).",
    **f,
  )
  flags.DEFINE_bool(
    'validation_from_train',
    False,
    'Carve validation from train (train[:90%] / '
    "train[90%:]) instead of the datasets' own validation split.",
    **f,
  )
  flags.DEFINE_string('train_split', None, 'Train split (overrides --validation_from_train).', **f)
  flags.DEFINE_string('validation_split', None, 'Validation split (idem).', **f)
  flags.DEFINE_string('test_split', 'test', 'Test split, evaluated once per selected run.', **f)
  flags.DEFINE_string('config_variant', '', "Config variant of every task, e.g. 'smoke'.", **f)
  flags.DEFINE_string('builder_config', '', "Builder config of every dataset, e.g. 'tiny'.", **f)
  flags.DEFINE_string('data_dir', None, "TFDS data_dir (default: TFDS's).", **f)
  flags.DEFINE_bool(
    'plan', False, 'Only print what would be trained (runs per dataset), then stop.', **f
  )
  flags.DEFINE_bool(
    'extend_grid',
    True,
    "When an arm's chosen learning rate is the grid's largest or smallest, also run the next rate "
    'outward (x the grid ratio, up to twice) on the selection seeds and choose again.',
    **f,
  )
  flags.DEFINE_enum('keep', 'best', ['best', 'all'], 'Checkpoints kept after a run.', **f)
  flags.DEFINE_bool(
    'test_when_trained',
    None,
    'Test each run as soon as it is trained (its test outputs are read only for the chosen rate, '
    'after selection), so that a finished run needs no checkpoint: a study longer than one '
    "machine's stay resumes from its committed records (default: each dataset's own, "
    'experiments/study/grids.py).',
    **f,
  )
  flags.DEFINE_enum(
    'population',
    'auto',
    ['auto', 'on', 'off'],
    "Train each arm's runs (rates x seeds) as populations in one vmapped step (on), or one after "
    'another (off). auto: on a GPU/TPU; on a CPU a population trains no more runs per hour '
    '(experiments/results/benchmark_population.md).',
    **f,
  )
  flags.DEFINE_float(
    'population_memory_gb',
    4.0,
    'Memory one population may take (its members are bounded by it).',
    **f,
  )
  flags.DEFINE_string('study_dir', 'workdirs/study', 'Where the runs go (resumable).', **f)
  flags.DEFINE_string(
    'results_dir',
    os.path.join(protocol.ROOT, 'experiments', 'results'),
    'Where the reports and plots go.',
    **f,
  )


def protocol_from_flags(args, argv: Sequence[str]) -> protocol.Protocol:
  seeds = None
  if args.seeds:
    seeds = (
      list(range(int(args.seeds)))
      if ',' not in args.seeds
      else [int(s) for s in args.seeds.split(',') if s]
    )
  steps = {}
  for item in args.steps:
    name, _, value = item.rpartition('=') if '=' in item else ('*', '', item)
    if not value.isdigit():
      raise ConfigError(f'--steps entry {item!r} is not dataset=N or N, e.g. bbc_news=500.')
    steps[name] = int(value)
  if bool(args.files) != bool(args.config):
    raise ConfigError(
      '--files and --config go together: e.g. --config=configs/sensor.py --files=X.'
    )
  train_split, validation_split = (
    ('train[:90%]', 'train[90%:]') if args.validation_from_train else ('train', 'validation')
  )
  study = protocol.Protocol(
    study_dir=args.study_dir,
    results_dir=args.results_dir,
    datasets=args.datasets,
    arms=args.arms,
    seeds=seeds,
    lrs=[float(x) for x in args.lrs] if args.lrs else None,
    steps=steps,
    evals_per_run=args.evals_per_run,
    selection_seeds=args.selection_seeds,
    train_split=args.train_split or train_split,
    validation_split=args.validation_split or validation_split,
    test_split=args.test_split,
    config_variant=args.config_variant,
    builder_config=args.builder_config,
    data_dir=args.data_dir,
    keep=args.keep,
    command=' '.join(['python -m experiments.study', *argv[1:]]),
    config_file=args.config,
    files=args.files,
    margin=args.margin,
    extend_grid=args.extend_grid,
    population=args.population,
    population_memory_gb=args.population_memory_gb,
    test_when_trained=args.test_when_trained,
  )
  if study.files:
    study.datasets = [protocol.files_dataset(study)]
  return study


def main(argv):
  logging.set_verbosity(logging.WARNING)
  del argv  # sys.argv: the command recorded in the reports.
  study = protocol_from_flags(flags.FLAGS, sys.argv)
  print(progress.plan(study), flush=True)
  if not flags.FLAGS.plan:
    conduct.run_study(study)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
