"""Checkpoints with orbax: the train state and the data iterator's position, saved together.

Layout: `workdir/checkpoints/<step>/{state,data,metrics}`; `data` holds one JSON file per process
with the grain iterator state, `metrics` the eval metrics the step was saved with (if any).
Saves are asynchronous (the device->host copy happens before `save` returns, the writes in the
background); `finish` waits for them. A step that already exists is never overwritten.

Verified: once a save has completed, process 0 writes `<step>/hybrid_jax_manifest.json` with the
size and sha256 of every file of the step and the run's config fingerprint (orbax has no checksums
of its own). Before a step is read back: its fingerprint is compared with the config (a difference
names the fields and refuses the run), its parameter names and shapes with the model (from orbax's
metadata, no array read), then every file with the manifest. A step that fails (or has no manifest)
is named in one warning and skipped for the newest intact one; nothing is ever deleted. Failures
are classified by these checks, never by the text of orbax's exceptions.

Restoring goes through abstract targets (`jax.eval_shape` of the state) carrying explicit shardings
of the *current* devices, so a checkpoint saved on 4 devices restores onto 1 (or 8) unchanged.
"""

import hashlib
import json
import logging as pylogging
import os
import sys
import types
from typing import Any, Optional, Union

import jax
import orbax.checkpoint as ocp
from absl import logging
from grain import checkpoint as grain_checkpoint
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from hybrid_jax import config_validation
from hybrid_jax import metrics as metrics_lib
from hybrid_jax.errors import CheckpointError
from hybrid_jax.errors import ConfigError


class _QuietExpectedWarnings(pylogging.Filter):
  """Drops orbax's warnings about choices made here on purpose (not every save has metrics)."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    msg = record.getMessage()
    return not (
      msg.startswith('Requested `tracked_metric`; did not provide metrics')
      or msg.startswith('Given directory is read only')
      or msg.startswith('Metadata file does not exist')
    )


logging.get_absl_logger().addFilter(_QuietExpectedWarnings())


class _QuietAbandonedReads(pylogging.Filter):
  """After a refused restore, orbax's other pending reads fail too and asyncio logs each one
  ("... exception was never retrieved") when it is garbage-collected, often at exit, after our
  one-line error. Installed only once a restore has failed; the first error is the one reported."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    return 'exception was never retrieved' not in record.getMessage()


_QUIET_ABANDONED_READS = _QuietAbandonedReads()


# Written into each step directory once its save has completed: size and sha256 of every file of
# the step, and the run's config fingerprint. A step without one is never trusted.
MANIFEST = 'hybrid_jax_manifest.json'


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def create_manager(
  workdir: str, keep: int, best_metric: str, read_only: bool = False
) -> ocp.CheckpointManager:
  """A manager in `workdir/checkpoints` keeping the last `keep` steps and the best by `best_metric`.

  Args:
    workdir: run directory.
    keep: how many of the latest checkpoints to keep (>= 1).
    best_metric: eval metric name; the checkpoint with the best value is kept as well.
    read_only: for evaluation; never writes or deletes.
  """
  if keep < 1:
    raise ConfigError(
      f'config.keep_checkpoints={keep} must be >= 1: set --config.keep_checkpoints.'
    )
  lower = metrics_lib.is_lower_better(best_metric)
  get_metric = lambda m: m[best_metric]  # pylint: disable=unnecessary-lambda-assignment
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
  )
  return _Manager(checkpoint_dir(workdir), options=options)


class _Manager(ocp.CheckpointManager):
  """orbax's manager, plus two things it lacks.

  - An unreadable `metrics/metrics` file of one step marks that step damaged (it then fails
    verification and is skipped) instead of failing every command in the workdir.
  - `pending_manifests`: saves started by this process whose manifest is written once they complete.
  """

  def __init__(self, *args, **kwargs):
    self.unreadable_metrics: set[int] = set()
    self.pending_manifests: dict[int, Optional[dict[str, Any]]] = {}
    super().__init__(*args, **kwargs)

  def metrics(self, step: int) -> Optional[Any]:
    try:
      return super().metrics(step)
    except ValueError:  # json.JSONDecodeError, UnicodeDecodeError: garbage where JSON should be.
      self.unreadable_metrics.add(step)
      return None


def step_dir(manager: ocp.CheckpointManager, step: int) -> str:
  return os.path.join(str(manager.directory), str(step))


def save(
  manager: ocp.CheckpointManager,
  step: int,
  state: Any,
  data_iterator: Any,
  eval_metrics: Optional[dict[str, object]] = None,
  fingerprint: Optional[dict[str, Any]] = None,
) -> bool:
  """Starts an async save of `state` and the iterator position at `step`; False if it exists.

  The step's manifest (checksums of every file, and `fingerprint`) is written once the save has
  completed: at the next `save` or at `finish`.

  Args:
    manager: from `create_manager`.
    step: the state's step.
    state: the replicated train state (global jax.Arrays), checked finite by the caller.
    data_iterator: the train iterator (get_state/set_state), positioned after `step` batches.
    eval_metrics: eval metrics of this very state, used to track the best checkpoint.
    fingerprint: `config_validation.fingerprint(config)`, stored in the manifest.
  """
  finish(manager)
  if step in manager.all_steps():
    logging.info(
      'Checkpoint step %d already exists in %s; not overwriting it.', step, manager.directory
    )
    return False
  args = ocp.args.Composite(
    state=ocp.args.StandardSave(state), data=grain_checkpoint.CheckpointSave(data_iterator)
  )
  metrics = metrics_lib.scalars(eval_metrics) if eval_metrics else None
  manager.save(step, args=args, metrics=metrics, force=True)
  if isinstance(manager, _Manager):
    manager.pending_manifests[step] = fingerprint
  return True


def finish(manager: ocp.CheckpointManager) -> None:
  """Waits for async saves, then (process 0) writes the manifest of each completed step."""
  manager.wait_until_finished()
  pending = getattr(manager, 'pending_manifests', {})
  for step, fingerprint in sorted(pending.items()):
    path = step_dir(manager, step)
    if jax.process_index() == 0 and os.path.isdir(path):  # (The keep policy may have removed it.)
      write_manifest(path, step, fingerprint)
  pending.clear()


def write_completed_manifests(manager: ocp.CheckpointManager) -> None:
  """Writes the manifests of saves that have completed, without waiting for one in progress.

  Called every step: a run killed after a save completed then still has that step verified.
  """
  if (
    jax.process_index() == 0
    and getattr(manager, 'pending_manifests', None)
    and not manager.is_saving_in_progress()
  ):
    finish(manager)


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def _files(path: str) -> list[str]:
  """Every file below `path` (relative, sorted), except the manifest itself."""
  out = []
  for root, _, names in os.walk(path):
    for name in names:
      rel = os.path.relpath(os.path.join(root, name), path)
      if rel != MANIFEST:
        out.append(rel)
  return sorted(out)


def write_manifest(path: str, step: int, fingerprint: Optional[dict[str, Any]]) -> None:
  """Writes `path/MANIFEST`: size and sha256 of every file of the step, and the run fingerprint."""
  files = {
    rel: {
      'size': os.path.getsize(os.path.join(path, rel)),
      'sha256': _sha256(os.path.join(path, rel)),
    }
    for rel in _files(path)
  }
  record = {'format': 1, 'step': step, 'fingerprint': fingerprint, 'files': files}
  tmp = os.path.join(path, f'.{MANIFEST}.tmp')
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(record, f, indent=1, sort_keys=True)
  os.replace(tmp, os.path.join(path, MANIFEST))  # Atomic: a manifest is whole or absent.


def read_manifest(path: str) -> tuple[Optional[dict[str, Any]], Optional[str]]:
  """(manifest, None), or (None, what is wrong with it) for the step directory `path`."""
  name = os.path.join(path, MANIFEST)
  if not os.path.exists(name):
    return None, (
      f'it has no {MANIFEST} (its save never completed, or it was written by an '
      'older version without verification)'
    )
  try:
    with open(name, encoding='utf-8') as f:
      manifest = json.load(f)
    if not isinstance(manifest, dict) or not isinstance(manifest.get('files'), dict):
      raise ValueError('not a manifest')
  except (OSError, ValueError):
    return None, f'its {MANIFEST} is unreadable'
  return manifest, None


def verify_files(path: str, manifest: dict[str, Any]) -> Optional[str]:
  """None when every file of the step matches the manifest, else what is wrong, naming the file."""
  for rel, expected in sorted(manifest['files'].items()):
    name = os.path.join(path, rel)
    if not os.path.isfile(name):
      return f'file {name} is missing'
    if os.path.getsize(name) != expected.get('size') or _sha256(name) != expected.get('sha256'):
      return f'file {name} is damaged (its checksum does not match the manifest)'
  return None


def _key_name(key: Any) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def structure_diff(path: str, abstract_state: Any) -> Optional[str]:
  """None when the saved parameters have the names and shapes of `abstract_state.params`.

  Reads orbax's metadata of the step's `state` item (names, global shapes), not the array data.
  """
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      metadata = checkpointer.metadata(os.path.join(path, 'state')).item_metadata
    saved = {
      '/'.join(_key_name(k) for k in p): tuple(leaf.shape)
      for p, leaf in jax.tree_util.tree_flatten_with_path(metadata['params'])[0]
    }
  except Exception:  # pylint: disable=broad-except
    return None  # Unreadable metadata is damage, which verification reports; not a model change.
  wanted = {
    '/'.join(_key_name(k) for k in p): tuple(leaf.shape)
    for p, leaf in jax.tree_util.tree_flatten_with_path(abstract_state.params)[0]
  }
  if saved == wanted:
    return None
  only_saved = sorted(set(saved) - set(wanted))
  only_wanted = sorted(set(wanted) - set(saved))
  reshaped = sorted(k for k in set(saved) & set(wanted) if saved[k] != wanted[k])
  parts = []
  if reshaped:
    parts.append(
      ', '.join(f'{k} is {saved[k]} there but {wanted[k]} here' for k in reshaped[:3])
      + (f' (+{len(reshaped) - 3} more)' if len(reshaped) > 3 else '')
    )
  if only_saved:
    parts.append(f'{len(only_saved)} parameter(s) only there, e.g. {only_saved[0]}')
  if only_wanted:
    parts.append(f'{len(only_wanted)} parameter(s) only here, e.g. {only_wanted[0]}')
  return '; '.join(parts)


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


def _silence_abandoned_reads() -> None:
  """After a failed orbax read its other pending reads fail too and surface at exit ("Exception
  ignored in", "Event loop is closed", "Future exception was never retrieved"); the first error is
  the one reported, so these are dropped."""
  pylogging.getLogger('asyncio').addFilter(_QUIET_ABANDONED_READS)
  previous = sys.unraisablehook
  if getattr(previous, 'hybrid_jax_quiet', False):
    return

  def hook(unraisable):
    module = type(unraisable.object).__module__ if unraisable.object is not None else ''
    text = f'{unraisable.exc_value} {unraisable.object!r}'
    if (
      module.split('.')[0] in ('asyncio', 'orbax', 'tensorstore')
      or 'Event loop is closed' in text
      or 'coroutine' in text
    ):
      return
    previous(unraisable)

  hook.hybrid_jax_quiet = True
  sys.unraisablehook = hook


def _warn(message: str) -> None:
  """A loud line on stderr (process 0 only): the run goes on, but the user must know."""
  if jax.process_index() == 0:
    print(f'WARNING: {message}', file=sys.stderr, flush=True)


def _check_data_layout(path: str, what: str) -> None:
  """A training resume needs this process's iterator position, saved per process count."""
  name = f'process_{jax.process_index()}-of-{jax.process_count()}.json'
  data_dir = os.path.join(path, 'data')
  saved = (
    sorted(f for f in os.listdir(data_dir) if f.endswith('.json'))
    if os.path.isdir(data_dir)
    else []
  )
  if saved and name not in saved:
    counts = sorted({f.rsplit('-of-', 1)[-1][: -len('.json')] for f in saved})
    raise CheckpointError(
      f'{what} {path} was saved by {"/".join(counts)} process(es) and this run has '
      f'{jax.process_count()}: the data position is per process, so resume with that many '
      'processes (any devices per process), evaluate it with any layout (--mode=eval), or start '
      f'a new --workdir with --config.init_checkpoint={path}.'
    )


def _check_step(
  manager: ocp.CheckpointManager,
  step: int,
  abstract_state: Any,
  config: Optional[Any],
  what: str,
  with_data: bool = False,
  resuming: bool = True,
) -> Optional[str]:
  """Checks one step before any array is read: settings, model structure, then file checksums.

  `resuming`: a settings mismatch is explained for resuming training (else for reading a run).

  Returns None when the step is intact, else what is damaged (naming the file).

  Raises:
    CheckpointError: the step is intact but belongs to another run or model (never "delete it").
  """
  path = step_dir(manager, step)
  manifest, problem = read_manifest(path)
  if manifest is not None and config is not None and manifest.get('fingerprint'):
    diffs = config_validation.fingerprint_diff(manifest['fingerprint'], config)
    if diffs and not resuming:
      raise CheckpointError(
        f'{what} {path} was trained with other settings ({"; ".join(diffs)}) than the config '
        'given for it: use the config the run was trained with.'
      )
    if diffs:
      raise CheckpointError(
        f'{what} {path} was trained with other settings ({"; ".join(diffs)}): keep them to '
        'resume, or use a new --workdir (with --config.init_checkpoint=' + path + ' to start '
        'from its parameters). Fields that may change on resume: '
        + ', '.join(config_validation.MAY_CHANGE_ON_RESUME)
        + '.'
      )
  if problem is None:
    problem = verify_files(path, manifest)
  if problem is None and step in getattr(manager, 'unreadable_metrics', ()):
    problem = f'file {os.path.join(path, "metrics", "metrics")} is not valid JSON'
  if problem is None and with_data:
    _check_data_layout(path, what)
  if problem is None:
    diff = structure_diff(path, abstract_state)
    if diff:
      raise CheckpointError(
        f'{what} {path} holds another model than this config builds ({diff}): '
        'use the config it was trained with, or a new --workdir.'
      )
  return problem


def _read(
  manager: ocp.CheckpointManager, step: int, abstract_state: Any, data_iterator: Optional[Any]
) -> tuple[Any, Optional[str]]:
  """(state, None) or (None, why orbax could not read a step that passed verification)."""
  items = {'state': ocp.args.StandardRestore(abstract_state)}
  if data_iterator is not None:
    items['data'] = grain_checkpoint.CheckpointRestore(data_iterator)
  restored, problem = _read_items(manager, step, items)
  return (None if restored is None else restored['state']), problem


def _read_items(
  manager: ocp.CheckpointManager, step: int, items: dict[str, Any]
) -> tuple[Any, Optional[str]]:
  """(restored items, None) or (None, why orbax could not read them)."""
  try:
    return manager.restore(step, args=ocp.args.Composite(**items)), None
  except Exception as e:  # pylint: disable=broad-except  (reported, never matched on its text)
    _silence_abandoned_reads()
    text = str(e).strip()
    first = text.splitlines()[0][:160] if text else ''
    return None, f'it could not be read ({type(e).__name__}: {first})'


def restore(
  manager: ocp.CheckpointManager,
  step: int,
  abstract_state: Any,
  data_iterator: Optional[Any] = None,
  config: Optional[Any] = None,
) -> Any:
  """Verifies and restores the train state at `step` (and the iterator's position in place).

  Args:
    manager: from `create_manager`.
    step: a saved step (see `resolve_step`).
    abstract_state: from `abstract_like`; fixes structure, shapes, dtypes and target devices.
    data_iterator: the train iterator to reposition, or None (evaluation).
    config: the run config, to compare with the stored fingerprint (None: model structure only).

  Raises:
    CheckpointError: one line naming the step directory (and damaged file) and what to do.
  """
  problem = _check_step(
    manager, step, abstract_state, config, 'Checkpoint', with_data=data_iterator is not None
  )
  state = None
  if problem is None:
    state, problem = _read(manager, step, abstract_state, data_iterator)
  if problem:
    raise CheckpointError(
      f'Checkpoint {step_dir(manager, step)} is damaged: {problem}; choose '
      'another step (--checkpoint=latest skips damaged ones).'
    )
  return state


def restore_newest_intact(
  manager: ocp.CheckpointManager,
  abstract_state: Any,
  data_iterator: Optional[Any] = None,
  config: Optional[Any] = None,
) -> tuple[int, Any, list[int]]:
  """(step, state, damaged newer steps) of the newest intact step; damaged ones are named loudly.

  Nothing is deleted (a training run then moves the damaged steps aside, see `set_aside`).
  Settings or model mismatches are not damage: they stop at once.

  Raises:
    CheckpointError: no step is intact, or the checkpoints belong to another run or model.
  """
  skipped = []
  for step in sorted(manager.all_steps(), reverse=True):
    problem = _check_step(
      manager, step, abstract_state, config, 'Checkpoint', with_data=data_iterator is not None
    )
    state = None
    if problem is None:
      state, problem = _read(manager, step, abstract_state, data_iterator)
    if problem is None:
      if skipped:
        _warn(
          f'using checkpoint {step_dir(manager, step)}, the newest intact one; skipped '
          f'damaged step(s) {skipped} (nothing was deleted).'
        )
      return step, state, skipped
    _warn(f'skipping checkpoint {step_dir(manager, step)}: {problem}. Nothing was deleted.')
    skipped.append(step)
  raise CheckpointError(
    f'No intact checkpoint in {manager.directory}: step(s) {skipped} failed verification (see '
    'the warnings above; nothing was deleted): move them aside to start over, or use a fresh '
    '--workdir.'
  )


def set_aside(manager: ocp.CheckpointManager, steps: list[int]) -> None:
  """Moves damaged steps to `<workdir>/damaged_checkpoints/` (process 0), so that the resumed run
  can save those steps again and the keep policy never counts them; nothing is deleted."""
  if not steps or jax.process_index() != 0:
    return
  target_root = os.path.join(os.path.dirname(str(manager.directory)), 'damaged_checkpoints')
  os.makedirs(target_root, exist_ok=True)
  for step in steps:
    target = os.path.join(target_root, str(step))
    suffix = 1
    while os.path.exists(target):
      target, suffix = os.path.join(target_root, f'{step}.{suffix}'), suffix + 1
    os.replace(step_dir(manager, step), target)
    _warn(f'moved damaged checkpoint {step_dir(manager, step)} to {target} (not deleted).')


def restore_params(
  manager: ocp.CheckpointManager, step: int, abstract_params: Any, config: Optional[Any] = None
) -> Any:
  """Only the parameters of the train state saved at `step`: no optimizer state is read or built.

  The step is verified first, as by `restore` (fingerprint when `config` is given, checksums,
  parameter names and shapes); then orbax restores the `params` subtree alone (partial restore).

  Args:
    manager: from `create_manager`.
    step: a saved step (see `resolve_step`).
    abstract_params: the model's `params` tree of `jax.ShapeDtypeStruct`s with shardings (the
      target devices); fixes structure, shapes and dtypes.
    config: the run's config, to compare with the step's stored fingerprint (None: not compared).

  Raises:
    CheckpointError: as `restore`.
  """
  problem = _check_step(
    manager,
    step,
    types.SimpleNamespace(params=abstract_params),
    config,
    'Checkpoint',
    resuming=False,
  )
  if problem is None:
    item = {'params': abstract_params}
    args = ocp.args.PyTreeRestore(
      item=item,
      partial_restore=True,
      restore_args=ocp.checkpoint_utils.construct_restore_args(item),
    )
    restored, problem = _read_items(manager, step, {'state': args})
    if problem is None:
      return restored['state']['params']
  raise CheckpointError(
    f'Checkpoint {step_dir(manager, step)} is damaged: {problem}; choose '
    'another step (--checkpoint=latest skips damaged ones).'
  )


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
    raise CheckpointError(
      f'config.init_checkpoint={path} does not exist: give a run workdir, its '
      'checkpoints/ directory or a step directory.'
    )
  manager = _Manager(path, options=ocp.CheckpointManagerOptions(read_only=True))
  try:
    if step is None:
      resolve_step(manager, 'latest')  # Fails (one line) when there is none.
      return restore_newest_intact(manager, abstract_state)[1].params
    step = resolve_step(manager, step)
    return restore(manager, step, abstract_state).params
  except CheckpointError as e:
    raise CheckpointError(f'config.init_checkpoint: {e}') from None
  finally:
    manager.close()
