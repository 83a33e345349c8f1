"""One run of the study: train it, or reuse it when finished, or resume it when interrupted.

  result = train_run(config, workdir)          # result.json: validation curve, best step, seconds

A run's identity is its config's fingerprint (in result.json once finished, in fingerprint.json
from its first sitting on): a run dir of another config, finished or interrupted, is refused. Its
time counts every sitting (`clock`); after it only its best checkpoint is kept (keep='best'). Its
test phase: outputs.py.
"""

import contextlib
import copy
import hashlib
import json
import os
import shutil
import threading
import time
from typing import Callable, Iterator, Optional

from absl import logging

from experiments.study import arms as study_arms
from hybrid_jax import checkpoints
from hybrid_jax import config_validation
from hybrid_jax import fileio
from hybrid_jax import input_kinds
from hybrid_jax import population
from hybrid_jax import train
from hybrid_jax.errors import CheckpointError
from hybrid_jax.errors import ConfigError


def primary_metric(config) -> tuple[str, bool]:
  """(metric name, lower is better) of the config's head: accuracy, or MAE in original units."""
  return input_kinds.head(config).primary_metric


def fingerprint(config) -> str:
  """The run's identity: a hash of its whole config.

  An empty population (config.population: both lists empty, i.e. a single run) is left out, so
  that runs finished before the population fields existed keep their identity and are reused.
  """
  if 'population' in config and not population.members(config):
    config = copy.deepcopy(config)
    config.unlock()
    del config['population']
  return hashlib.sha256(config.to_json_best_effort(sort_keys=True).encode()).hexdigest()[:16]


def read_json(path: str) -> Optional[dict]:
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    return json.load(f)


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


# A run's wall time over all its sittings: a sitting adds its time to `workdir/seconds.json`,
# rewritten every CLOCK_RECORD_S seconds, so that a sitting cut short (a kill, the end of a
# session) loses at most that much of it; the file goes once result.json holds the total.
CLOCK_FILE = 'seconds.json'
CLOCK_RECORD_S = 30.0
# Held by each record and by the removal of a run dir while its clock runs (a restart from scratch).
CLOCK_WRITES = threading.Lock()


@contextlib.contextmanager
def clock(workdir: str) -> Iterator[Callable[[], float]]:
  """Yields a function that returns the run's seconds so far, earlier sittings included."""
  path = os.path.join(workdir, CLOCK_FILE)
  earlier = float((read_json(path) or {}).get('seconds', 0.0))
  start = time.perf_counter()

  def seconds() -> float:
    return earlier + time.perf_counter() - start

  stop = threading.Event()

  def record() -> None:
    with CLOCK_WRITES:
      try:
        fileio.write_json(path, {'seconds': seconds()})
      except FileNotFoundError:  # The run dir is not made yet, or was just removed (a restart).
        pass

  def record_every_interval() -> None:
    while not stop.wait(CLOCK_RECORD_S):
      record()

  recorder = threading.Thread(target=record_every_interval, name=f'clock {workdir}', daemon=True)
  recorder.start()
  try:
    yield seconds
  finally:
    stop.set()
    recorder.join()
    record()  # A sitting that ends in an error keeps all of its time too.


# The fingerprint of the run a run dir holds, written before each sitting trains: train resumes
# under some changed fields (config_validation.MAY_CHANGE_ON_RESUME: the run length, the eval
# cadence, the validation split, ...), which the study counts as another run.
FINGERPRINT_FILE = 'fingerprint.json'


def check_interrupted_run(config, workdir: str) -> None:
  """Refuses, in one line, a run dir holding an interrupted run of another config.

  An interrupted run: train accepted it (config.json is written), it has no result.json yet. A run
  begun by code older than fingerprint.json has none: its config.json (the resolved config that
  train ran; the study's configs are resolved too, so a run of the same config matches it) is
  compared on the fields both hold instead, so that a run of the same config still resumes and one
  whose run length, eval cadence or validation split changed is refused.
  """
  saved_config = read_json(os.path.join(workdir, 'config.json'))
  if saved_config is None:
    return  # Nothing accepted yet (or a refused sitting's record only): train starts afresh.
  recorded = (read_json(os.path.join(workdir, FINGERPRINT_FILE)) or {}).get('fingerprint')
  if recorded is not None:
    if recorded == fingerprint(config):
      return
    differences = f'fingerprint {recorded} != {fingerprint(config)}'
  else:
    changed = config_validation.field_diff(
      config_validation.flatten(saved_config),
      config_validation.flatten(json.loads(config.to_json_best_effort())),
    )
    if not changed:
      return
    differences = ', '.join(changed)
  raise ConfigError(
    f'{workdir} holds an interrupted run of another config ({differences}): delete it or use '
    'another --study_dir.'
  )


def record_fingerprint(config, workdir: str) -> None:
  """Writes the run dir (made if new) and its fingerprint.json before a sitting trains."""
  train.check_workdir(workdir)
  train.make_workdir(workdir)
  fileio.write_json(os.path.join(workdir, FINGERPRINT_FILE), {'fingerprint': fingerprint(config)})


def run_checkpoints(workdir: str, config, read_only: bool):
  """The run's checkpoint manager (1 kept by recency; the best by the config's best_metric)."""
  return checkpoints.create_manager(workdir, 1, config.best_metric, read_only=read_only)


def train_run(config, workdir: str, keep: str = 'best') -> dict:
  """Trains one run (or reuses / resumes it) and returns its result.json record.

  The record: fingerprint, seconds, params, diverged, best_step, val_best (the primary metric of the
  kept checkpoint on the validation split), val_curve [[step, value]].
  """
  path = os.path.join(workdir, 'result.json')
  fp = fingerprint(config)
  result = read_json(path)
  if result is not None:
    if result.get('fingerprint') != fp:
      raise ConfigError(
        f'{workdir} holds a run of another config (fingerprint '
        f'{result.get("fingerprint")} != {fp}): delete it or use another '
        '--study_dir.'
      )
    _prune(config, workdir, result, keep)
    return result
  check_interrupted_run(config, workdir)
  record_fingerprint(config, workdir)
  diverged = None
  with clock(workdir) as seconds:
    try:
      try:
        train.train_and_evaluate(config, workdir)
      except CheckpointError as e:  # An interrupted run whose checkpoint is unusable.
        logging.warning('Restarting %s from scratch: %s', workdir, e)
        with CLOCK_WRITES:  # The time so far stays with the clock; its next record rewrites it.
          shutil.rmtree(workdir)
          record_fingerprint(config, workdir)
        train.train_and_evaluate(config, workdir)
    except FloatingPointError as e:
      diverged = str(e)
  result = write_result(config, workdir, seconds(), diverged)
  _prune(config, workdir, result, keep)
  return result


def write_result(config, workdir: str, seconds: float, diverged: Optional[str]) -> dict:
  """Writes (and returns) result.json of a trained run dir (one run's, or a population member's):
  its validation curve and the step and validation metric of its best checkpoint."""
  metric, _ = primary_metric(config)
  curve = validation_curve(workdir, metric)
  best_step, val_best, val_loss_best = None, None, None
  if diverged is None:
    manager = run_checkpoints(workdir, config, read_only=True)
    try:
      best_step = checkpoints.resolve_step(manager, 'best')
    finally:
      manager.close()
    values = dict(curve)
    if best_step not in values:
      raise CheckpointError(
        f'{workdir}: best checkpoint step {best_step} has no eval line in metrics.jsonl; the run '
        'directory is inconsistent: delete it and run the study again.'
      )
    val_best = values[best_step]
    val_loss_best = dict(validation_curve(workdir, 'loss')).get(best_step)
  result = {
    'fingerprint': fingerprint(config),
    'seconds': seconds,
    'params': study_arms.count_params(config),
    'diverged': diverged,
    'best_step': best_step,
    'val_best': val_best,
    'val_loss_best': val_loss_best,
    'val_curve': curve,
  }
  fileio.write_json(os.path.join(workdir, 'result.json'), result)
  if os.path.exists(os.path.join(workdir, CLOCK_FILE)):
    os.remove(os.path.join(workdir, CLOCK_FILE))
  return result


def _prune(config, workdir: str, result: dict, keep: str) -> None:
  """Deletes every checkpoint except the best one (keep='best'); nothing with keep='all'."""
  if keep != 'best' or result.get('best_step') is None:
    return
  directory = checkpoints.checkpoint_dir(workdir)
  if not os.path.isdir(directory) or sorted(d for d in os.listdir(directory) if d.isdigit()) == [
    str(result['best_step'])
  ]:
    return  # Nothing to delete (the common case when a finished study is re-run).
  manager = run_checkpoints(workdir, config, read_only=False)
  try:
    for step in manager.all_steps():
      if step != result['best_step']:
        manager.delete(step)
  finally:
    manager.close()
