"""The study's protocol: is concatenating CNN and LSTM outputs meaningful? One command runs it all.

  python -m experiments.study                                   # every dataset, its default grid
  python -m experiments.study --datasets=bbc_news,weather_stations --seeds=10 --lrs=3e-4,1e-3,3e-3
  python -m experiments.study --datasets=moving_digits          # the reduced video grid
  python -m experiments.study --config=configs/sensor.py --files=data/MySeries_TRAIN.ts   # yours

Protocol (per dataset; see experiments/results/study_summary.md for the decision rule):
  1. Arms: cnn only, lstm only, concat (reference), learned fusions (default and parameter-matched),
     each single branch widened to concat's parameter count, CNN∥CNN and LSTM∥LSTM, and a late
     ensemble (averaged test probabilities, or predictions, of the cnn-only and lstm-only runs).
  2. Every trained arm x learning rate x seed is one run. Seeds are paired: the train order depends
     only on config.seed (and the split), so seed k visits the same batches in every arm.
  3. Selection on validation only: each run evaluates the validation split `--evals_per_run` times
     and keeps the best checkpoint by the primary metric; each arm's learning rate is the one with
     the best mean (over seeds) best-validation metric. The test split is then evaluated once, on
     the kept checkpoint of each seed at the chosen learning rate, with per-example outputs saved
     (test_outputs.npz) for the ensemble, the test-set sampling CIs and the redundancy measures.
  4. Statistics (stats.py, cka.py, analysis.py), the verdict (rule.py) and the report (report.py):
     per-arm mean with 95% bootstrap CIs over seeds, paired differences of concat against every
     other arm with CIs, P(concat better), exact sign-flip p-values with Holm correction, test-set
     sampling CIs, redundancy of the concat model (CKA between its CNN and LSTM features; the
     metric with either branch mean-ablated or zeroed).

The datasets are the shipped ones (`hybrid_jax.data.shipped.SHIPPED`: each one's config file in
configs/ and its equivalence margin), the synthetic controls first, one dataset per variant
('controls/both', ...: each report states the verdict the control was designed to give and the one
it got, and the summary claims nothing about the real datasets unless the positive control says
"helps" and the negative ones do not); grids.py holds each one's grid and budget. Or your files
(`--config=configs/<kind>.py --files=...`, the same route as `--config.dataset.files`): one dataset,
named like its prepared data (file stem + content hash), run with the default grid and the
equivalence margin `--margin` (default: FILES_MARGIN accuracy, or FILES_MARGIN x the train
targets' std of MAE for a regression).

Resumable: each run writes result.json (validation) and, once selected, test.json when it is done;
a finished run is reused, an interrupted one resumes from its own checkpoint (or restarts from
scratch if that checkpoint cannot be restored). A run dir holding a different config stops the study
with one line. After a run, only its best checkpoint is kept (--keep=best) to bound disk use. With
--test_when_trained (video's default) every run is tested once trained, so that its records resume
the study on another machine without checkpoints (docs/study.md#a-study-that-spans-machines).

Every shipped dataset has train / validation / test splits, used by default;
`--validation_from_train` carves validation from train instead (train[:90%] / train[90%:]), and
`--train_split/--validation_split/--test_split` name other splits (e.g. of your own dataset).
"""

import copy
import dataclasses
import importlib
import os
import platform
import subprocess
import time
from typing import Optional, Sequence

import jax
import ml_collections
import numpy as np

from experiments.study import arms as study_arms
from experiments.study import grids as study_grids
from experiments.study import runs as study_runs
from experiments.study import stats as study_stats
from hybrid_jax.data import datasets
from hybrid_jax.data import file_dataset
from hybrid_jax.data import shipped
from hybrid_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The equivalence margin of a files dataset without --margin: 0.01 accuracy (one point, as for the
# shipped classification sets), or 0.01 x the train targets' std of MAE (regression).
FILES_MARGIN = 0.01


def run_length(dataset: str, protocol: 'Protocol', config: ml_collections.ConfigDict) -> int:
  """Optimizer steps of every run of `dataset`: --steps, else the dataset's default, else config's.

  A config variant (e.g. 'smoke') keeps its own run length over the dataset's default.
  """
  default = None if protocol.config_variant else dataset_spec(dataset, protocol).steps
  steps = protocol.steps.get(dataset, protocol.steps.get('*'))
  return int(steps or default or config.num_train_steps)


@dataclasses.dataclass
class Protocol:
  """Everything one invocation decides (flags map one to one onto these fields)."""

  study_dir: str
  results_dir: str
  datasets: Sequence[str]
  arms: Optional[Sequence[str]] = None  # None: each dataset's default.
  seeds: Optional[Sequence[int]] = None  # None: range(each dataset's default).
  lrs: Optional[Sequence[float]] = None
  steps: dict = dataclasses.field(default_factory=dict)  # dataset -> num_train_steps.
  evals_per_run: Optional[int] = None  # None: each dataset's default.
  selection_seeds: Optional[int] = None  # None: each dataset's default.
  train_split: str = 'train[:90%]'
  validation_split: str = 'train[90%:]'
  test_split: str = 'test'
  config_variant: str = ''  # 'smoke' for tests.
  builder_config: str = ''  # e.g. 'tiny': dataset names become '<name>/tiny'.
  data_dir: Optional[str] = None
  keep: str = 'best'  # 'best' | 'all': checkpoints kept after a run.
  num_resamples: int = study_stats.NUM_RESAMPLES
  command: str = ''
  cka_max_examples: int = 2_000  # Debiased CKA builds N x N Gram matrices: subsample beyond this.
  config_file: str = ''  # With files: configs/<kind>.py (a ':variant' suffix allowed).
  files: str = ''  # Your files (config.dataset.files syntax): the one dataset studied.
  margin: Optional[float] = None  # Files: equivalence margin (None: FILES_MARGIN, see above).
  # An arm whose chosen rate is the grid's largest or smallest also runs the next rate outward.
  extend_grid: bool = True
  # Train an arm's runs as populations (study/populations.py): 'auto' | 'on' | 'off', and the
  # memory one population may take.
  population: str = 'auto'
  population_memory_gb: float = 4.0
  # Test each run as soon as it is trained (grids.DatasetSpec.test_when_trained); None: the
  # dataset's own default.
  test_when_trained: Optional[bool] = None


def files_dataset(protocol: 'Protocol') -> str:
  """The name of the files dataset of `protocol` (stem + content hash; '' without files)."""
  if not protocol.files:
    return ''
  return file_dataset.files_name(task_config('', protocol.config_variant, protocol).dataset)[0]


def dataset_spec(dataset: str, protocol: Optional[Protocol] = None) -> study_grids.DatasetSpec:
  if protocol is not None and protocol.files:
    return study_grids.DatasetSpec()
  if dataset not in study_grids.DATASETS:
    raise ConfigError(
      f'Unknown --datasets entry {dataset!r}: use any of {sorted(study_grids.DATASETS)}.'
    )
  return study_grids.DATASETS[dataset]


def task_config(
  dataset: str, variant: str = '', protocol: Optional[Protocol] = None
) -> ml_collections.ConfigDict:
  """The config in configs/ that trains `dataset` (`shipped.of(dataset).config`), a copy;
  with `protocol.files`: `protocol.config_file`'s config reading those files."""
  if protocol is None or not protocol.files:
    module = importlib.import_module(f'configs.{shipped.of(dataset).config}')
    config = copy.deepcopy(module.get_config(variant))
    config.dataset.name = dataset  # A family's variant ('controls/both') names its builder config.
    return config
  path, _, own_variant = protocol.config_file.partition(':')
  name = os.path.splitext(os.path.basename(path))[0]
  if os.path.dirname(os.path.normpath(path)) != 'configs' or not os.path.isfile(
    os.path.join(ROOT, 'configs', name + '.py')
  ):
    raise ConfigError(
      f'--config={protocol.config_file!r}: use one of configs/<kind>.py (e.g. configs/sensor.py).'
    )
  config = importlib.import_module(f'configs.{name}').get_config(own_variant or variant)
  config.dataset.files = protocol.files
  if protocol.data_dir:
    config.dataset.data_dir = protocol.data_dir
  return config


def shipped_build(dataset: str, protocol: Protocol) -> str:
  """The build of a shipped dataset the protocol reads: 'controls/both', or 'controls/both_tiny'
  with --builder_config=tiny."""
  if not protocol.builder_config:
    return dataset
  return shipped.build_name(dataset, protocol.builder_config)


def base_config(dataset: str, protocol: Protocol) -> ml_collections.ConfigDict:
  """The dataset's task config with the protocol's splits, run length and eval cadence, resolved.

  The data is prepared (first use) and read once here: the returned config has `head` and the
  data-determined model fields filled (`datasets.resolve(config).config`).
  """
  spec = dataset_spec(dataset, protocol)
  config = task_config(dataset, protocol.config_variant, protocol)
  name = config.dataset.name if protocol.files else shipped_build(config.dataset.name, protocol)
  steps = run_length(dataset, protocol, config)
  every = max(1, steps // max(1, protocol.evals_per_run or spec.evals_per_run))
  config.dataset.update(
    name=name, train_split=protocol.train_split, eval_split=protocol.validation_split
  )
  if protocol.data_dir:
    config.dataset.data_dir = protocol.data_dir
  config.update(
    num_train_steps=steps,
    eval_every_steps=every,
    checkpoint_every_steps=every,
    log_every_steps=min(int(config.log_every_steps), every),
    keep_checkpoints=1,
    early_stopping_patience=spec.early_stopping_patience,
  )
  source = datasets.resolve(config)
  config = source.config
  config.best_metric = study_runs.primary_metric(config)[0]
  return config


def margin(dataset: str, protocol: Protocol, base: ml_collections.ConfigDict) -> float:
  """The equivalence margin: the shipped dataset's, or --margin / FILES_MARGIN for files."""
  if not protocol.files:
    return shipped.of(dataset).margin
  if protocol.margin is not None:
    return float(protocol.margin)
  target_std = datasets.resolve(base).info.target_std
  return FILES_MARGIN * (target_std or 1.0)


def bootstrap_unit(dataset: str, protocol: Protocol) -> str:
  """What the test-set bootstrap resamples: the shipped dataset's declared block, or examples."""
  block = None if protocol.files else shipped.of(dataset).test_block
  return 'example' if block is None else f'{block[1]} of {block[0]}'


def test_blocks(
  dataset: str, protocol: Protocol, base: ml_collections.ConfigDict
) -> Optional[np.ndarray]:
  """One block id per test example (in the split's order) where the dataset's test examples
  overlap (e.g. hourly windows: blocks of days); None where each example is its own block."""
  block = None if protocol.files else shipped.of(dataset).test_block
  if block is None:
    return None
  feature, size = block[0], int(block[2])
  records = datasets.resolve(base).records(protocol.test_split)
  return np.array([int(records[i][feature]) // size for i in range(len(records))])


def run_name(lr: float, seed: int) -> str:
  """A run's dir name inside its arm's dir: 'lr0.001_seed3'."""
  return f'lr{lr:g}_seed{seed}'


def run_dir(protocol: Protocol, dataset: str, arm: str, lr: float, seed: int) -> str:
  return os.path.join(protocol.study_dir, dataset, arm, run_name(lr, seed))


def dataset_arms(protocol: Protocol, spec: study_grids.DatasetSpec) -> list[str]:
  """The arms run on the dataset (--arms, else its grid's), checked."""
  arms = list(protocol.arms or spec.arms)
  unknown = [a for a in arms if a not in study_arms.ARMS]
  if unknown:
    raise ConfigError(f'Unknown --arms {unknown}: use any of {list(study_arms.ARMS)}.')
  for combined in ('ensemble', 'probe'):
    missing = [m for m in study_arms.ENSEMBLE_MEMBERS if m not in arms]
    if combined in arms and missing:
      raise ConfigError(f'The {combined!r} arm needs the arms {missing} too: add them to --arms.')
  return arms


def provenance(protocol: Protocol) -> dict:
  """The exact command, git commit (and whether the tree was dirty) and package versions."""

  def git(*args):
    try:
      return subprocess.run(
        ['git', '-C', ROOT, *args], capture_output=True, text=True, check=True
      ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
      return 'unknown'

  # Code only: the reports this command rewrites are not "uncommitted changes" of the code.
  results = os.path.relpath(os.path.abspath(protocol.results_dir), ROOT)
  code_paths = ['.'] if results.startswith('..') else ['.', f':!{results}']
  versions = {'python': platform.python_version()}
  for name in ('jax', 'flax', 'optax', 'orbax.checkpoint', 'grain', 'numpy'):
    try:
      versions[name] = importlib.import_module(name).__version__
    except (ImportError, AttributeError):
      versions[name] = 'unknown'
  return {
    'command': protocol.command,
    'commit': git('rev-parse', 'HEAD'),
    'dirty': bool(git('status', '--porcelain', '--untracked-files=no', '--', *code_paths)),
    'versions': versions,
    'devices': f'{jax.device_count()} x {jax.devices()[0].platform}',
    'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
  }
