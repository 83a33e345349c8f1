"""Checkpoint safety: manifests with checksums, checks before a step is read, recovery from damage.

As part of each save's commit (checkpoints.py), process 0 writes `<step>/hybrid_jax_manifest.json`
with the size and sha256 of every file of the step and the run's config fingerprint (orbax has no
checksums of its own): a step orbax lists as committed has one, whichever process died when.
Before a step is read back (`check_step`): its fingerprint is compared with the config (a
difference names the fields and refuses the run), its files with the manifest, its parameter names
and shapes with the model (from orbax's metadata, no array read). A step that fails is damaged:
`newest_intact` names it in one warning and goes on to the next older step, and a training run
moves it aside (`set_aside`); nothing is ever deleted. Failures are classified by these checks,
never by the text of orbax's exceptions.

  problem = check_step(path, abstract_state, config, ...)   # None (intact) or what is damaged
  step, value, skipped = newest_intact(steps, directory, try_step)
  set_aside(directory, skipped)                              # into <workdir>/damaged_checkpoints
"""

import hashlib
import json
import os
import sys
from typing import Any, Callable, Optional

import jax
import orbax.checkpoint as ocp

from hybrid_jax import config_validation
from hybrid_jax import fileio
from hybrid_jax.errors import CheckpointError

# Written into each step directory as part of its commit: size and sha256 of every file of the
# step, and the run's config fingerprint. A step without one is never trusted.
MANIFEST = 'hybrid_jax_manifest.json'
# orbax's step metadata, which orbax itself rewrites at the commit (a commit timestamp), after the
# manifest is written: not covered by the manifest.
_ORBAX_STEP_METADATA = '_CHECKPOINT_METADATA'


def step_dir(directory: str, step: int) -> str:
  return os.path.join(str(directory), str(step))


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def _files(path: str) -> list[str]:
  """Every file below `path` (relative, sorted), except the manifest and orbax's step metadata."""
  out = []
  for root, _, names in os.walk(path):
    for name in names:
      rel = os.path.relpath(os.path.join(root, name), path)
      if rel not in (MANIFEST, _ORBAX_STEP_METADATA) and not rel.endswith(f'{MANIFEST}.tmp'):
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
  # Atomic: a manifest is whole or absent.
  fileio.write_json(os.path.join(path, MANIFEST), record, sort_keys=True)


def read_manifest(path: str) -> tuple[Optional[dict[str, Any]], Optional[str]]:
  """(manifest, None), or (None, what is wrong with it) for the step directory `path`."""
  name = os.path.join(path, MANIFEST)
  if not os.path.exists(name):
    return None, (
      f'it has no {MANIFEST} (it was written by an older version of hybrid_jax, which wrote '
      'the manifest after the commit)'
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


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  return {
    '/'.join(_key_name(k) for k in p): tuple(leaf.shape)
    for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def structure_diff(path: str, abstract_params: Any) -> Optional[str]:
  """None when the saved parameters have the names and shapes of `abstract_params`.

  Reads orbax's metadata of the step's `state` item (names, global shapes), not the array data.
  """
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      metadata = checkpointer.metadata(os.path.join(path, 'state')).item_metadata
    saved = _shapes(metadata['params'])
  except Exception:  # pylint: disable=broad-except
    return None  # Unreadable metadata is damage, which verification reports; not a model change.
  wanted = _shapes(abstract_params)
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


def _check_data_layout(path: str) -> None:
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
      f'Checkpoint {path} was saved by {"/".join(counts)} process(es) and this run has '
      f'{jax.process_count()}: the data position is per process, so resume with that many '
      'processes (any devices per process), evaluate it with any layout (--mode=eval), or start '
      f'a new --workdir with --config.init_checkpoint={path}.'
    )


def check_step(
  path: str,
  abstract_params: Any,
  config: Optional[Any] = None,
  resuming: bool = True,
  with_data: bool = False,
  metrics_unreadable: bool = False,
) -> Optional[str]:
  """Checks one step directory before any array is read: settings, files, model structure.

  Args:
    path: the step directory.
    abstract_params: the model's parameter tree (shapes) to compare the saved one with.
    config: the run config, compared with the stored fingerprint (None: not compared).
    resuming: a settings mismatch is explained for resuming training (else for reading a run).
    with_data: the step's data-iterator position is needed (resuming training).
    metrics_unreadable: the manager found the step's metrics file unreadable (damage).

  Returns:
    None when the step is intact, else what is damaged (naming the file).

  Raises:
    CheckpointError: the step is intact but belongs to another run or model (never "delete it").
  """
  manifest, problem = read_manifest(path)
  if manifest is not None and config is not None and manifest.get('fingerprint'):
    diffs = config_validation.fingerprint_diff(manifest['fingerprint'], config)
    if diffs and not resuming:
      raise CheckpointError(
        f'Checkpoint {path} was trained with other settings ({"; ".join(diffs)}) than the config '
        'given for it: use the config the run was trained with.'
      )
    if diffs:
      raise CheckpointError(
        f'Checkpoint {path} was trained with other settings ({"; ".join(diffs)}): keep them to '
        'resume, or use a new --workdir (with --config.init_checkpoint=' + path + ' to start '
        'from its parameters). Fields that may change on resume: '
        + ', '.join(config_validation.MAY_CHANGE_ON_RESUME)
        + '.'
      )
  if problem is None:
    problem = verify_files(path, manifest)
  if problem is None and metrics_unreadable:
    problem = f'file {os.path.join(path, "metrics", "metrics")} is not valid JSON'
  if problem is None and with_data:
    _check_data_layout(path)
  if problem is None:
    diff = structure_diff(path, abstract_params)
    if diff:
      raise CheckpointError(
        f'Checkpoint {path} holds another model than this config builds ({diff}): '
        'use the config it was trained with, or a new --workdir.'
      )
  return problem


def warn(message: str) -> None:
  """A loud line on stderr (process 0 only): the run goes on, but the user must know."""
  if jax.process_index() == 0:
    print(f'WARNING: {message}', file=sys.stderr, flush=True)


def newest_intact(
  steps: list[int], directory: str, try_step: Callable[[int], tuple[Any, Optional[str]]]
) -> tuple[int, Any, list[int]]:
  """(step, value, damaged newer steps): the newest step that `try_step` reads without a problem.

  `try_step(step)` returns (value, None) or (None, what is damaged). Damaged steps are named
  loudly and skipped; nothing is deleted. A CheckpointError from `try_step` (another run or
  model: not damage) stops at once.

  Raises:
    CheckpointError: no step is intact.
  """
  skipped = []
  for step in sorted(steps, reverse=True):
    value, problem = try_step(step)
    if problem is None:
      if skipped:
        warn(
          f'using checkpoint {step_dir(directory, step)}, the newest intact one; skipped '
          f'damaged step(s) {skipped} (nothing was deleted).'
        )
      return step, value, skipped
    warn(f'skipping checkpoint {step_dir(directory, step)}: {problem}. Nothing was deleted.')
    skipped.append(step)
  raise CheckpointError(
    f'No intact checkpoint in {directory}: step(s) {skipped} failed verification (see '
    'the warnings above; nothing was deleted): move them aside to start over, or use a fresh '
    '--workdir.'
  )


def set_aside(directory: str, steps: list[int]) -> None:
  """Moves damaged steps to `<workdir>/damaged_checkpoints/` (process 0), so that the resumed run
  can save those steps again and the keep policy never counts them; nothing is deleted."""
  if not steps or jax.process_index() != 0:
    return
  target_root = os.path.join(os.path.dirname(str(directory)), 'damaged_checkpoints')
  os.makedirs(target_root, exist_ok=True)
  for step in steps:
    target = os.path.join(target_root, str(step))
    suffix = 1
    while os.path.exists(target):
      target, suffix = os.path.join(target_root, f'{step}.{suffix}'), suffix + 1
    os.replace(step_dir(directory, step), target)
    warn(f'moved damaged checkpoint {step_dir(directory, step)} to {target} (not deleted).')
