"""Checkpoints with orbax: the train state and the data iterator's position, saved together.

Layout: `workdir/checkpoints/<step>/{state,data,metrics}`; `data` holds one JSON file per process
with the grain iterator state, `metrics` the eval metrics the step was saved with (if any).
Saves are asynchronous (the device->host copy happens before `save` returns, the writes in the
background); `close` waits for them. A step that already exists is never overwritten.

Restoring goes through abstract targets (`jax.eval_shape` of the state) carrying explicit shardings
of the *current* devices, so a checkpoint saved on 4 devices restores onto 1 (or 8) unchanged.
"""

import logging as pylogging
import os
from typing import Any, Optional, Union

import jax
import orbax.checkpoint as ocp
from absl import logging
from grain import checkpoint as grain_checkpoint
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from hybrid_jax import metrics as metrics_lib
from hybrid_jax.errors import CheckpointError


class _QuietExpectedWarnings(pylogging.Filter):
  """Drops orbax's warnings about choices made here on purpose (not every save has metrics)."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    msg = record.getMessage()
    return not (msg.startswith('Requested `tracked_metric`; did not provide metrics')
                or msg.startswith('Given directory is read only'))


logging.get_absl_logger().addFilter(_QuietExpectedWarnings())


class _QuietAbandonedReads(pylogging.Filter):
  """After a refused restore, orbax's other pending reads fail too and asyncio logs each one
  ("... exception was never retrieved") when it is garbage-collected, often at exit, after our
  one-line error. Installed only once a restore has failed; the first error is the one reported."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    return 'exception was never retrieved' not in record.getMessage()


_QUIET_ABANDONED_READS = _QuietAbandonedReads()


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def create_manager(workdir: str, keep: int, best_metric: str,
                   read_only: bool = False) -> ocp.CheckpointManager:
  """A manager in `workdir/checkpoints` keeping the last `keep` steps and the best by `best_metric`.

  Args:
    workdir: run directory.
    keep: how many of the latest checkpoints to keep (>= 1).
    best_metric: eval metric name; the checkpoint with the best value is kept as well.
    read_only: for evaluation; never writes or deletes.
  """
  if keep < 1:
    raise ValueError(f'config.keep_checkpoints={keep} must be >= 1.')
  lower = metrics_lib.is_lower_better(best_metric)
  get_metric = lambda m: m[best_metric]  # pylint: disable=unnecessary-lambda-assignment
  policy = pp.AnyPreservationPolicy([
      pp.LatestN(n=keep),
      pp.BestN(get_metric_fn=get_metric, reverse=lower, n=1,
               keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      best_fn=get_metric, best_mode='min' if lower else 'max', preservation_policy=policy,
      create=not read_only, read_only=read_only, save_interval_steps=0 if read_only else 1,
      enable_async_checkpointing=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_iterator: Any,
         eval_metrics: Optional[dict[str, object]] = None) -> bool:
  """Starts an async save of `state` and the iterator position at `step`; False if it exists.

  Args:
    manager: from `create_manager`.
    step: the state's step.
    state: the replicated train state (global jax.Arrays).
    data_iterator: the train iterator (get_state/set_state), positioned after `step` batches.
    eval_metrics: eval metrics of this very state, used to track the best checkpoint.
  """
  if step in manager.all_steps():
    logging.info('Checkpoint step %d already exists in %s; not overwriting it.', step,
                 manager.directory)
    return False
  args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                            data=grain_checkpoint.CheckpointSave(data_iterator))
  metrics = metrics_lib.scalars(eval_metrics) if eval_metrics else None
  manager.save(step, args=args, metrics=metrics, force=True)
  return True


def resolve_step(manager: ocp.CheckpointManager, which: Union[str, int]) -> int:
  """Maps 'latest' | 'best' | a step number to a saved step, or fails saying what exists."""
  steps = sorted(manager.all_steps())
  where = str(manager.directory)
  if not steps:
    raise CheckpointError(f'No checkpoint in {where}: train first with the same --workdir, or '
                          'point --workdir at a trained run.')
  if which == 'latest':
    return steps[-1]
  if which == 'best':
    best = manager.best_step()
    if best is None or manager.metrics(best) is None:
      raise CheckpointError(f'No checkpoint in {where} was saved with eval metrics, so none is '
                            f'"best": use --checkpoint=latest or one of the steps {steps}.')
    return best
  try:
    step = int(which)
  except ValueError:
    raise CheckpointError(f"--checkpoint={which!r} is not 'latest', 'best' or a step number.") \
        from None
  if step not in steps:
    raise CheckpointError(f'No checkpoint for step {step} in {where}: saved steps are {steps}.')
  return step


def abstract_like(state_shapes: Any, sharding: jax.sharding.Sharding) -> Any:
  """Abstract restore target: the `jax.eval_shape` tree with every leaf placed by `sharding`."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      state_shapes)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any,
            data_iterator: Optional[Any] = None) -> Any:
  """Restores the train state at `step` (and, if given, the iterator's position in place).

  Args:
    manager: from `create_manager`.
    step: a saved step (see `resolve_step`).
    abstract_state: from `abstract_like`; fixes structure, shapes, dtypes and target devices.
    data_iterator: the train iterator to reposition, or None (evaluation).

  Raises:
    CheckpointError: one line saying which step failed and what to do about it.
  """
  items = {'state': ocp.args.StandardRestore(abstract_state)}
  if data_iterator is not None:
    items['data'] = grain_checkpoint.CheckpointRestore(data_iterator)
  return _restore(manager, step, items)['state']


def restore_params(manager: ocp.CheckpointManager, step: int, abstract_params: Any) -> Any:
  """Only the parameters of the train state saved at `step`: no optimizer state is read or built.

  Args:
    manager: from `create_manager`.
    step: a saved step (see `resolve_step`).
    abstract_params: the model's `params` tree of `jax.ShapeDtypeStruct`s with shardings (the
      target devices); fixes structure, shapes and dtypes.

  Raises:
    CheckpointError: as `restore`.
  """
  item = {'params': abstract_params}
  args = ocp.args.PyTreeRestore(item=item, partial_restore=True,
                                restore_args=ocp.checkpoint_utils.construct_restore_args(item))
  return _restore(manager, step, {'state': args})['state']['params']


def _restore(manager: ocp.CheckpointManager, step: int, items: dict[str, Any]) -> Any:
  """`manager.restore` of `items` at `step`; any failure becomes a one-line CheckpointError."""
  path = os.path.join(str(manager.directory), str(step))
  try:
    return manager.restore(step, args=ocp.args.Composite(**items))
  except Exception as e:  # pylint: disable=broad-except
    pylogging.getLogger('asyncio').addFilter(_QUIET_ABANDONED_READS)
    text = str(e).strip()
    detail = text.splitlines()[0][:200] if text else type(e).__name__
    if 'datasource' in text.lower().replace(' ', ''):
      hint = ('the data pipeline differs from the one that saved it (dataset, batch size or seed '
              'changed?): resume with the same config, or use a fresh --workdir')
    elif not any(w in text for w in ('NOT_FOUND', 'DATA_LOSS', 'Error reading', 'Error opening')) \
        and any(w in text.lower() for w in ('shape', 'structure', 'tree', 'dtype')):
      hint = ('it does not match the model this config builds: evaluate or resume with the config '
              'it was trained with')
    else:
      hint = (f'it may be incomplete or corrupt: delete {path} to fall back to the previous '
              'checkpoint, or use a fresh --workdir')
    raise CheckpointError(f'Could not restore checkpoint {path} ({type(e).__name__}: {detail}); '
                          f'{hint}.') from e


def load_params(path: str, abstract_state: Any) -> Any:
  """Parameters from another run's checkpoint (`config.init_checkpoint`), for fine-tuning.

  Args:
    path: a run's workdir, its `checkpoints` directory, or one step directory inside it.
    abstract_state: as for `restore`.
  """
  path = os.path.abspath(path)
  step = None
  if os.path.basename(path).isdigit():
    path, step = os.path.dirname(path), int(os.path.basename(path))
  if os.path.isdir(os.path.join(path, 'checkpoints')):
    path = os.path.join(path, 'checkpoints')
  if not os.path.isdir(path):
    raise CheckpointError(f'config.init_checkpoint={path} does not exist: give a run workdir, its '
                          'checkpoints/ directory or a step directory.')
  manager = ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(read_only=True))
  try:
    step = resolve_step(manager, 'latest' if step is None else step)
    return restore(manager, step, abstract_state).params
  finally:
    manager.close()
