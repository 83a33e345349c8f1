"""The study conducted: each dataset's runs trained (or reused), learning rates chosen on
validation, the kept checkpoints tested, the statistics and the reports written (`run_study`).

What is run, and how it is configured, is protocol.py's; one run is runs.py's.
"""

import copy
import dataclasses
import os

import ml_collections
import numpy as np

from experiments.study import analysis as study_analysis
from experiments.study import arms as study_arms
from experiments.study import grids as study_grids
from experiments.study import outputs as study_outputs
from experiments.study import populations as study_populations
from experiments.study import protocol as study_protocol
from experiments.study import report as study_report
from experiments.study import rule as study_rule
from experiments.study import runs as study_runs
from experiments.study import selection as study_selection
from experiments.study import stats as study_stats
from experiments.study import summary_report as study_summary_report
from hybrid_jax import fileio
from hybrid_jax.data import datasets
from hybrid_jax.data import shipped
from hybrid_jax.errors import ConfigError

# How many times an arm's grid is extended outward when its edge rate wins (then it stays there).
MAX_GRID_EXTENSIONS = 2


@dataclasses.dataclass
class _Runs:
  """The trained runs of one dataset: trains (or reuses) them and keeps their result.json records
  by (arm, lr, seed)."""

  dataset: str
  protocol: study_protocol.Protocol
  configs: dict[str, ml_collections.ConfigDict]  # By trained arm.
  # Each run tested as soon as it is trained (grids.DatasetSpec.test_when_trained).
  test_when_trained: bool = False
  results: dict[tuple[str, float, int], dict] = dataclasses.field(default_factory=dict)

  def config(self, arm: str, lr: float, seed: int) -> ml_collections.ConfigDict:
    config = copy.deepcopy(self.configs[arm])
    config.update(learning_rate=lr, seed=seed)
    return config

  def workdir(self, arm: str, lr: float, seed: int) -> str:
    return study_protocol.run_dir(self.protocol, self.dataset, arm, lr, seed)

  def train(self, wanted: list[tuple[str, float, int]]) -> None:
    """Trains (or reuses) the runs (arm, lr, seed): one after another in the given order, or each
    arm's as populations; with test_when_trained, each one is tested once trained."""
    if not study_populations.use_populations(self.protocol.population):
      for arm, lr, seed in wanted:
        print(f'[study] {self.dataset} {arm} lr={lr:g} seed={seed}', flush=True)
        self._record(
          arm,
          lr,
          seed,
          study_runs.train_run(
            self.config(arm, lr, seed), self.workdir(arm, lr, seed), self.protocol.keep
          ),
        )
      return
    budget = int(self.protocol.population_memory_gb * 2**30)
    for arm in dict.fromkeys(a for a, _, _ in wanted):
      print(f'[study] {self.dataset} {arm}', flush=True)
      dirs = {(lr, s): self.workdir(a, lr, s) for a, lr, s in wanted if a == arm}
      done = study_populations.train_runs(self.configs[arm], dirs, self.protocol.keep, budget)
      for (lr, seed), result in done.items():
        self._record(arm, lr, seed, result)

  def _record(self, arm: str, lr: float, seed: int, result: dict) -> None:
    """Keeps a trained (or reused) run's result; with test_when_trained, tests it at once."""
    self.results[arm, lr, seed] = result
    if self.test_when_trained and result['best_step'] is not None:
      self.test(arm, lr, seed)

  def test(self, arm: str, lr: float, seed: int) -> dict:
    """The run's kept checkpoint on the test split, once (test.json + test_outputs.npz, reused)."""
    result = self.results[arm, lr, seed]
    if result['best_step'] is None:
      raise ConfigError(
        f'{self.dataset} {arm} lr={lr:g} seed={seed} diverged at the chosen learning rate; drop '
        'that rate from --lrs.'
      )
    return study_outputs.test_run(
      self.config(arm, lr, seed),
      self.workdir(arm, lr, seed),
      result,
      arm == 'concat',
      self.protocol.test_split,
      self.protocol.cka_max_examples,
    )

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
    tests[arm] = [runs.test(arm, chosen[arm], seed) for seed in seeds]
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


def study_dataset(dataset: str, protocol: study_protocol.Protocol) -> dict:
  """Runs (or reuses) every run of `dataset`, selects on validation, tests, writes its report."""
  spec = study_protocol.dataset_spec(dataset, protocol)
  base = study_protocol.base_config(dataset, protocol)
  metric, lower = study_runs.primary_metric(base)
  arms = study_protocol.dataset_arms(protocol, spec)
  sizes = study_arms.match_sizes(base)
  # Left out: learned fusions with a projection narrower than the narrower branch.
  narrow = study_arms.narrow_fusions(sizes, study_arms.branch_widths(base))
  arms = [a for a in arms if a not in narrow]
  trained = [a for a in arms if study_arms.ARMS[a].trained]
  seeds = list(protocol.seeds if protocol.seeds is not None else range(spec.seeds))
  lrs = [float(lr) for lr in (protocol.lrs or spec.lrs)]
  num_select = protocol.selection_seeds or spec.selection_seeds
  select_seeds = seeds[: min(len(seeds), num_select)] if num_select else seeds
  test_when_trained = (
    spec.test_when_trained if protocol.test_when_trained is None else protocol.test_when_trained
  )
  runs = _Runs(
    dataset,
    protocol,
    {a: study_arms.ARMS[a].configure(base, sizes) for a in trained},
    test_when_trained,
  )

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
  blocks = study_protocol.test_blocks(dataset, protocol, base)
  results = runs.results

  summary = {
    'dataset': dataset,
    # A control's (verdict, reason) by design (shipped.designed_verdict); None for a real dataset.
    'designed_verdict': None if protocol.files else shipped.designed_verdict(dataset),
    'metric': metric,
    'lower_is_better': lower,
    'margin': study_protocol.margin(dataset, protocol, base),
    'seeds': seeds,
    'selection_seeds': select_seeds,
    'lrs': lrs,
    'arms': arms,
    'chosen_lr': chosen,
    'test_when_trained': test_when_trained,
    'val_means': val_means,
    'val_loss_means': val_loss_means,
    'bootstrap_unit': 'example'
    if blocks is None
    else study_protocol.bootstrap_unit(dataset, protocol),
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
  study_report.write_dataset_report(
    summary, protocol.results_dir, study_protocol.provenance(protocol)
  )
  return summary


def run_study(protocol: study_protocol.Protocol) -> list[dict]:
  """Every dataset of the protocol, then the summary across datasets (with those an earlier
  invocation studied in the same study_dir)."""
  os.makedirs(protocol.study_dir, exist_ok=True)
  summaries = [study_dataset(d, protocol) for d in protocol.datasets]
  study_summary_report.write_summary(
    summaries,
    protocol.results_dir,
    study_protocol.provenance(protocol),
    earlier_summaries(protocol),
  )
  return summaries


def earlier_summaries(protocol: study_protocol.Protocol) -> list[dict]:
  """The shipped datasets an earlier invocation finished in the same study_dir (their
  summary.json), so that a study of some datasets (or of your files) is summarised with the rest
  and judged against the controls' test (e.g. each dataset studied in its own sitting or on its own
  machine, docs/study.md#a-study-that-spans-machines).

  Only datasets of the same build (`--builder_config`) count, and each one's verdict is decided
  again under the current rule from its recorded comparisons (the file may predate a revision).
  """
  out = []
  for name in study_grids.DATASETS:
    path = os.path.join(protocol.study_dir, name, 'summary.json')
    if name in protocol.datasets or not os.path.exists(path):
      continue
    summary = study_runs.read_json(path)
    if summary.get('data') != study_protocol.shipped_build(name, protocol):
      continue
    try:
      summary['analysis']['verdict'] = study_rule.verdict(
        summary['analysis']['comparisons'], summary['margin']
      )
    except KeyError as e:
      raise ConfigError(
        f'{path} lacks {e} (written by an older study): run that dataset again '
        f'(--datasets={name}), or use another --study_dir.'
      ) from None
    out.append(summary)
  return out
