"""The train loop and checkpoint evaluation.

  metrics = train_and_evaluate(config, workdir)                 # the whole run; resumes from workdir
  metrics = evaluate(config, workdir, checkpoint='latest')      # --mode=eval

Data flows one way: config -> data + model -> train state -> steps -> checkpoints / metrics. The
config is validated and the data resolved once, at the start of each (`Run`); everything after
that reads the resolved config (`run.config`).
"""

import contextlib
import functools
import os
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hybrid_jax import checkpoint_verification
from hybrid_jax import checkpoints
from hybrid_jax import config_validation
from hybrid_jax import errors
from hybrid_jax import fileio
from hybrid_jax import inference
from hybrid_jax import input_kinds
from hybrid_jax import parallel
from hybrid_jax import reporting
from hybrid_jax import run_progress
from hybrid_jax import steps
from hybrid_jax.data import datasets
from hybrid_jax.data import pipeline

TrainState = steps.TrainState

_INIT_FNS: dict[Any, Callable[[jax.Array], TrainState]] = {}


def _init_fn(config: ml_collections.ConfigDict, sharding) -> Callable[[jax.Array], TrainState]:
  """jit(rng -> replicated initial state), shared by runs with the same model and optimizer.

  Sharing the model object (and so `apply_fn`) lets repeated runs in one process (tests,
  notebooks) reuse the compiled steps instead of compiling them again.
  """
  key = (
    config.task,
    config.head,
    config.model.to_json_best_effort(sort_keys=True),
    steps.create_optimizer(config),
    sharding,
  )
  if key not in _INIT_FNS:
    model = input_kinds.create_model(config)
    _INIT_FNS[key] = jax.jit(
      functools.partial(steps.create_train_state, config, model), out_shardings=sharding
    )
  return _INIT_FNS[key]


class Run:
  """Everything a train or eval run derives from (config, devices) before touching a checkpoint.

  The config is validated and the dataset resolved here, once; `self.config` is the resolved
  config (the caller's is not changed).
  """

  def __init__(self, config: ml_collections.ConfigDict, devices: Optional[Sequence[Any]]):
    config_validation.validate(config)
    self.source = datasets.resolve(config)
    self.config = config = self.source.config
    self.devices = tuple(devices or parallel.default_devices())
    self.local_devices = parallel.local_devices(self.devices)
    self.is_chief = jax.process_index() == 0
    self.batch_size = parallel.per_process_batch_size(config.batch_size, self.devices, 'batch_size')
    parallel.per_process_batch_size(config.eval_batch_size, self.devices, 'eval_batch_size')
    self.info = self.source.info
    self.head = input_kinds.head(config)
    self.regression = self.head.regression
    num_classes = None if self.regression else self.info.num_classes
    self.top_k = config.top_k if num_classes and 0 < config.top_k < num_classes else 0
    self.best_metric = config.best_metric or self.head.best_metric
    names = self.head.eval_metrics(self.top_k)
    self.eval_metric_names = names
    if self.best_metric not in names:
      raise errors.ConfigError(
        f'config.best_metric={self.best_metric!r} is not an eval metric of the '
        f'{self.head.name} head: use one of {names}.'
      )
    self.target_std = self.info.target_std if self.regression else None
    self.params_key, self.dropout_key = jax.random.split(jax.random.key(config.seed))
    self.sharding = parallel.replicated_sharding(self.devices)
    self.init_fn = _init_fn(config, self.sharding)
    self.abstract_state = checkpoints.abstract_like(
      jax.eval_shape(self.init_fn, self.params_key), self.sharding
    )
    self.p_train, self.p_eval = steps.make_steps(
      self.devices, self.head.name, self.top_k, float(config.model.aux_loss_weight)
    )

  def eval_batches(self):
    return pipeline.create_eval_batches(self.source)

  def evaluate(self, state: TrainState) -> dict[str, object]:
    return steps.run_eval(
      self.p_eval, state, self.eval_batches(), len(self.local_devices), self.top_k, self.target_std
    )


def _check_finite(step: int, values: dict[str, float], last_saved: Optional[int]) -> None:
  """Stops the run on a NaN/inf loss or gradient, naming the step (nothing is saved after it)."""
  bad = {k: v for k, v in values.items() if k in ('loss', 'grad_norm') and not np.isfinite(v)}
  if bad:
    _diverged(step, ', '.join(f'{k}={v}' for k, v in bad.items()), last_saved)


def _diverged(step: int, what: str, last_saved: Optional[int]) -> None:
  saved = f'the last checkpoint is step {last_saved}' if last_saved else 'no checkpoint was saved'
  raise errors.TrainingError(
    f'Non-finite {what} at step {step}; stopped without saving ({saved}). Lower '
    '--config.learning_rate or set --config.grad_clip_norm.'
  )


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
  """True when every floating-point leaf of `tree` is finite (one scalar, computed on device)."""
  leaves = [
    jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)
  ]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, devices: Optional[Sequence[Any]] = None
) -> dict[str, object]:
  """Trains `config.num_train_steps` steps with periodic eval and checkpoints; resumes if it can.

  Resume order: the latest checkpoint in `workdir` (state + data position), else parameters
  from `config.init_checkpoint`, else a fresh initialisation.

  Args:
    config: run config (see configs/common.py).
    workdir: checkpoints, metrics.jsonl and TensorBoard events go here.
    devices: devices to map over (default: all devices of all processes).

  Returns:
    The final eval metrics (also written to metrics.jsonl and printed as a table).
  """
  check_workdir(workdir)
  run = Run(config, devices)  # Checks the config against the data and the devices.
  config, chief = run.config, run.is_chief
  train_it = pipeline.create_train_iterator(run.source)
  # Restore target, fingerprint and data are checked before anything is written to `workdir`.
  restored = checkpoints.restore_latest(
    workdir, config.keep_checkpoints, run.best_metric, run.abstract_state, train_it, config
  )
  if restored is not None:
    latest, state = restored.step, restored.state
    message = f'Resumed from {checkpoints.checkpoint_dir(workdir)}/{latest} (step {latest}).'
  else:
    latest, state, message = None, run.init_fn(run.params_key), None
    if config.init_checkpoint:
      state = state.replace(params=_init_params(config.init_checkpoint, run.abstract_state))
      message = f'Initialised parameters from {config.init_checkpoint}.'
  # What `hybrid_jax.load` needs.
  spec = inference.build_spec(run.source) if chief else None
  # Accepted: from here on the run writes.
  if chief:
    make_workdir(workdir)
    fileio.write_text(os.path.join(workdir, 'config.json'), config.to_json_best_effort(indent=2))
    inference.save_spec(workdir, spec)
  if message:
    reporting.say(message, chief)
  if restored is not None:
    checkpoint_verification.set_aside(checkpoints.checkpoint_dir(workdir), restored.skipped)
  manager = checkpoints.create_manager(workdir, config.keep_checkpoints, run.best_metric)
  # Records past the restored step are replayed now: drop them (metrics.jsonl and TensorBoard).
  writer = reporting.MetricWriter(workdir, active=chief, resume_step=latest or 0)
  writer.write_hparams(
    reporting.flat_hparams(config.to_dict()), [f'eval/{name}' for name in run.eval_metric_names]
  )
  start = int(parallel.to_host(state.step))
  # Step start + 1 compiles: profile from the next one.
  profiler = reporting.StepProfiler(
    os.path.join(workdir, 'tensorboard'), config.profile_steps, first_step=start + 2, active=chief
  )
  try:
    stopping = run_progress.EarlyStopping(run.best_metric, config.early_stopping_patience)
    window = []
    if restored is not None and restored.progress:
      stopping.restore(restored.progress)
      window = run_progress.train_window(restored.progress)
    return _train_loop(run, state, train_it, manager, writer, latest, stopping, profiler, window)
  finally:
    profiler.stop()  # A run that ended inside the traced steps still writes its trace.
    checkpoints.finish(manager)  # The async save completes (with its manifest); errors surface.
    manager.close()
    writer.close()


def check_workdir(workdir: str) -> None:
  """Refuses, in one line and before anything is read or written, a workdir that cannot be one."""
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise errors.ConfigError(
      f'--workdir={workdir} is a file, not a directory: give a directory (new or a run\'s).'
    )
  parent = os.path.dirname(path)
  while not os.path.exists(parent):  # The nearest existing ancestor must be a directory.
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise errors.ConfigError(
      f'--workdir={workdir} cannot be created: {parent} is a file, not a directory; give a '
      'path under a directory.'
    )


def make_workdir(workdir: str) -> None:
  """Creates the workdir (the run's first write); a path the system refuses is one line."""
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise errors.ConfigError(
      f'--workdir={workdir} cannot be created ({e.strerror or type(e).__name__}: {e.filename}): '
      'give a path in a writable directory.'
    ) from None


def _init_params(path: str, abstract_state: Any) -> Any:
  """Parameters from another run's checkpoint (`config.init_checkpoint`), for fine-tuning."""
  try:
    manager, which = checkpoints.open_checkpoints(path)
    try:
      return checkpoints.restore(manager, which, abstract_state).state.params
    finally:
      manager.close()
  except errors.CheckpointError as e:
    raise errors.CheckpointError(f'config.init_checkpoint: {e}') from None


def _train_loop(
  run: Run,
  state: TrainState,
  train_it,
  manager,
  writer,
  last_saved: Optional[int],
  stopping: run_progress.EarlyStopping,
  profiler: Optional[reporting.StepProfiler] = None,
  window: Optional[list[dict[str, float]]] = None,
) -> dict[str, object]:
  """The loop proper: steps, NaN checks, logging, eval, early stopping, checkpoints (see
  `train_and_evaluate`).

  `window`: host train metrics of the steps after the last train record (restored with a
  checkpoint); each train record averages the steps since the previous one.
  """
  config, chief = run.config, run.is_chief
  total = config.num_train_steps
  _, schedule = steps.create_optimizer(config)
  fingerprint = config_validation.fingerprint(config)
  step = start_step = int(parallel.to_host(state.step))
  progress = reporting.Progress(total, config.batch_size, step, active=chief)
  num_local = len(run.local_devices)
  window = list(window or [])  # Host metrics of the steps since the last train record.
  previous = None  # The last step's device metrics, fetched one step later.
  eval_metrics = None
  while step < total and not stopping.stopped:
    batch = parallel.shard_batch(next(train_it), num_local)
    with profiler.step_context(step + 1) if profiler else contextlib.nullcontext():
      state, device_metrics = run.p_train(state, batch, run.dropout_key)
    step += 1
    if profiler:
      profiler.after_step(step, device_metrics)
    if previous is not None:  # Check the step before (already done) without stalling dispatch.
      window.append(_host_metrics(*previous, last_saved))
    previous = (step, device_metrics)
    if step == start_step + 1:  # Throughput excludes compilation: start the clock after step 1.
      jax.block_until_ready(device_metrics)
      progress.reset_clock(step)
    at_end = step == total
    do_eval = at_end or step % config.eval_every_steps == 0
    do_save = do_eval or step % config.checkpoint_every_steps == 0
    if not (at_end or do_eval or do_save or step % config.log_every_steps == 0):
      continue
    window.append(_host_metrics(*previous, last_saved))
    previous = None
    if step % config.log_every_steps == 0 or at_end:
      train_values = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
      train_values['learning_rate'] = float(schedule(step - 1))
      train_values.update(progress.update(step, train_values))
      writer.write(step, 'train', train_values)
      window = []
    if (do_eval or do_save) and not bool(
      parallel.to_host(_all_finite((state.params, state.opt_state, steps.model_variables(state))))
    ):
      # This step's metrics (checked above) come from the state before the update; the state it
      # produced is checked here, before it is evaluated or saved.
      _diverged(step, 'parameters or optimizer state after the update', last_saved)
    if do_eval:
      eval_metrics = run.evaluate(state)
      writer.write(step, 'eval', eval_metrics)
      reporting.say(reporting.format_table(f'[eval] step {step}', eval_metrics), chief)
      stopping.update(eval_metrics)
    if do_save and checkpoints.save(
      manager,
      step,
      parallel.to_global(state, run.devices),
      train_it,
      eval_metrics if do_eval else None,
      fingerprint,
      run_progress.to_save(stopping, window),
    ):
      last_saved = step
    if stopping.stopped:
      reporting.say(
        f'Early stopping at step {step}: {run.best_metric} did not improve for '
        f'{stopping.patience} evaluations (config.early_stopping_patience).',
        chief,
      )
    progress.reset_clock(step)
  if eval_metrics is None:  # Nothing left to train (a finished run): report its final state.
    done = 'stopped early' if stopping.stopped else f'trained to step {step} of {total}'
    reporting.say(f'Already {done}; evaluating it.', chief)
    eval_metrics = run.evaluate(state)
  reporting.say(
    reporting.format_table(f'[final eval] step {step}', eval_metrics, run.info.baselines), chief
  )
  return eval_metrics


def _host_metrics(step: int, device_metrics, last_saved: Optional[int]) -> dict[str, float]:
  values = {k: float(v) for k, v in parallel.to_host(device_metrics).items()}
  _check_finite(step, values, last_saved)
  return values


def evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  checkpoint: str = 'latest',
  devices: Optional[Sequence[Any]] = None,
) -> dict[str, object]:
  """Restores a checkpoint of `workdir` and evaluates it on `config.dataset.eval_split`.

  Works on any device count (the state is restored onto the current devices). Writes
  `workdir/eval_<split>_step_<step>.json` (process 0) and prints the metrics.

  Args:
    checkpoint: 'latest', 'best' (by config.best_metric) or a step number.

  Returns:
    The eval metrics, with 'step' and 'checkpoint' added.
  """
  run = Run(config, devices)
  config = run.config
  manager = checkpoints.create_manager(
    workdir, config.keep_checkpoints, run.best_metric, read_only=True
  )
  try:
    # 'latest' skips damaged steps (loudly) for the newest intact one.
    restored = checkpoints.restore(manager, checkpoint, run.abstract_state)
  finally:
    manager.close()
  split = config.dataset.eval_split
  metrics = {
    'step': restored.step,
    'checkpoint': os.path.join(str(manager.directory), str(restored.step)),
    'split': split,
    **run.evaluate(restored.state),
    'baselines': run.info.baselines,
  }
  if run.is_chief:
    path = os.path.join(workdir, f'eval_{split}_step_{restored.step}.json')
    fileio.write_json(path, metrics, indent=2)
    title = f'[eval] {split} split, step {restored.step}'
    reporting.say(reporting.format_table(title, metrics, run.info.baselines))
    reporting.say(f'Wrote {path}')
  return metrics
