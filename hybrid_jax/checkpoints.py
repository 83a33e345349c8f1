"""Checkpoints with orbax: the train state and the data iterator's position, saved together.

  manager = create_manager(workdir, keep=3, best_metric='accuracy')
  save(manager, step, state, train_iterator, eval_metrics, fingerprint)   # async; never overwrites
  finish(manager)                                  # waits for the save; its errors surface here
  restored = restore(manager, 'latest', abstract_state, data_iterator=it, config=config)
  restored.step, restored.state, restored.skipped  # 'latest' falls back to the newest intact step

Layout: `workdir/checkpoints/<step>/{state,data,progress,metrics}` and the step's manifest;
`data` holds one JSON file per process with the grain iterator state, `progress` the host-side run
state (early stopping, the open train-metric window), `metrics` the eval metrics the step was saved
with (if any). Saves are asynchronous (the device->host copy happens before `save` returns, the
writes in the background). The manifest is part of the commit: process 0 writes it into orbax's
temporary step directory after every process has written its part and before orbax renames that
directory to `<step>`, so a committed step always has one, whichever process dies when, and a step
that was never committed is never listed. Every step is verified before it is read
(checkpoint_verification.py). Restoring goes through abstract targets (`jax.eval_shape` of the
state) carrying explicit shardings of the *current* devices, so a checkpoint saved on 4 devices
restores onto 1 (or 8) unchanged.
"""

import dataclasses
import os
from typing import Any, Optional, Union

import jax
import orbax.checkpoint as ocp
from absl import logging
from grain import checkpoint as grain_checkpoint
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from hybrid_jax import checkpoint_verification as verification
from hybrid_jax import metrics as metrics_lib
from hybrid_jax import parallel
from hybrid_jax.errors import CheckpointError

# orbax's temporary step directory (`<step>` + this) is renamed to `<step>` when a save commits.
TMP_SUFFIX = '.orbax-checkpoint-tmp'


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def create_manager(
  workdir: str, keep: int, best_metric: str, read_only: bool = False
) -> ocp.CheckpointManager:
  """A manager in `workdir/checkpoints` keeping the last `keep` steps and the best by `best_metric`.

  Args:
    workdir: run directory.
    keep: how many of the latest checkpoints to keep (>= 1, config.keep_checkpoints).
    best_metric: eval metric name; the checkpoint with the best value is kept as well.
    read_only: for evaluation; never writes or deletes.

  Raises:
    CheckpointError: read_only and `workdir` has no checkpoints directory.
  """
  directory = checkpoint_dir(workdir)
  if read_only and not os.path.isdir(directory):
    raise CheckpointError(
      f'No checkpoints in {directory}: train first with --workdir={workdir}, or point '
      '--workdir at a trained run.'
    )
  return _open(directory, keep, best_metric, read_only)


# Ties of the best metric (e.g. two steps with the same validation accuracy) are broken by the eval
# loss: a term this small never outweighs a real difference of an accuracy (>= 1 / examples).
_TIE_BREAK = 1e-7


def best_score(metrics: dict[str, float], best_metric: str) -> float:
  """The value the best checkpoint is chosen by: `best_metric`, ties broken by the eval loss."""
  value = float(metrics[best_metric])
  if best_metric == 'loss' or 'loss' not in metrics:
    return value
  sign = 1.0 if metrics_lib.is_lower_better(best_metric) else -1.0
  return value + sign * _TIE_BREAK * float(metrics['loss'])


def _open(directory: str, keep: int, best_metric: str, read_only: bool) -> '_Manager':
  lower = metrics_lib.is_lower_better(best_metric)

  def get_metric(metrics):
    return best_score(metrics, best_metric)

  policy = pp.AnyPreservationPolicy(
    [
      pp.LatestN(n=keep),
      pp.BestN(
        get_metric_fn=get_metric, reverse=lower, n=1, keep_checkpoints_without_metrics=False
      ),
    ]
  )
  options = ocp.CheckpointManagerOptions(
    best_fn=get_metric,
    best_mode='min' if lower else 'max',
    preservation_policy=policy,
    create=not read_only,
    read_only=read_only,
    save_interval_steps=0 if read_only else 1,
    enable_async_checkpointing=True,
    # A save cut short by a kill leaves `<step>.orbax-checkpoint-tmp`: removed when a run opens the
    # directory to write, so that the step is saved afresh.
    cleanup_tmp_directories=not read_only,
  )
  return _Manager(directory, options=options)


class _Manager(ocp.CheckpointManager):
  """orbax's manager, plus two things it lacks.

  - An unreadable `metrics/metrics` file of one step marks that step damaged (it then fails
    verification and is skipped) instead of failing every command in the workdir.
  - The manifest of each save, written as part of its commit (`_write_manifest`).
  """

  def __init__(self, directory, options: ocp.CheckpointManagerOptions):
    self.unreadable_metrics: set[int] = set()
    # (step, fingerprint) of the save in flight; saves run one at a time (`save` waits first).
    self.in_flight: Optional[tuple[int, Optional[dict[str, Any]]]] = None
    if not options.read_only:
      options = dataclasses.replace(
        options,
        async_options=ocp.options.AsyncOptions(post_finalization_callback=self._write_manifest),
      )
    super().__init__(directory, options=options)

  def _write_manifest(self) -> None:
    """orbax's post-finalization hook: on process 0, after every process has written its part and
    orbax has finalized the items, before the temporary directory is renamed to `<step>` (the
    commit). The manifest is therefore committed with the step, or not at all."""
    if self.in_flight is None:  # A save that did not come through `save` gets none (untrusted).
      return
    step, fingerprint = self.in_flight
    final = verification.step_dir(self.directory, step)
    temporary = final + TMP_SUFFIX
    verification.write_manifest(temporary if os.path.isdir(temporary) else final, step, fingerprint)

  def metrics(self, step: int) -> Optional[Any]:
    try:
      return super().metrics(step)
    except ValueError:  # json.JSONDecodeError, UnicodeDecodeError: garbage where JSON should be.
      self.unreadable_metrics.add(step)
      return None


def open_checkpoints(path: str) -> tuple['_Manager', Union[str, int]]:
  """(read-only manager, 'latest' or a step) for another run's checkpoint path.

  Args:
    path: a run's workdir, its `checkpoints` directory, or one step directory inside it (e.g.
      `config.init_checkpoint`).
  """
  path = os.path.abspath(path)
  which: Union[str, int] = 'latest'
  if os.path.basename(path).isdigit():
    path, which = os.path.dirname(path), int(os.path.basename(path))
  if os.path.isdir(os.path.join(path, 'checkpoints')):
    path = os.path.join(path, 'checkpoints')
  if not os.path.isdir(path):
    raise CheckpointError(
      f'config.init_checkpoint={path} does not exist: give a run workdir, its '
      'checkpoints/ directory or a step directory.'
    )
  return _Manager(path, options=ocp.CheckpointManagerOptions(read_only=True)), which


def save(
  manager: ocp.CheckpointManager,
  step: int,
  state: Any,
  data_iterator: Any,
  eval_metrics: Optional[dict[str, object]] = None,
  fingerprint: Optional[dict[str, Any]] = None,
  progress: Optional[dict[str, Any]] = None,
  extra: Optional[dict[str, Any]] = None,
) -> bool:
  """Starts an async save of `state` and the iterator position at `step`; False if it exists.

  The step's manifest (checksums of every file, and `fingerprint`) is written by process 0 as part
  of the step's commit (`_Manager._write_manifest`).

  Args:
    manager: from `create_manager`.
    step: the state's step.
    state: the replicated train state (global jax.Arrays), checked finite by the caller.
    data_iterator: the train iterator (get_state/set_state), positioned after `step` batches.
    eval_metrics: eval metrics of this very state, used to track the best checkpoint.
    fingerprint: `config_validation.fingerprint(config)`, stored in the manifest.
    progress: JSON-able host-side run state (e.g. early stopping's), restored with the step.
    extra: more arrays saved with the state, one item per name (e.g. a population's best states),
      read back by `restore(..., extra_target=...)`.
  """
  finish(manager)
  if step in manager.all_steps():
    logging.info(
      'Checkpoint step %d already exists in %s; not overwriting it.', step, manager.directory
    )
    return False
  items = dict(
    state=ocp.args.StandardSave(state), data=grain_checkpoint.CheckpointSave(data_iterator)
  )
  if progress is not None:
    items['progress'] = ocp.args.JsonSave(progress)
  for name, tree in (extra or {}).items():
    items[name] = ocp.args.StandardSave(tree)
  args = ocp.args.Composite(**items)
  metrics = metrics_lib.scalars(eval_metrics) if eval_metrics else None
  manager.in_flight = (step, fingerprint)
  manager.save(step, args=args, metrics=metrics, force=True)
  return True


def finish(manager: ocp.CheckpointManager) -> None:
  """Waits for the save in flight (its manifest is written as part of its commit)."""
  manager.wait_until_finished()


def resolve_step(manager: ocp.CheckpointManager, which: Union[str, int]) -> int:
  """Maps 'latest' | 'best' | a step number to a saved step, or fails saying what exists."""
  steps = sorted(manager.all_steps())
  where = str(manager.directory)
  if not steps:
    raise CheckpointError(
      f'No checkpoint in {where}: train first with the same --workdir, or '
      'point --workdir at a trained run.'
    )
  if which == 'latest':
    return steps[-1]
  if which == 'best':
    best = manager.best_step()
    if best is None or manager.metrics(best) is None:
      raise CheckpointError(
        f'No checkpoint in {where} was saved with eval metrics, so none is '
        f'"best": use --checkpoint=latest or one of the steps {steps}.'
      )
    return best
  try:
    step = int(which)
  except ValueError:
    raise CheckpointError(
      f"--checkpoint={which!r} is not 'latest', 'best' or a step number."
    ) from None
  if step not in steps:
    raise CheckpointError(f'No checkpoint for step {step} in {where}: saved steps are {steps}.')
  return step


def abstract_like(state_shapes: Any, sharding: jax.sharding.Sharding) -> Any:
  """Abstract restore target: the `jax.eval_shape` tree with every leaf placed by `sharding`."""
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state_shapes
  )


@dataclasses.dataclass(frozen=True)
class Restored:
  """What `restore` read: the step, the state (or only its variables), damaged newer steps, and
  the host-side progress saved with the step (None when it has none)."""

  step: int
  state: Any
  skipped: list[int]
  progress: Optional[dict[str, Any]] = None
  extra: Optional[dict[str, Any]] = None  # The `extra` items asked for by `extra_target`.


def _read(
  manager: ocp.CheckpointManager,
  step: int,
  target: Any,
  data_iterator: Any,
  params_only: bool,
  extra_target: Optional[dict[str, Any]] = None,
) -> tuple[Any, Optional[str]]:
  """((state or variables, progress, extra), None) or (None, why orbax could not read a verified
  step)."""
  progress_dir = os.path.join(verification.step_dir(manager.directory, step), 'progress')
  if params_only:
    item = dict(target)
    items = {
      'state': ocp.args.PyTreeRestore(
        item=item,
        partial_restore=True,
        restore_args=ocp.checkpoint_utils.construct_restore_args(item),
      )
    }
  else:
    items = {'state': ocp.args.StandardRestore(target)}
    if data_iterator is not None:
      items['data'] = grain_checkpoint.CheckpointRestore(data_iterator)
      if os.path.isdir(progress_dir):
        items['progress'] = ocp.args.JsonRestore()
    for name, tree in (extra_target or {}).items():
      items[name] = ocp.args.StandardRestore(tree)
  try:
    restored = manager.restore(step, args=ocp.args.Composite(**items))
  except Exception as e:  # pylint: disable=broad-except  (reported, never matched on its text)
    text = str(e).strip()
    first = text.splitlines()[0][:160] if text else ''
    return None, f'it could not be read ({type(e).__name__}: {first})'
  state = restored['state']
  if params_only:
    state = {k: state[k] for k in target}
  progress = restored.get('progress') if 'progress' in items else None
  extra = {name: restored[name] for name in extra_target} if extra_target else None
  return (state, progress, extra), None


def restore(
  manager: ocp.CheckpointManager,
  which: Union[str, int],
  target: Any,
  *,
  data_iterator: Optional[Any] = None,
  config: Optional[Any] = None,
  params_only: bool = False,
  extra_target: Optional[dict[str, Any]] = None,
) -> Restored:
  """Verifies and restores a checkpoint: the one way anything is read back.

  Args:
    manager: from `create_manager` or `open_checkpoints`.
    which: 'latest' (the newest *intact* step: damaged newer steps are named loudly and skipped),
      'best' (by the run's best metric) or a step number; only 'latest' falls back.
    target: from `abstract_like`: the abstract train state, or with `params_only` the abstract
      model variables {'params': ..., and 'model_state' where the model has one}; fixes
      structure, shapes, dtypes and target devices.
    data_iterator: the train iterator to reposition in place (resuming training), or None.
    config: the run config, compared with the stored fingerprint (None: model structure only).
    params_only: read only the model's variables (an orbax partial restore: no optimizer state
      is read or built); a settings mismatch is then explained for reading a run, not resuming it.
    extra_target: abstract trees of `save`'s `extra` items to read as well ({name: tree}).

  Raises:
    CheckpointError: one line naming the step directory (and damaged file) and what to do.
  """
  abstract_params = target['params'] if params_only else target.params

  def try_step(step: int) -> tuple[Any, Optional[str]]:
    path = verification.step_dir(manager.directory, step)
    problem = verification.check_step(
      path,
      abstract_params,
      config,
      resuming=not params_only,
      with_data=data_iterator is not None,
      metrics_unreadable=step in getattr(manager, 'unreadable_metrics', ()),
    )
    if problem is not None:
      return None, problem
    return _read(manager, step, target, data_iterator, params_only, extra_target)

  if which == 'latest':
    resolve_step(manager, which)  # Fails (one line) when there is none.
    step, (state, progress, extra), skipped = verification.newest_intact(
      manager.all_steps(), str(manager.directory), try_step
    )
    return Restored(step, state, skipped, progress, extra)
  step = resolve_step(manager, which)
  read, problem = try_step(step)
  if problem is not None:
    raise CheckpointError(
      f'Checkpoint {verification.step_dir(manager.directory, step)} is damaged: {problem}; '
      'choose another step (--checkpoint=latest skips damaged ones).'
    )
  return Restored(step, read[0], [], read[1], read[2])


def restore_latest(
  workdir: str,
  keep: int,
  best_metric: str,
  target: Any,
  data_iterator: Any,
  config: Any,
  extra_target: Optional[dict[str, Any]] = None,
) -> Optional[Restored]:
  """The latest intact checkpoint of `workdir`, restored to resume training (the data iterator
  repositioned in place); None when the workdir has no checkpoint yet. Reads only; every process
  calls it (one collective). Process 0's reading: a slower process may see the directory it made."""
  if not parallel.as_process_0_sees_it(os.path.isdir(checkpoint_dir(workdir))):
    return None
  reader = create_manager(workdir, keep, best_metric, read_only=True)
  try:
    if not reader.all_steps():
      return None
    return restore(
      reader,
      'latest',
      target,
      data_iterator=data_iterator,
      config=config,
      extra_target=extra_target,
    )
  finally:
    reader.close()
