"""The test phase of the study: per-example outputs of a run's kept checkpoint, and the arms built
from the trained runs' outputs (the late ensemble, the probe).

  record = test_run(config, workdir, result)   # test.json + test_outputs.npz (per-example outputs)
  ens = ensemble_outputs([load_outputs(a), load_outputs(b)])
  record = probe_run(members, workdir, splits) # a head on the frozen cnn-only and lstm-only features

Per-example outputs come from the run's own checkpoint (`predict_split`), read through the
training pipeline's eval batches. Branch features, and the metric with one branch's features
replaced (mean-ablated or zeroed), come from `hybrid_jax.ablation.branch_features` (the same helper
`hybrid_jax.load` uses).
"""

import os
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.study import cka as study_cka
from experiments.study import runs as study_runs
from experiments.study import stats as study_stats
from hybrid_jax import ablation
from hybrid_jax import checkpoint_verification as verification
from hybrid_jax import checkpoints
from hybrid_jax import fileio
from hybrid_jax import input_kinds
from hybrid_jax import steps
from hybrid_jax.data import datasets
from hybrid_jax.data import pipeline
from hybrid_jax.errors import CheckpointError
from hybrid_jax.errors import ConfigError


_FORWARD_FNS: dict[Any, Any] = {}


def _forward_fn(model, regression: bool, ablate: Optional[int]):
  """jit((variables, batch, value) -> (probabilities | predictions, [fusion inputs])).

  With `ablate` = i, branch i's features are replaced by `value` (zeros, or their mean) before the
  fusion. Cached per model and branch, so the seeds and runs of one arm compile once.
  """
  key = (model, regression, ablate)
  if key not in _FORWARD_FNS:

    def forward(variables, batch, value):
      replace = None if ablate is None else {ablate: value}
      with ablation.branch_features(replace) as features:
        out = model.apply(variables, batch, train=False)
      return (out if regression else jax.nn.softmax(out.astype(jnp.float32), -1)), list(features)

    _FORWARD_FNS[key] = jax.jit(forward)
  return _FORWARD_FNS[key]


def predict_split(
  source: datasets.Source,
  workdir: str,
  step: int,
  split: str,
  ablate: Optional[tuple[int, Any]] = None,
  with_features: bool = False,
) -> dict[str, np.ndarray]:
  """Per-example outputs of checkpoint `step` of `workdir` on `split`, in the split's order.

  `hybrid_jax.load(workdir).predict/embed` do this for raw inputs; here the split is read through
  the training pipeline's own eval batches (the examples `--mode=eval` scores, in its order), so
  that a run's test metric equals the train loop's evaluation of the same checkpoint (tested).

  Args:
    source: the run's resolved dataset (`datasets.resolve(config)`); `source.config` is the run's.
    ablate: (branch index, 'zero' or its mean features [d]): that branch's features are replaced
      before the fusion (0: the first branch).
    with_features: also return 'features_<i>' [N, d_i], the inputs of the fusion.
  Returns:
    Classification: 'probs' float32 [N, classes], 'label' int [N]. Regression: 'prediction' and
    'target' float32 [N] (normalized units) and 'scale' (target std: x scale = original units).
  """
  config = source.config
  model = input_kinds.create_model(config)
  shapes = jax.eval_shape(model.init, jax.random.key(0), input_kinds.dummy_batch(config, 2))
  abstract = checkpoints.abstract_like(
    steps.variables_target(shapes), jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  )
  manager = study_runs.run_checkpoints(workdir, config, read_only=True)
  try:
    variables = steps.variables_of(
      checkpoints.restore(manager, step, abstract, params_only=True).state
    )
  finally:
    manager.close()
  head = input_kinds.head(config)
  index, value = ablate if ablate is not None else (None, np.zeros((), np.float32))
  if isinstance(value, str):  # 'zero': a scalar zero, broadcast to the features.
    value = np.zeros((), np.float32)
  forward = _forward_fn(model, head.regression, index)
  keep_keys = (head.label_key,)
  chunks: dict[str, list[np.ndarray]] = {}
  batches = pipeline.create_eval_batches(source, split, process_index=0, process_count=1)
  for batch in batches:
    mask = np.asarray(batch.pop('mask'))
    inputs = {k: v for k, v in batch.items() if k not in keep_keys}
    out, features = forward(variables, inputs, np.asarray(value, np.float32))
    parts = {'prediction' if head.regression else 'probs': np.asarray(out)}
    parts.update({k: np.asarray(batch[k]) for k in keep_keys})
    if with_features:
      parts.update(
        {f'features_{i}': np.asarray(f).reshape(len(mask), -1) for i, f in enumerate(features)}
      )
    for k, v in parts.items():
      chunks.setdefault(k, []).append(v[mask])
  outputs = {k: np.concatenate(v) for k, v in chunks.items()}
  if head.regression:
    outputs['scale'] = np.float64(source.info.target_std)
  return outputs


def num_examples(outputs: dict[str, np.ndarray]) -> int:
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


def test_run(
  config,
  workdir: str,
  result: dict,
  redundancy: bool,
  split: str = 'test',
  cka_max_examples: int = 2_000,
) -> dict:
  """Evaluates the kept checkpoint on the test split once; test.json + test_outputs.npz (reused).

  With `redundancy` (the concat model): CKA between its branch features, and the metric with each
  branch's features replaced by their mean over the validation split ('mean_ablated', the standard
  ablation) and by zeros ('zeroed', off-distribution for ReLU features, kept for comparison).
  """
  path = os.path.join(workdir, 'test.json')
  done = study_runs.read_json(path)
  if (
    done is not None
    and done.get('fingerprint') == result['fingerprint']
    and done.get('split') == split
    and ('mean_ablated' in done.get('redundancy', {}) or not redundancy)
  ):
    return done
  step = result['best_step']
  if not os.path.isdir(verification.step_dir(checkpoints.checkpoint_dir(workdir), step)):
    raise CheckpointError(
      f'{workdir}: its kept checkpoint (step {step}) is gone and it has no usable test.json (a '
      'study dir copied without its checkpoints?): delete that run dir and run the study again, '
      'which trains it again.'
    )
  source = datasets.resolve(config)
  outputs = predict_split(source, workdir, step, split, with_features=redundancy)
  features = [outputs.pop(k) for k in sorted(k for k in outputs if k.startswith('features_'))]
  np.savez(os.path.join(workdir, 'test_outputs.npz'), **outputs)
  rng = np.random.default_rng(0)
  record = {
    'fingerprint': result['fingerprint'],
    'step': step,
    'split': split,
    'metric': metric_of(outputs),
    'num_examples': num_examples(outputs),
    'sampling_ci': sampling_ci(outputs, rng),
  }
  if redundancy and len(features) == 2:
    n = len(features[0])
    sub = np.sort(rng.permutation(n)[:cka_max_examples])
    record['redundancy'] = {
      'cka': study_cka.linear_cka(features[0], features[1]),
      'cka_debiased': study_cka.linear_cka(features[0][sub], features[1][sub], debiased=True),
      'widths': [int(f.shape[1]) for f in features],
      'zeroed': [
        metric_of(predict_split(source, workdir, step, split, ablate=(i, 'zero'))) for i in range(2)
      ],
    }
    validation = predict_split(
      source, workdir, step, source.config.dataset.eval_split, with_features=True
    )
    record['redundancy']['mean_ablated'] = [
      metric_of(
        predict_split(
          source, workdir, step, split, ablate=(i, validation[f'features_{i}'].mean(axis=0))
        )
      )
      for i in range(2)
    ]
  fileio.write_json(path, record)
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
      raise ConfigError(
        'Ensemble members were evaluated on different test examples: re-run the '
        'study with one --test_split for every arm.'
      )
  out = {key: np.mean([m[key] for m in members], axis=0), truth: first[truth]}
  if 'scale' in first:
    out['scale'] = first['scale']
  return out


def _standardised(train_NF: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
  mean, std = train_NF.mean(0), train_NF.std(0) + 1e-6
  return [(x - mean) / std for x in (train_NF, *others)]


def _member_id(run: str, step: int) -> dict:
  """What identifies a probe member: its run ('<arm>/<lr..._seed...>'), fingerprint and kept step."""
  result = study_runs.read_json(os.path.join(run, 'result.json')) or {}
  name = os.path.join(os.path.basename(os.path.dirname(run)), os.path.basename(run))
  return {'run': name, 'fingerprint': result.get('fingerprint'), 'step': step}


def probe_run(
  members: Sequence[tuple[datasets.Source, str, int]],
  workdir: str,
  splits: tuple[str, str, str],
  lrs: Sequence[float] = (1e-3, 1e-2, 1e-1),
  num_steps: int = 500,
) -> dict:
  """The probe arm: a linear head trained on the frozen features of single-branch runs.

  Each member (its resolved source, run dir and kept step; the cnn-only and lstm-only runs of one
  seed) gives its branch's features (the inputs of its head) on the train, validation and test
  splits; the head (the concat model's: one Dense layer on the concatenated, standardised
  features) is trained full-batch with Adam at each rate of `lrs` for `num_steps` steps, the rate and
  step chosen on validation (ties: validation loss), then tested once. Writes test.json and
  test_outputs.npz in `workdir`, reused only when made from the same member runs (arm, rate, seed,
  fingerprint and kept step), splits and search: a study whose chosen rates moved re-makes it. It
  separates "the branches' features are not complementary" (probe <= best single branch) from
  "joint training fails to use them" (probe > concat).
  """
  path = os.path.join(workdir, 'test.json')
  made_from = {
    'members': [_member_id(run, step) for _, run, step in members],
    'splits': list(splits),
    'lrs': [float(lr) for lr in lrs],
    'num_steps': num_steps,
  }
  done = study_runs.read_json(path)
  if done is not None and done.get('made_from') == made_from:
    return done
  per_split = [
    [predict_split(source, run, step, split, with_features=True) for split in splits]
    for source, run, step in members
  ]
  features = [
    np.concatenate([member[i]['features_0'] for member in per_split], axis=1) for i in range(3)
  ]
  features = _standardised(*features)
  truth = per_split[0]
  regression = 'target' in truth[0]
  key = 'target' if regression else 'label'
  labels = [jnp.asarray(truth[i][key]) for i in range(3)]
  width = 1 if regression else truth[0]['probs'].shape[1]

  def outputs(params, x):
    out = x @ params['kernel'] + params['bias']
    return out[:, 0] if regression else out

  def loss(params, x, y):
    out = outputs(params, x)
    if regression:
      return jnp.mean(jnp.square(out - y))
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y))

  def metric(params, x, y):
    out = outputs(params, x)
    if regression:
      return jnp.mean(jnp.abs(out - y))
    return jnp.mean(jnp.argmax(out, -1) == y)

  best = None
  for lr in lrs:
    tx = optax.adam(lr)
    params = {'kernel': jnp.zeros((features[0].shape[1], width)), 'bias': jnp.zeros((width,))}
    opt_state = tx.init(params)

    @jax.jit
    def step_fn(params, opt_state):
      grads = jax.grad(loss)(params, jnp.asarray(features[0]), labels[0])
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    for step in range(1, num_steps + 1):
      params, opt_state = step_fn(params, opt_state)
      if step % 25 == 0:
        x, y = jnp.asarray(features[1]), labels[1]
        value, val_loss = float(metric(params, x, y)), float(loss(params, x, y))
        score = (-value if regression else value, -val_loss)
        if best is None or score > best[0]:
          best = (score, lr, step, params)
  _, lr, step, params = best
  out = np.asarray(outputs(params, jnp.asarray(features[2])))
  test_outputs = {key: np.asarray(truth[2][key])}
  if regression:
    test_outputs.update(prediction=out, scale=truth[2]['scale'])
  else:
    test_outputs['probs'] = np.asarray(jax.nn.softmax(out, -1))
  os.makedirs(workdir, exist_ok=True)
  np.savez(os.path.join(workdir, 'test_outputs.npz'), **test_outputs)
  record = {
    'made_from': made_from,
    'split': splits[2],
    'lr': lr,
    'step': step,
    'metric': metric_of(test_outputs),
    'num_examples': num_examples(test_outputs),
    'sampling_ci': sampling_ci(test_outputs, np.random.default_rng(0)),
  }
  fileio.write_json(path, record)
  return record
