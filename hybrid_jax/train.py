"""Training and evaluation: train state, jit+pmap steps, the train loop and checkpoint evaluation.

  state = create_train_state(config, model, rng)                # TrainState (step, params, opt_state)
  state, metrics = train_step(state, batch, dropout_key, ...)   # inside pmap, batch [B/devices, ...]
  sums = eval_step(state, batch, ...)                           # inside pmap, summed over devices
  metrics = train_and_evaluate(config, workdir)                 # the whole run; resumes from workdir
  metrics = evaluate(config, workdir, checkpoint='latest')      # --mode=eval

Data flows one way: config -> data + model -> train state -> steps -> checkpoints / metrics.
"""

import contextlib
import copy
import functools
import json
import os
from typing import Any, Callable, Iterable, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state as train_state_lib

from hybrid_jax import checkpointing
from hybrid_jax import config_validation
from hybrid_jax import data as data_lib
from hybrid_jax import errors
from hybrid_jax import inference
from hybrid_jax import metrics as metrics_lib
from hybrid_jax import models
from hybrid_jax import parallel
from hybrid_jax import reporting
from hybrid_jax import tasks

TrainState = train_state_lib.TrainState


@functools.lru_cache(maxsize=None)
def _optimizer(
  learning_rate: float,
  lr_schedule: str,
  warmup_steps: int,
  num_train_steps: int,
  grad_clip_norm: float,
  weight_decay: float,
):
  """Cached so that identical configs share one optimizer object (and compiled steps)."""
  if lr_schedule == 'constant':
    schedule = optax.constant_schedule(learning_rate)
  elif lr_schedule == 'warmup_cosine':
    if not 0 <= warmup_steps < num_train_steps:
      raise errors.ConfigError(
        f'config.warmup_steps={warmup_steps} must be in [0, num_train_steps='
        f'{num_train_steps}): set --config.warmup_steps.'
      )
    schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=learning_rate,
      warmup_steps=warmup_steps,
      decay_steps=num_train_steps,
      end_value=0.0,
    )
  else:
    raise errors.ConfigError(
      f"Unknown config.lr_schedule={lr_schedule!r}: use 'constant' or 'warmup_cosine'."
    )
  # Keras Adam defaults (the reference): b1=0.9, b2=0.999, eps=1e-7.
  if weight_decay > 0:  # Decoupled decay on kernels/embeddings only, never biases or scales.
    adam = optax.adamw(
      schedule,
      b1=0.9,
      b2=0.999,
      eps=1e-7,
      weight_decay=weight_decay,
      mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params),
    )
  else:
    adam = optax.adam(schedule, b1=0.9, b2=0.999, eps=1e-7)
  if grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(grad_clip_norm), adam), schedule
  return adam, schedule


def create_optimizer(config: ml_collections.ConfigDict):
  """(optax transformation, learning-rate schedule) from the config's optimisation fields."""
  return _optimizer(
    float(config.learning_rate),
    config.lr_schedule,
    int(config.warmup_steps),
    int(config.num_train_steps),
    float(config.grad_clip_norm),
    float(config.weight_decay),
  )


def create_train_state(config: ml_collections.ConfigDict, model, rng: jax.Array) -> TrainState:
  """Initial state: parameters from `model.init` on a dummy batch, Adam state, step 0.

  Args:
    config: the run config (model fields and optimisation fields).
    model: `models.create_model(config)`.
    rng: parameter-initialisation key.
  """
  variables = model.init(
    {'params': rng, 'dropout': rng}, models.dummy_batch(config, 2), train=False
  )
  tx, _ = create_optimizer(config)
  return TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx)


def train_step(
  state: TrainState, batch: dict[str, jax.Array], dropout_key: jax.Array, *, head: str
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on one device's shard; gradients and metrics averaged over devices.

  Args:
    state: replicated train state.
    batch: this device's shard, e.g. 'clip' [B/devices, T, H, W, C] and 'label' [B/devices].
    dropout_key: replicated base key; the step and the device index are folded in here.
    head: a `tasks.HEADS` name: its loss on its label key ('label' or 'target').

  Returns:
    (new state, {'loss', the head's train metrics, 'grad_norm'}: float32 scalars averaged over
    devices).
  """
  key = jax.random.fold_in(jax.random.fold_in(dropout_key, state.step), parallel.device_index())

  the_head = tasks.head(head)
  labels = batch[the_head.label_key]

  def loss_fn(params):
    out = state.apply_fn({'params': params}, batch, train=True, rngs={'dropout': key})
    return the_head.loss(out, labels), out

  (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grads = parallel.pmean(grads)  # Equal shards: the mean of shard means is the global mean.
  metrics = {'loss': loss, **the_head.train_metrics(out, labels)}  # Then grad_norm.
  metrics = parallel.pmean(metrics)
  metrics['grad_norm'] = optax.global_norm(grads)  # Of the averaged gradient (same everywhere).
  return state.apply_gradients(grads=grads), metrics


def eval_step(
  state: TrainState, batch: dict[str, jax.Array], *, head: str, top_k: int, with_confusion: bool
) -> dict[str, jax.Array]:
  """Metric sums of one device's shard, summed over devices (see metrics.py).

  Args:
    batch: this device's shard plus 'mask' [B/devices] bool (False on padding rows).
  """
  out = state.apply_fn({'params': state.params}, batch, train=False)
  mask = batch.get('mask', jnp.ones(out.shape[:1], bool))
  the_head = tasks.head(head)
  return parallel.psum(the_head.sums(out, batch[the_head.label_key], mask, top_k, with_confusion))


@functools.lru_cache(maxsize=None)
def make_steps(
  devices: tuple[Any, ...], head: str, top_k: int
) -> tuple[Callable[..., Any], Callable[..., Any]]:
  """pmapped (train_step, eval_step) over `devices`: state replicated, batch split, state donated.

  Cached per (devices, head) so repeated runs in one process reuse compiled code.
  """
  p_train = parallel.pmap(
    functools.partial(train_step, head=head),
    devices,
    in_axes=(None, 0, None),
    out_axes=(None, None),
    donate_argnums=(0,),
  )
  p_eval = parallel.pmap(
    functools.partial(
      eval_step, head=head, top_k=top_k, with_confusion=not tasks.head(head).regression
    ),
    devices,
    in_axes=(None, 0),
    out_axes=None,
  )
  return p_train, p_eval


def run_eval(
  p_eval_step: Callable[..., Any],
  state: TrainState,
  batches: Iterable[dict[str, np.ndarray]],
  num_local_devices: int,
  top_k: int,
  target_std: Optional[float],
) -> dict[str, object]:
  """Evaluates `state` on every batch (each example once); returns `metrics.finalize` output.

  One eval step is in flight at a time: each one's sums are fetched before the next is
  dispatched. Eval steps do not depend on each other, so dispatching them all at once lets the
  CPU runtime run several concurrently, and with several processes their cross-process
  collectives (gloo) can then pair up differently in each process and wait for ever.
  """
  total = None
  for batch in batches:
    sums = p_eval_step(state, parallel.shard_batch(batch, num_local_devices))
    total = metrics_lib.add_sums(total, parallel.to_host(sums))
  if total is None:
    raise errors.DataError('The eval split produced no batches: check config.dataset.eval_split.')
  return metrics_lib.finalize(total, top_k, target_std)


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
    create_optimizer(config),
    sharding,
  )
  if key not in _INIT_FNS:
    model = models.create_model(config)
    _INIT_FNS[key] = jax.jit(
      functools.partial(create_train_state, copy.deepcopy(config), model), out_shardings=sharding
    )
  return _INIT_FNS[key]


class _Run:
  """Everything a train or eval run derives from (config, devices) before touching a checkpoint."""

  def __init__(self, config: ml_collections.ConfigDict, devices: Optional[Sequence[Any]]):
    self.config = config
    self.devices = tuple(devices or parallel.default_devices())
    self.local_devices = parallel.local_devices(self.devices)
    self.is_chief = jax.process_index() == 0
    self.batch_size = parallel.per_process_batch_size(config.batch_size, self.devices, 'batch_size')
    parallel.per_process_batch_size(config.eval_batch_size, self.devices, 'eval_batch_size')
    self.info = data_lib.load_info(config)  # Also resolves config.head from the data.
    self.head = tasks.head(config)
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
    self.abstract_state = checkpointing.abstract_like(
      jax.eval_shape(self.init_fn, self.params_key), self.sharding
    )
    self.p_train, self.p_eval = make_steps(self.devices, self.head.name, self.top_k)

  def eval_batches(self):
    return data_lib.create_eval_batches(
      self.config, process_index=jax.process_index(), process_count=jax.process_count()
    )

  def evaluate(self, state: TrainState) -> dict[str, object]:
    return run_eval(
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
  config_validation.validate(config)
  run = _Run(config, devices)  # Checks the config against the data and the devices.
  chief = run.is_chief
  train_it = data_lib.create_train_iterator(
    config, process_index=jax.process_index(), process_count=jax.process_count()
  )
  # Restore target, fingerprint and data are checked before anything is written to `workdir`.
  restored, damaged = None, []
  if os.path.isdir(checkpointing.checkpoint_dir(workdir)):
    reader = checkpointing.create_manager(
      workdir, config.keep_checkpoints, run.best_metric, read_only=True
    )
    try:
      if reader.all_steps():
        restored = checkpointing.restore_newest_intact(reader, run.abstract_state, train_it, config)
    finally:
      reader.close()
  if restored is not None:
    latest, state, damaged = restored
    message = f'Resumed from {checkpointing.checkpoint_dir(workdir)}/{latest} (step {latest}).'
  else:
    latest, state, message = None, run.init_fn(run.params_key), None
    if config.init_checkpoint:
      state = state.replace(
        params=checkpointing.load_params(config.init_checkpoint, run.abstract_state)
      )
      message = f'Initialised parameters from {config.init_checkpoint}.'
  spec = inference.build_spec(config) if chief else None  # What `hybrid_jax.load` needs.
  # Accepted: from here on the run writes.
  if chief:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
      f.write(config.to_json_best_effort(indent=2))
    inference.save_spec(workdir, spec)
  if message:
    reporting.say(message, chief)
  if damaged:
    checkpointing.set_aside(reader, damaged)
  manager = checkpointing.create_manager(workdir, config.keep_checkpoints, run.best_metric)
  # Records past the restored step are replayed now: drop them (metrics.jsonl and TensorBoard).
  writer = reporting.MetricWriter(workdir, active=chief, resume_step=latest or 0)
  writer.write_hparams(
    reporting.flat_hparams(config.to_dict()), [f'eval/{name}' for name in run.eval_metric_names]
  )
  start = int(parallel.to_host(state.step))
  profiler = reporting.StepProfiler(
    os.path.join(workdir, 'tensorboard'),
    config.get('profile_steps', 0),
    first_step=start + 2,
    active=chief,
  )  # Step start + 1 compiles.
  try:
    return _train_loop(run, state, train_it, manager, writer, latest, profiler)
  finally:
    profiler.stop()  # A run that ended inside the traced steps still writes its trace.
    checkpointing.finish(manager)  # Async saves complete, manifests are written, errors surface.
    manager.close()
    writer.close()


def _train_loop(
  run: _Run,
  state: TrainState,
  train_it,
  manager,
  writer,
  last_saved: Optional[int],
  profiler: Optional[reporting.StepProfiler] = None,
) -> dict[str, object]:
  """The loop proper: steps, NaN checks, logging, eval, checkpoints (see `train_and_evaluate`)."""
  config, chief = run.config, run.is_chief
  total = config.num_train_steps
  _, schedule = create_optimizer(config)
  fingerprint = config_validation.fingerprint(config)
  step = start_step = int(parallel.to_host(state.step))
  progress = reporting.Progress(total, config.batch_size, step, active=chief)
  num_local = len(run.local_devices)
  window, previous = [], None  # Host metrics since the last log; the last step's device metrics.
  eval_metrics = None
  while step < total:
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
    checkpointing.write_completed_manifests(manager)
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
      parallel.to_host(_all_finite((state.params, state.opt_state)))
    ):
      # This step's metrics (checked above) come from the state before the update; the state it
      # produced is checked here, before it is evaluated or saved.
      _diverged(step, 'parameters or optimizer state after the update', last_saved)
    if do_eval:
      eval_metrics = run.evaluate(state)
      writer.write(step, 'eval', eval_metrics)
      reporting.say(reporting.format_table(f'[eval] step {step}', eval_metrics), chief)
    if do_save and checkpointing.save(
      manager,
      step,
      parallel.to_global(state, run.devices),
      train_it,
      eval_metrics if do_eval else None,
      fingerprint,
    ):
      last_saved = step
    progress.reset_clock(step)
  if eval_metrics is None:  # Nothing left to train (a finished run): report its final state.
    reporting.say(f'Already trained to step {step} of {total}; evaluating it.', chief)
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
  config_validation.validate(config)
  run = _Run(config, devices)
  if not os.path.isdir(checkpointing.checkpoint_dir(workdir)):
    raise checkpointing.CheckpointError(
      f'No checkpoints in {checkpointing.checkpoint_dir(workdir)}: train first with '
      f'--workdir={workdir}, or point --workdir at a trained run.'
    )
  manager = checkpointing.create_manager(
    workdir, config.keep_checkpoints, run.best_metric, read_only=True
  )
  try:
    step = checkpointing.resolve_step(manager, checkpoint)
    if checkpoint == 'latest':  # Damaged steps are skipped (loudly) for the newest intact one.
      step, state, _ = checkpointing.restore_newest_intact(manager, run.abstract_state)
    else:
      state = checkpointing.restore(manager, step, run.abstract_state)
  finally:
    manager.close()
  metrics = run.evaluate(state)
  metrics = {
    'step': step,
    'checkpoint': os.path.join(str(manager.directory), str(step)),
    'split': config.dataset.eval_split,
    **metrics,
  }
  if run.is_chief:
    path = os.path.join(workdir, f'eval_{config.dataset.eval_split}_step_{step}.json')
    with open(path, 'w', encoding='utf-8') as f:
      json.dump(metrics, f, indent=2)
    reporting.say(
      reporting.format_table(
        f'[eval] {config.dataset.eval_split} split, step {step}', metrics, run.info.baselines
      )
    )
    reporting.say(f'Wrote {path}')
  return metrics
