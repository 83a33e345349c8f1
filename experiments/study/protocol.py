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
  4. Statistics (stats.py, cka.py), the verdict (analysis.py) and the report (report.py, plots.py):
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
with one line. After a run, only its best checkpoint is kept (--keep=best) to bound disk use.

Every shipped dataset has train / validation / test splits, used by default;
`--validation_from_train` carves validation from train instead (train[:90%] / train[90%:]), and
`--train_split/--validation_split/--test_split` name other splits (e.g. of your own dataset).
"""

import copy
import dataclasses
import importlib
import json
import os
import platform
import subprocess
import time
from typing import Optional, Sequence

import jax
import ml_collections
import numpy as np

from experiments.study import analysis as study_analysis
from experiments.study import arms as study_arms
from experiments.study import grids as study_grids
from experiments.study import outputs as study_outputs
from experiments.study import populations as study_populations
from experiments.study import report as study_report
from experiments.study import runs as study_runs
from experiments.study import selection as study_selection
from experiments.study import stats as study_stats
from hybrid_jax import fileio
from hybrid_jax.data import datasets
from hybrid_jax.data import file_dataset
from hybrid_jax.data import shipped
from hybrid_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The equivalence margin of a files dataset without --margin: 0.01 accuracy (one point, as for the
# shipped classification sets), or 0.01 x the train targets' std of MAE (regression).
FILES_MARGIN = 0.01
# How many times an arm's grid is extended outward when its edge rate wins (then it stays there).
MAX_GRID_EXTENSIONS = 2


def run_length(dataset: str, protocol: 'Protocol', config: ml_collections.ConfigDict) -> int:
  """Optimizer steps of every run of `dataset`: --steps, else the dataset's default, else config's.

  A config variant (e.g. 'smoke') keeps its own run length over the dataset's default.
  """
  default = None if protocol.config_variant else _spec(dataset, protocol).steps
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


def files_dataset(protocol: 'Protocol') -> str:
  """The name of the files dataset of `protocol` (stem + content hash; '' without files)."""
  if not protocol.files:
    return ''
  return file_dataset.files_name(task_config('', protocol.config_variant, protocol).dataset)[0]


def _spec(dataset: str, protocol: Optional[Protocol] = None) -> study_grids.DatasetSpec:
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


def base_config(dataset: str, protocol: Protocol) -> ml_collections.ConfigDict:
  """The dataset's task config with the protocol's splits, run length and eval cadence, resolved.

  The data is prepared (first use) and read once here: the returned config has `head` and the
  data-determined model fields filled (`datasets.resolve(config).config`).
  """
  spec = _spec(dataset, protocol)
  config = task_config(dataset, protocol.config_variant, protocol)
  name = config.dataset.name
  if protocol.builder_config and not protocol.files:
    name = shipped.build_name(name, protocol.builder_config)
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


def _study_arms(protocol: Protocol, spec: study_grids.DatasetSpec) -> list[str]:
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


@dataclasses.dataclass
class _Runs:
  """The trained runs of one dataset: trains (or reuses) them and keeps their result.json records
  by (arm, lr, seed)."""

  dataset: str
  protocol: Protocol
  configs: dict[str, ml_collections.ConfigDict]  # By trained arm.
  results: dict[tuple[str, float, int], dict] = dataclasses.field(default_factory=dict)

  def config(self, arm: str, lr: float, seed: int) -> ml_collections.ConfigDict:
    config = copy.deepcopy(self.configs[arm])
    config.update(learning_rate=lr, seed=seed)
    return config

  def workdir(self, arm: str, lr: float, seed: int) -> str:
    return run_dir(self.protocol, self.dataset, arm, lr, seed)

  def train(self, wanted: list[tuple[str, float, int]]) -> None:
    """Trains (or reuses) the runs (arm, lr, seed): one after another in the given order, or each
    arm's as populations."""
    if not study_populations.use_populations(self.protocol.population):
      for arm, lr, seed in wanted:
        print(f'[study] {self.dataset} {arm} lr={lr:g} seed={seed}', flush=True)
        self.results[arm, lr, seed] = study_runs.train_run(
          self.config(arm, lr, seed), self.workdir(arm, lr, seed), self.protocol.keep
        )
      return
    budget = int(self.protocol.population_memory_gb * 2**30)
    for arm in dict.fromkeys(a for a, _, _ in wanted):
      print(f'[study] {self.dataset} {arm}', flush=True)
      dirs = {(lr, s): self.workdir(a, lr, s) for a, lr, s in wanted if a == arm}
      done = study_populations.train_runs(self.configs[arm], dirs, self.protocol.keep, budget)
      self.results.update({(arm, lr, s): r for (lr, s), r in done.items()})

  def selection_means(self, arm: str, key: str, worst: float, seeds: list[int]) -> dict:
    """{lr: mean over `seeds` of result[key]} for every rate the arm ran at on those seeds."""
    tried = sorted({lr for (a, lr, s) in self.results if a == arm and s in seeds})
    return {
      lr: float(
        np.mean(
          [
            worst if self.results[arm, lr, s][key] is None else self.results[arm, lr, s][key]
            for s in seeds
          ]
        )
      )
      for lr in tried
    }


def _choose_rates(
  runs: _Runs, trained: list[str], select_seeds: list[int], lower: bool, extend: bool
) -> dict[str, float]:
  """Each arm's learning rate, chosen on the selection seeds' validation means (ties broken by the
  validation loss). When an edge rate of the grid wins, the next rate outward is run and the
  choice re-made over every rate tried (up to MAX_GRID_EXTENSIONS times)."""
  worst = np.inf if lower else -np.inf
  chosen = {}
  for arm in trained:
    for extension in range(MAX_GRID_EXTENSIONS + 1):
      means = runs.selection_means(arm, 'val_best', worst, select_seeds)
      losses = runs.selection_means(arm, 'val_loss_best', np.inf, select_seeds)
      tried = sorted(means)
      edge = study_selection.grid_edge(
        tried, [means[lr] for lr in tried], lower, [losses[lr] for lr in tried]
      )
      chosen[arm] = edge.chosen
      if not edge.edge or not extend or extension == MAX_GRID_EXTENSIONS:
        break
      runs.train([(arm, lr, seed) for lr in edge.next_rates for seed in select_seeds])
  return chosen


def _test_phase(
  runs: _Runs, trained: list[str], arms: list[str], chosen: dict[str, float], seeds: list[int]
) -> tuple[dict[str, list[dict]], dict[str, np.ndarray]]:
  """Every trained arm's kept checkpoints on the test split (at its chosen rate), then the late
  ensemble and the probe built from them: (test records by arm, per-example scores by arm
  [seeds, examples])."""
  protocol = runs.protocol
  tests: dict[str, list[dict]] = {}
  for arm in trained:
    lr = chosen[arm]
    tests[arm] = []
    for seed in seeds:
      result = runs.results[arm, lr, seed]
      if result['best_step'] is None:
        raise ConfigError(
          f'{runs.dataset} {arm} lr={lr:g} seed={seed} diverged at the chosen learning '
          'rate; drop that rate from --lrs.'
        )
      tests[arm].append(
        study_outputs.test_run(
          runs.config(arm, lr, seed),
          runs.workdir(arm, lr, seed),
          result,
          arm == 'concat',
          protocol.test_split,
          protocol.cka_max_examples,
        )
      )
  outputs = {
    a: [study_outputs.load_outputs(runs.workdir(a, chosen[a], s)) for s in seeds] for a in trained
  }
  if 'ensemble' in arms:
    rng = np.random.default_rng(0)
    outputs['ensemble'] = [
      study_outputs.ensemble_outputs([outputs[m][k] for m in study_arms.ENSEMBLE_MEMBERS])
      for k in range(len(seeds))
    ]
    tests['ensemble'] = [
      {
        'metric': study_outputs.metric_of(ens),
        'sampling_ci': study_outputs.sampling_ci(ens, rng),
        'num_examples': study_outputs.num_examples(ens),
      }
      for ens in outputs['ensemble']
    ]
  if 'probe' in arms:
    tests['probe'], outputs['probe'] = [], []
    splits = (protocol.train_split, protocol.validation_split, protocol.test_split)
    for seed in seeds:
      members = [
        (
          datasets.resolve(runs.config(m, chosen[m], seed)),
          runs.workdir(m, chosen[m], seed),
          runs.results[m, chosen[m], seed]['best_step'],
        )
        for m in study_arms.ENSEMBLE_MEMBERS
      ]
      workdir = os.path.join(protocol.study_dir, runs.dataset, 'probe', f'seed{seed}')
      tests['probe'].append(study_outputs.probe_run(members, workdir, splits))
      outputs['probe'].append(study_outputs.load_outputs(workdir))
  per_example = {
    a: np.stack([study_stats.per_example_scores(o) for o in outs]) for a, outs in outputs.items()
  }
  return tests, per_example


def study_dataset(dataset: str, protocol: Protocol) -> dict:
  """Runs (or reuses) every run of `dataset`, selects on validation, tests, writes its report."""
  spec = _spec(dataset, protocol)
  base = base_config(dataset, protocol)
  metric, lower = study_runs.primary_metric(base)
  arms = _study_arms(protocol, spec)
  sizes = study_arms.match_sizes(base)
  # Left out: learned fusions with a projection narrower than the narrower branch.
  narrow = study_arms.narrow_fusions(sizes, study_arms.branch_widths(base))
  arms = [a for a in arms if a not in narrow]
  trained = [a for a in arms if study_arms.ARMS[a].trained]
  seeds = list(protocol.seeds if protocol.seeds is not None else range(spec.seeds))
  lrs = [float(lr) for lr in (protocol.lrs or spec.lrs)]
  num_select = protocol.selection_seeds or spec.selection_seeds
  select_seeds = seeds[: min(len(seeds), num_select)] if num_select else seeds
  runs = _Runs(dataset, protocol, {a: study_arms.ARMS[a].configure(base, sizes) for a in trained})

  # Seeds outermost: an interrupted study (one run after another) has balanced arms so far.
  runs.train([(arm, lr, seed) for seed in select_seeds for lr in lrs for arm in trained])
  chosen = _choose_rates(runs, trained, select_seeds, lower, protocol.extend_grid)
  worst = np.inf if lower else -np.inf
  val_means = {
    f'{a}@{lr:g}': v
    for a in trained
    for lr, v in runs.selection_means(a, 'val_best', worst, select_seeds).items()
  }
  val_loss_means = {
    f'{a}@{lr:g}': v
    for a in trained
    for lr, v in runs.selection_means(a, 'val_loss_best', np.inf, select_seeds).items()
  }
  # With selection_seeds < seeds: the rest only at the chosen rate.
  runs.train([(arm, chosen[arm], seed) for seed in seeds[len(select_seeds) :] for arm in trained])
  tests, per_example = _test_phase(runs, trained, arms, chosen, seeds)
  blocks = test_blocks(dataset, protocol, base)
  results = runs.results

  summary = {
    'dataset': dataset,
    # A control's (verdict, reason) by design (shipped.designed_verdict); None for a real dataset.
    'designed_verdict': None if protocol.files else shipped.designed_verdict(dataset),
    'metric': metric,
    'lower_is_better': lower,
    'margin': margin(dataset, protocol, base),
    'seeds': seeds,
    'selection_seeds': select_seeds,
    'lrs': lrs,
    'arms': arms,
    'chosen_lr': chosen,
    'val_means': val_means,
    'val_loss_means': val_loss_means,
    'bootstrap_unit': 'example' if blocks is None else bootstrap_unit(dataset, protocol),
    'sizes': sizes,
    'params': {a: study_arms.count_params(runs.configs[a]) for a in trained},
    'test': {a: [t['metric'] for t in tests[a]] for a in tests},
    'sampling_ci': {a: [list(t['sampling_ci']) for t in tests[a]] for a in tests},
    'num_test_examples': tests[arms[0]][0]['num_examples'],
    'redundancy': [t['redundancy'] for t in tests.get('concat', []) if 'redundancy' in t],
    'val_curves': {a: [results[a, chosen[a], s]['val_curve'] for s in seeds] for a in trained},
    'seconds': {
      a: float(np.mean([r['seconds'] for (arm, _, _), r in results.items() if arm == a]))
      for a in trained
    },
    # What the study cost: the runs' own wall times summed (a population member counts its share).
    'num_runs': len(results),
    'train_seconds': float(sum(r['seconds'] for r in results.values())),
    'steps': int(base.num_train_steps),
    'note': spec.note
    + (
      f' Left out: {", ".join(narrow)} (a projection narrower than the narrower branch).'
      if narrow
      else ''
    ),
    'splits': [protocol.train_split, protocol.validation_split, protocol.test_split],
    'data': base.dataset.name,
    'splits_made': base.dataset.get('splits_made', ''),
  }
  summary['analysis'] = study_analysis.analyse(summary, protocol.num_resamples, per_example, blocks)
  fileio.write_json(os.path.join(protocol.study_dir, dataset, 'summary.json'), summary)
  study_report.write_dataset_report(summary, protocol.results_dir, provenance(protocol))
  return summary


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


def plan(protocol: Protocol) -> str:
  """What the protocol will train, per dataset: runs per arm and how many are already finished."""
  lines = []
  for dataset in protocol.datasets:
    spec = _spec(dataset, protocol)
    config = task_config(dataset, protocol.config_variant, protocol)
    seeds = list(protocol.seeds if protocol.seeds is not None else range(spec.seeds))
    lrs = protocol.lrs or spec.lrs
    k = min(len(seeds), protocol.selection_seeds or spec.selection_seeds or len(seeds))
    trained = [a for a in (protocol.arms or spec.arms) if study_arms.ARMS[a].trained]
    per_arm = len(lrs) * k + len(seeds) - k
    steps = run_length(dataset, protocol, config)
    finished = _finished_runs(protocol, dataset, trained)
    done = sum(len(runs) for by_rate in finished.values() for runs in by_rate.values())
    lines.append(
      f'{dataset}: {len(trained)} trained arms x {per_arm} runs ({len(lrs)} rates x {k} '
      f'selection seeds + {len(seeds) - k} more seeds) = {len(trained) * per_arm} runs '
      f'of {steps} steps; {done} finished. Arms: {", ".join(trained)}.'
    )
    if done:
      lines += finished_table(finished, steps)
  return '\n'.join(lines)


def _finished_runs(
  protocol: Protocol, dataset: str, arms: Sequence[str]
) -> dict[str, dict[float, list[tuple[dict, bool]]]]:
  """{arm: {rate: [(result.json, tested?)]}} of the runs of `dataset` that have a result.json."""
  out: dict[str, dict[float, list[tuple[dict, bool]]]] = {}
  for arm in arms:
    arm_dir = os.path.join(protocol.study_dir, dataset, arm)
    for name in sorted(os.listdir(arm_dir)) if os.path.isdir(arm_dir) else []:
      result = study_runs.read_json(os.path.join(arm_dir, name, 'result.json'))
      if result is not None and name.startswith('lr') and '_seed' in name:  # run_dir's names.
        tested = os.path.exists(os.path.join(arm_dir, name, 'test.json'))
        lr = float(name[2:].split('_seed')[0])
        out.setdefault(arm, {}).setdefault(lr, []).append((result, tested))
  return out


def finished_table(
  finished: dict[str, dict[float, list[tuple[dict, bool]]]], steps: int
) -> list[str]:
  """A markdown table of finished runs (`_finished_runs`) per arm and rate: their best validation
  metric (mean, min, max over seeds), how many kept their last step (`steps`: still improving when
  the run ended), diverged and tested. A study's progress before its report exists."""
  lines = [
    '',
    '| arm | rate | finished | best validation: mean | min | max | best at the last step | '
    'diverged | tested |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for arm, by_rate in finished.items():
    for lr, done in sorted(by_rate.items()):
      values = [r['val_best'] for r, _ in done if r['val_best'] is not None]
      stats = (
        f'{np.mean(values):.4f} | {min(values):.4f} | {max(values):.4f}' if values else '– | – | –'
      )
      lines.append(
        f'| {arm} | {lr:g} | {len(done)} | {stats} | '
        f'{sum(r["best_step"] == steps for r, _ in done)} | {len(done) - len(values)} | '
        f'{sum(t for _, t in done)} |'
      )
  return lines + ['']


def run_study(protocol: Protocol) -> list[dict]:
  """Every dataset of the protocol, then the summary across datasets."""
  os.makedirs(protocol.study_dir, exist_ok=True)
  summaries = [study_dataset(d, protocol) for d in protocol.datasets]
  study_report.write_summary(
    summaries, protocol.results_dir, provenance(protocol), earlier_controls(protocol)
  )
  return summaries


def earlier_controls(protocol: Protocol) -> list[dict]:
  """The controls an earlier invocation finished in the same study_dir (their summary.json), so
  that a study of some datasets (or of your files) is judged against the instrument's test."""
  out = []
  for name in study_grids.DATASETS:
    path = os.path.join(protocol.study_dir, name, 'summary.json')
    if shipped.designed_verdict(name) and name not in protocol.datasets and os.path.exists(path):
      with open(path) as f:
        summary = json.load(f)
      if summary.get('analysis', {}).get('designed'):
        out.append(summary)
  return out
