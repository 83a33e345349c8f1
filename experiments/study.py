"""The study: is concatenating CNN and LSTM outputs meaningful? One command runs the whole protocol.

  python experiments/study.py                                   # every dataset, its default grid
  python experiments/study.py --datasets=bbc_news,weather_stations --seeds=10 --lrs=3e-4,1e-3,3e-3
  python experiments/study.py --datasets=moving_digits          # the reduced video grid (see VIDEO_ARMS)

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
  4. Statistics (study_stats.py) and the report (study_report.py): per-arm mean with 95% bootstrap
     CIs over seeds, paired differences of concat against every other arm with CIs, P(concat
     better), exact sign-flip p-values with Holm correction, test-set sampling CIs, redundancy of the
     concat model (CKA between its CNN and LSTM features; the metric with either branch zeroed).

Resumable: each run writes result.json (validation) and, once selected, test.json when it is done;
a finished run is reused, an interrupted one resumes from its own checkpoint (or restarts from
scratch if that checkpoint cannot be restored). A run dir holding a different config stops the study
with one line. After a run, only its best checkpoint is kept (--keep=best) to bound disk use.

Until every shipped dataset has a validation split, `--validation_from_train` (the default) carves
it from train (train[:90%] / train[90%:]); `--train_split/--validation_split/--test_split` name the
splits explicitly once they exist.
"""

import copy
import dataclasses
import hashlib
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from typing import Any, Optional, Sequence

from absl import flags
from absl import logging
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# pylint: disable=g-import-not-at-top,wrong-import-position
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from hybrid_jax import checkpointing
from hybrid_jax import cli
from hybrid_jax import data as data_lib
from hybrid_jax import models
from hybrid_jax import train
from hybrid_jax.errors import ConfigError
from hybrid_jax.models import fusion
import study_arms
import study_report
import study_stats
# pylint: enable=g-import-not-at-top,wrong-import-position

ALL_ARMS = tuple(study_arms.ARMS)
# Video (~10 min per default run on a 2-core CPU) runs a reduced grid: the arms of the three primary
# comparisons plus LSTM∥LSTM; the widened CNN (~8x concat's compute, for a branch capped at 50% by
# construction), CNN∥CNN and the learned fusions are left out; 5 seeds, learning rate chosen on seed 0
# (DATASETS['moving_digits'].selection_seeds).
VIDEO_ARMS = ('cnn', 'lstm', 'concat', 'ensemble', 'lstm_wide', 'lstm+lstm')


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """How the study runs one dataset.

  config: module in configs/ giving the task's base config.
  overrides: config fields set on top, e.g. {'dataset.name': 'tweet_sentiment'}.
  margin: equivalence margin of the decision rule, in the primary metric's units.
  seeds: default number of seeds (0..seeds-1); arms: default arms; lrs: default learning rates.
  evals_per_run: default validation evaluations (and checkpoints) per run.
  selection_seeds: choose the learning rate on the first K seeds only (None: all); the other seeds
    then run only at the chosen rate (a budget lever for slow datasets).
  """
  config: str
  overrides: dict
  margin: float
  seeds: int = 10
  evals_per_run: int = 10
  selection_seeds: Optional[int] = None
  arms: tuple[str, ...] = ALL_ARMS
  lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3)


DATASETS: dict[str, DatasetSpec] = {
    # An eval of 1,600 validation clips costs ~20-60 s on CPU, a tenth of a run: 5 per run.
    'moving_digits': DatasetSpec('video', {}, margin=0.01, seeds=5, arms=VIDEO_ARMS,
                                 evals_per_run=5, selection_seeds=1),
    'bbc_news': DatasetSpec('text', {}, margin=0.01),
    'tweet_sentiment': DatasetSpec(
        'text', {'dataset.name': 'tweet_sentiment', 'model.num_classes': 3}, margin=0.01),
    'weather_stations': DatasetSpec('sensor', {}, margin=0.05),  # 0.05 °F of MAE.
    # The time-series classification set of issue 7 gets its line here when it lands, e.g.
    # 'japanese_vowels': DatasetSpec('<its config module>', {}, margin=0.01),
}


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


def primary_metric(config) -> tuple[str, bool]:
  """(metric name, lower is better): accuracy for classification, MAE in original units otherwise."""
  if models.is_regression(config):
    return 'mae_original_units', True
  return 'accuracy', False


def base_config(dataset: str, protocol: Protocol) -> ml_collections.ConfigDict:
  """The dataset's task config with the protocol's splits, run length and eval cadence."""
  if dataset not in DATASETS:
    raise ConfigError(f'Unknown --datasets entry {dataset!r}: use any of {sorted(DATASETS)}.')
  spec = DATASETS[dataset]
  config = importlib.import_module(f'configs.{spec.config}').get_config(protocol.config_variant)
  config = copy.deepcopy(config)
  for field, value in spec.overrides.items():
    section, name = field.split('.')
    config[section][name] = value
  name = config.dataset.name + (f'/{protocol.builder_config}' if protocol.builder_config else '')
  steps = int(protocol.steps.get(dataset, config.num_train_steps))
  every = max(1, steps // max(1, protocol.evals_per_run or spec.evals_per_run))
  config.dataset.update(name=name, train_split=protocol.train_split,
                        eval_split=protocol.validation_split)
  if protocol.data_dir:
    config.dataset.data_dir = protocol.data_dir
  config.update(num_train_steps=steps, eval_every_steps=every, checkpoint_every_steps=every,
                log_every_steps=min(int(config.log_every_steps), every), keep_checkpoints=1)
  config.best_metric = primary_metric(config)[0]
  data_lib.load_info(config)  # Prepares the data, fills the model fields the data determines.
  return config


def fingerprint(config) -> str:
  return hashlib.sha256(config.to_json_best_effort(sort_keys=True).encode()).hexdigest()[:16]


def _read_json(path: str) -> Optional[dict]:
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _write_json(path: str, value: Any) -> None:
  """Atomic: a crash never leaves a half-written result that a later invocation would trust."""
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(value, f, indent=1, default=float)
  os.replace(tmp, path)


def validation_curve(workdir: str, metric: str) -> list[tuple[int, float]]:
  """(step, metric) of every eval line in metrics.jsonl; a resumed run's repeats: the last wins."""
  points = {}
  path = os.path.join(workdir, 'metrics.jsonl')
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      for line in f:
        record = json.loads(line)
        if record.get('split') == 'eval' and metric in record:
          points[int(record['step'])] = float(record[metric])
  return sorted(points.items())


def _manager(workdir: str, config, read_only: bool):
  return checkpointing.create_manager(workdir, 1, config.best_metric, read_only=read_only)


def train_run(config, workdir: str, keep: str = 'best') -> dict:
  """Trains one run (or reuses / resumes it) and returns its result.json record.

  The record: fingerprint, seconds, params, diverged, best_step, val_best (the primary metric of the
  kept checkpoint on the validation split), val_curve [[step, value]].
  """
  path = os.path.join(workdir, 'result.json')
  fp = fingerprint(config)
  result = _read_json(path)
  if result is not None:
    if result.get('fingerprint') != fp:
      raise ConfigError(f'{workdir} holds a run of another config (fingerprint '
                        f'{result.get("fingerprint")} != {fp}): delete it or use another '
                        '--study_dir.')
    _prune(config, workdir, result, keep)
    return result
  metric, _ = primary_metric(config)
  start = time.perf_counter()
  diverged = None
  try:
    try:
      train.train_and_evaluate(config, workdir)
    except checkpointing.CheckpointError as e:  # An interrupted run whose checkpoint is unusable.
      logging.warning('Restarting %s from scratch: %s', workdir, e)
      shutil.rmtree(workdir)
      train.train_and_evaluate(config, workdir)
  except FloatingPointError as e:
    diverged = str(e)
  curve = validation_curve(workdir, metric)
  best_step, val_best = None, None
  if diverged is None:
    manager = _manager(workdir, config, read_only=True)
    try:
      best_step = checkpointing.resolve_step(manager, 'best')
    finally:
      manager.close()
    values = dict(curve)
    if best_step not in values:
      raise ValueError(f'{workdir}: best checkpoint step {best_step} has no eval line in '
                       'metrics.jsonl; the run directory is inconsistent, delete it.')
    val_best = values[best_step]
  result = {'fingerprint': fp, 'seconds': time.perf_counter() - start,
            'params': study_arms.count_params(config), 'diverged': diverged,
            'best_step': best_step, 'val_best': val_best, 'val_curve': curve}
  _write_json(path, result)
  _prune(config, workdir, result, keep)
  return result


def _prune(config, workdir: str, result: dict, keep: str) -> None:
  """Deletes every checkpoint except the best one (keep='best'); nothing with keep='all'."""
  if keep != 'best' or result.get('best_step') is None:
    return
  directory = checkpointing.checkpoint_dir(workdir)
  if not os.path.isdir(directory) or sorted(
      d for d in os.listdir(directory) if d.isdigit()) == [str(result['best_step'])]:
    return  # Nothing to delete (the common case when a finished study is re-run).
  manager = _manager(workdir, config, read_only=False)
  try:
    for step in manager.all_steps():
      if step != result['best_step']:
        manager.delete(step)
  finally:
    manager.close()


def _zeroing_interceptor(zero: Optional[int]):
  """Flax method interceptor on `fusion.Fusion`: records its branch inputs (sow) and zeroes one."""

  def interceptor(next_fun, args, kwargs, context):
    if not (isinstance(context.module, fusion.Fusion) and context.method_name == '__call__'):
      return next_fun(*args, **kwargs)
    features = list(args[0])
    context.module.sow('intermediates', 'branch_features', tuple(features))
    if zero is not None:
      features[zero] = jnp.zeros_like(features[zero])
    return next_fun(features, *args[1:], **kwargs)

  return interceptor


_FORWARD_FNS: dict[Any, Any] = {}


def _forward_fn(model, regression: bool, zero: Optional[int]):
  """jit((params, batch) -> (probabilities | predictions, [fusion inputs])), one per model and mode.

  Cached so that the seeds and runs of one arm compile once.
  """
  key = (model, regression, zero)
  if key not in _FORWARD_FNS:

    def forward(params, batch):
      with nn.intercept_methods(_zeroing_interceptor(zero)):
        out, state = model.apply({'params': params}, batch, train=False, mutable=['intermediates'])
      features = jax.tree.leaves(state['intermediates'])
      return (out if regression else jax.nn.softmax(out.astype(jnp.float32), -1)), features

    _FORWARD_FNS[key] = jax.jit(forward)
  return _FORWARD_FNS[key]


def predict_split(config, workdir: str, step: int, split: str, zero: Optional[int] = None,
                  with_features: bool = False) -> dict[str, np.ndarray]:
  """Per-example outputs of checkpoint `step` of `workdir` on `split`, in the split's order.

  (Until `hybrid_jax.load(workdir).predict/embed` exists; this reads the run's own checkpoint.)

  Args:
    zero: index of a branch whose features are zeroed before the fusion (0: first branch).
    with_features: also return 'features_<i>' [N, d_i], the inputs of the fusion.
  Returns:
    Classification: 'probs' float32 [N, classes], 'label' int [N]. Regression: 'prediction' and
    'target' float32 [N] (normalized units) and 'scale' (target std: x scale = original units).
  """
  config = copy.deepcopy(config)
  config.dataset.eval_split = split
  model = models.create_model(config)
  device = jax.local_devices()[0]
  abstract = checkpointing.abstract_like(
      jax.eval_shape(lambda k: train.create_train_state(config, model, k), jax.random.key(0)),
      jax.sharding.SingleDeviceSharding(device))
  manager = _manager(workdir, config, read_only=True)
  try:
    params = checkpointing.restore(manager, step, abstract).params
  finally:
    manager.close()
  regression = models.is_regression(config)
  forward = _forward_fn(model, regression, zero)
  keep_keys = ('target',) if regression else ('label',)
  chunks: dict[str, list[np.ndarray]] = {}
  for batch in data_lib.create_eval_batches(config, process_index=0, process_count=1):
    mask = np.asarray(batch.pop('mask'))
    out, features = forward(params, {k: v for k, v in batch.items() if k not in keep_keys})
    parts = {'prediction' if regression else 'probs': np.asarray(out)}
    parts.update({k: np.asarray(batch[k]) for k in keep_keys})
    if with_features:
      parts.update({f'features_{i}': np.asarray(f).reshape(len(mask), -1)
                    for i, f in enumerate(features)})
    for k, v in parts.items():
      chunks.setdefault(k, []).append(v[mask])
  outputs = {k: np.concatenate(v) for k, v in chunks.items()}
  if regression:
    outputs['scale'] = np.float64(data_lib.load_info(config).target_std)
  return outputs


def _num_examples(outputs: dict[str, np.ndarray]) -> int:
  return len(outputs['label' if 'label' in outputs else 'target'])


def metric_of(outputs: dict[str, np.ndarray]) -> float:
  """Accuracy, or MAE in original units, from `predict_split` outputs."""
  if 'probs' in outputs:
    return float(np.mean(np.argmax(outputs['probs'], -1) == outputs['label']))
  return float(np.mean(np.abs(outputs['prediction'] - outputs['target'])) * outputs['scale'])


def sampling_ci(outputs: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[float, float]:
  """95% test-set sampling CI of one run's metric: Wilson (accuracy) or bootstrap over examples."""
  if 'probs' in outputs:
    correct = np.argmax(outputs['probs'], -1) == outputs['label']
    return study_stats.wilson_interval(float(correct.sum()), len(correct))
  errors = np.abs(outputs['prediction'] - outputs['target']) * outputs['scale']
  return study_stats.mean_ci_over_examples(errors, rng=rng)


def test_run(config, workdir: str, result: dict, redundancy: bool, protocol: Protocol) -> dict:
  """Evaluates the kept checkpoint on the test split once; test.json + test_outputs.npz (reused).

  With `redundancy` (the concat model): CKA between its branch features and the metric with each
  branch's features zeroed.
  """
  path = os.path.join(workdir, 'test.json')
  done = _read_json(path)
  if done is not None and done.get('fingerprint') == result['fingerprint'] and (
      'redundancy' in done or not redundancy):
    return done
  step, split = result['best_step'], protocol.test_split
  outputs = predict_split(config, workdir, step, split, with_features=redundancy)
  features = [outputs.pop(k) for k in sorted(k for k in outputs if k.startswith('features_'))]
  np.savez(os.path.join(workdir, 'test_outputs.npz'), **outputs)
  rng = np.random.default_rng(0)
  record = {'fingerprint': result['fingerprint'], 'step': step, 'split': split,
            'metric': metric_of(outputs), 'num_examples': _num_examples(outputs),
            'sampling_ci': sampling_ci(outputs, rng)}
  if redundancy and len(features) == 2:
    n = len(features[0])
    sub = np.sort(rng.permutation(n)[:protocol.cka_max_examples])
    record['redundancy'] = {
        'cka': study_stats.linear_cka(features[0], features[1]),
        'cka_debiased': study_stats.linear_cka(features[0][sub], features[1][sub], debiased=True),
        'widths': [int(f.shape[1]) for f in features],
        'zeroed': [metric_of(predict_split(config, workdir, step, split, zero=i))
                   for i in range(2)]}
  _write_json(path, record)
  return record


def load_outputs(workdir: str) -> dict[str, np.ndarray]:
  with np.load(os.path.join(workdir, 'test_outputs.npz')) as f:
    return {k: f[k] for k in f.files}


def ensemble_outputs(members: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Averaged probabilities (classification) or predictions (regression) of aligned test outputs."""
  first = members[0]
  key = 'probs' if 'probs' in first else 'prediction'
  truth = 'label' if key == 'probs' else 'target'
  for m in members[1:]:
    if not np.array_equal(m[truth], first[truth]):  # Trust nothing read back: same examples, order.
      raise ValueError('Ensemble members were evaluated on different test examples.')
  out = {key: np.mean([m[key] for m in members], axis=0), truth: first[truth]}
  if 'scale' in first:
    out['scale'] = first['scale']
  return out


def run_dir(protocol: Protocol, dataset: str, arm: str, lr: float, seed: int) -> str:
  return os.path.join(protocol.study_dir, dataset, arm, f'lr{lr:g}_seed{seed}')


def study_dataset(dataset: str, protocol: Protocol) -> dict:
  """Runs (or reuses) every run of `dataset`, selects on validation, tests, writes its report."""
  spec = DATASETS.get(dataset)
  base = base_config(dataset, protocol)
  metric, lower = primary_metric(base)
  arms = list(protocol.arms or spec.arms)
  unknown = [a for a in arms if a not in study_arms.ARMS]
  if unknown:
    raise ConfigError(f'Unknown --arms {unknown}: use any of {list(study_arms.ARMS)}.')
  if 'ensemble' in arms:
    missing = [m for m in study_arms.ENSEMBLE_MEMBERS if m not in arms]
    if missing:
      raise ConfigError(f"The 'ensemble' arm needs the arms {missing} too: add them to --arms.")
  seeds = list(protocol.seeds if protocol.seeds is not None else range(spec.seeds))
  lrs = [float(lr) for lr in (protocol.lrs or spec.lrs)]
  sizes = study_arms.match_sizes(base)
  trained = [a for a in arms if study_arms.ARMS[a].trained]
  configs = {a: study_arms.ARMS[a].configure(base, sizes) for a in trained}

  num_select = len(seeds) if not (protocol.selection_seeds or spec.selection_seeds) else min(
      len(seeds), protocol.selection_seeds or spec.selection_seeds)
  select_seeds = seeds[:num_select]
  runs: dict[tuple[str, float, int], dict] = {}

  def run(arm, lr, seed):
    config = copy.deepcopy(configs[arm])
    config.update(learning_rate=lr, seed=seed)
    print(f'[study] {dataset} {arm} lr={lr:g} seed={seed}', flush=True)
    runs[arm, lr, seed] = train_run(config, run_dir(protocol, dataset, arm, lr, seed), protocol.keep)

  for seed in select_seeds:  # Seeds outermost: an interrupted study has balanced arms so far.
    for lr in lrs:
      for arm in trained:
        run(arm, lr, seed)
  worst = np.inf if lower else -np.inf
  val_means = {(a, lr): float(np.mean([worst if runs[a, lr, s]['val_best'] is None
                                       else runs[a, lr, s]['val_best'] for s in select_seeds]))
               for a in trained for lr in lrs}
  chosen = {a: (min if lower else max)(lrs, key=lambda lr, a=a: val_means[a, lr]) for a in trained}
  for seed in seeds[num_select:]:  # With selection_seeds < seeds: the rest only at the chosen rate.
    for arm in trained:
      run(arm, chosen[arm], seed)

  tests: dict[str, list[dict]] = {}
  outputs: dict[str, list[dict]] = {}
  for arm in trained:
    lr = chosen[arm]
    tests[arm], outputs[arm] = [], []
    for seed in seeds:
      workdir = run_dir(protocol, dataset, arm, lr, seed)
      result = runs[arm, lr, seed]
      if result['best_step'] is None:
        raise ValueError(f'{dataset} {arm} lr={lr:g} seed={seed} diverged at the chosen learning '
                         'rate; drop that rate from --lrs.')
      config = copy.deepcopy(configs[arm])
      config.update(learning_rate=lr, seed=seed)
      tests[arm].append(test_run(config, workdir, result, arm == 'concat', protocol))
      if arm in study_arms.ENSEMBLE_MEMBERS and 'ensemble' in arms:
        outputs[arm].append(load_outputs(workdir))
  if 'ensemble' in arms:
    rng = np.random.default_rng(0)
    tests['ensemble'] = []
    for k in range(len(seeds)):
      ens = ensemble_outputs([outputs[m][k] for m in study_arms.ENSEMBLE_MEMBERS])
      tests['ensemble'].append({'metric': metric_of(ens), 'sampling_ci': sampling_ci(ens, rng),
                                'num_examples': _num_examples(ens)})

  summary = {
      'dataset': dataset, 'metric': metric, 'lower_is_better': lower, 'margin': spec.margin,
      'seeds': seeds, 'selection_seeds': select_seeds, 'lrs': lrs, 'arms': arms,
      'chosen_lr': chosen,
      'val_means': {f'{a}@{lr:g}': v for (a, lr), v in val_means.items()},
      'sizes': sizes,
      'params': {a: study_arms.count_params(configs[a]) for a in trained},
      'test': {a: [t['metric'] for t in tests[a]] for a in tests},
      'sampling_ci': {a: [list(t['sampling_ci']) for t in tests[a]] for a in tests},
      'num_test_examples': tests[arms[0]][0]['num_examples'],
      'redundancy': [t['redundancy'] for t in tests.get('concat', []) if 'redundancy' in t],
      'val_curves': {a: [runs[a, chosen[a], s]['val_curve'] for s in seeds] for a in trained},
      'seconds': {a: float(np.mean([r['seconds'] for (arm, _, _), r in runs.items() if arm == a]))
                  for a in trained},
      'steps': int(base.num_train_steps), 'splits': [protocol.train_split,
                                                     protocol.validation_split,
                                                     protocol.test_split],
      'data': base.dataset.name,
  }
  summary['analysis'] = study_report.analyse(summary, protocol.num_resamples)
  _write_json(os.path.join(protocol.study_dir, dataset, 'summary.json'), summary)
  study_report.write_dataset_report(summary, protocol.results_dir, provenance(protocol))
  return summary


def provenance(protocol: Protocol) -> dict:
  """The exact command, git commit (and whether the tree was dirty) and package versions."""
  def git(*args):
    try:
      return subprocess.run(['git', '-C', ROOT, *args], capture_output=True, text=True,
                            check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
      return 'unknown'
  versions = {'python': platform.python_version()}
  for name in ('jax', 'flax', 'optax', 'orbax.checkpoint', 'grain', 'numpy'):
    try:
      versions[name] = importlib.import_module(name).__version__
    except (ImportError, AttributeError):
      versions[name] = 'unknown'
  return {'command': protocol.command, 'commit': git('rev-parse', 'HEAD'),
          'dirty': bool(git('status', '--porcelain', '--untracked-files=no')),
          'versions': versions, 'devices': f'{jax.device_count()} x {jax.devices()[0].platform}',
          'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}


def run_study(protocol: Protocol) -> list[dict]:
  """Every dataset of the protocol, then the summary across datasets."""
  os.makedirs(protocol.study_dir, exist_ok=True)
  summaries = [study_dataset(d, protocol) for d in protocol.datasets]
  study_report.write_summary(summaries, protocol.results_dir, provenance(protocol))
  return summaries


def define_flags(flag_values=flags.FLAGS) -> None:
  """Command-line flags (defined only when run as a script, so tests can import this module)."""
  f = dict(flag_values=flag_values)
  flags.DEFINE_list('datasets', list(DATASETS), f'Datasets to study, of {list(DATASETS)}.', **f)
  flags.DEFINE_list('arms', None, f"Arms (default: each dataset's own list), of {list(ALL_ARMS)}.",
                    **f)
  flags.DEFINE_string('seeds', None, 'Seeds: a count N (0..N-1) or a list 0,1,2 (default: each '
                      "dataset's own count).", **f)
  flags.DEFINE_list('lrs', None, 'Learning-rate grid, chosen per arm on validation '
                    '(default 3e-4,1e-3,3e-3).', **f)
  flags.DEFINE_list('steps', [], 'Run length per dataset, e.g. bbc_news=500 (default: the config).',
                    **f)
  flags.DEFINE_integer('evals_per_run', None, 'Validation evaluations (and checkpoints) per run '
                       "(default: each dataset's own, 10; video 5).", **f)
  flags.DEFINE_integer('selection_seeds', None, 'Choose learning rates on the first K seeds; the '
                       "other seeds run only at the chosen rate (default: each dataset's own; "
                       'all seeds, video 1).', **f)
  flags.DEFINE_bool('validation_from_train', True, 'Carve validation from train (train[:90%] / '
                    'train[90%:]); turn off once the datasets ship a validation split.', **f)
  flags.DEFINE_string('train_split', None, 'Train split (overrides --validation_from_train).', **f)
  flags.DEFINE_string('validation_split', None, 'Validation split (idem).', **f)
  flags.DEFINE_string('test_split', 'test', 'Test split, evaluated once per selected run.', **f)
  flags.DEFINE_string('config_variant', '', "Config variant of every task, e.g. 'smoke'.", **f)
  flags.DEFINE_string('builder_config', '', "Builder config of every dataset, e.g. 'tiny'.", **f)
  flags.DEFINE_string('data_dir', None, "TFDS data_dir (default: TFDS's).", **f)
  flags.DEFINE_enum('keep', 'best', ['best', 'all'], 'Checkpoints kept after a run.', **f)
  flags.DEFINE_string('study_dir', 'workdirs/study', 'Where the runs go (resumable).', **f)
  flags.DEFINE_string('results_dir', os.path.join(ROOT, 'experiments', 'results'),
                      'Where the reports and plots go.', **f)


def protocol_from_flags(args, argv: Sequence[str]) -> Protocol:
  seeds = None
  if args.seeds:
    seeds = (list(range(int(args.seeds))) if ',' not in args.seeds
             else [int(s) for s in args.seeds.split(',') if s])
  steps = {}
  for item in args.steps:
    name, _, value = item.partition('=')
    if not value.isdigit():
      raise ConfigError(f'--steps entry {item!r} is not dataset=N, e.g. bbc_news=500.')
    steps[name] = int(value)
  train_split, validation_split = (('train[:90%]', 'train[90%:]') if args.validation_from_train
                                   else ('train', 'validation'))
  return Protocol(
      study_dir=args.study_dir, results_dir=args.results_dir, datasets=args.datasets,
      arms=args.arms, seeds=seeds, lrs=[float(x) for x in args.lrs] if args.lrs else None,
      steps=steps, evals_per_run=args.evals_per_run, selection_seeds=args.selection_seeds,
      train_split=args.train_split or train_split,
      validation_split=args.validation_split or validation_split, test_split=args.test_split,
      config_variant=args.config_variant, builder_config=args.builder_config,
      data_dir=args.data_dir, keep=args.keep,
      command='python ' + ' '.join([os.path.relpath(argv[0], ROOT)] + list(argv[1:])))


def main(argv):
  logging.set_verbosity(logging.WARNING)
  run_study(protocol_from_flags(flags.FLAGS, sys.argv))


if __name__ == '__main__':
  define_flags()
  cli.run(main, extra_errors=(checkpointing.CheckpointError,))
