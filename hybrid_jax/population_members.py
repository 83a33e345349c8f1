"""Each member of a population as a run (population_train.py): its host-side state, its run dir,
its train records, and its checkpoints, written from the population's stacked states.

  host = MemberRun(member, config, directory, stopping, window)   # one per member
  take_metrics(hosts, step, device_metrics, active, chief)        # each member's train window
  host.best = record(host, data_position, step)                   # what its checkpoint will hold
  write_checkpoints(hosts, {'current': states, 'best': best})     # its best and last steps
"""

import dataclasses
import json
import os
import shutil
from typing import Any, Optional, Sequence

import ml_collections
import numpy as np

from hybrid_jax import checkpoints
from hybrid_jax import config_validation
from hybrid_jax import metrics as metrics_lib
from hybrid_jax import parallel
from hybrid_jax import population
from hybrid_jax import reporting
from hybrid_jax import run_progress
from hybrid_jax import steps
from hybrid_jax.errors import ConfigError


@dataclasses.dataclass
class MemberRun:
  """Host-side state of one member: its config, dir, early stopping, train window, writer, manager.

  diverged: the step at which its loss or parameters stopped being finite (then it is stopped:
    its best checkpoint is kept); None while it trains normally.
  """

  member: population.Member
  config: ml_collections.ConfigDict
  directory: str
  stopping: run_progress.EarlyStopping
  window: list
  writer: Any = None
  manager: Any = None
  last_eval: Optional[dict] = None
  diverged: Optional[int] = None
  # What its checkpoints will hold (`record`): its best evaluated step and the step it stopped at.
  best: Optional[dict] = None
  last: Optional[dict] = None

  @property
  def active(self) -> bool:
    return not self.stopping.stopped and self.diverged is None


def check_dir(host: MemberRun) -> None:
  """A member dir already holding another run's config is refused (its checkpoints are kept)."""
  path = os.path.join(host.directory, 'config.json')
  if not os.path.exists(path):
    return
  with open(path, encoding='utf-8') as f:
    stored = config_validation.fingerprint(json.load(f))
  diffs = config_validation.fingerprint_diff(stored, host.config)
  if diffs:
    raise ConfigError(
      f'{host.directory} holds another run ({"; ".join(diffs[:3])}): use a new --workdir for '
      'this population.'
    )


def drop_replayed_steps(directory: str, latest: int) -> None:
  """Removes member checkpoints after the population's step `latest`: written before a kill, they
  are replayed by the resumed population, identically."""
  root = checkpoints.checkpoint_dir(directory)
  if not os.path.isdir(root):
    return
  for name in os.listdir(root):
    if name.isdigit() and int(name) > latest:
      shutil.rmtree(os.path.join(root, name))


def take_metrics(hosts, step: int, device_metrics, active: np.ndarray, chief: bool) -> None:
  """Appends each active member's train metrics of `step` to its window; a non-finite loss or
  gradient norm makes the member diverge there."""
  values = parallel.to_host(device_metrics)
  for host in hosts:
    k = host.member.index
    if active[k] and host.diverged is None:
      host.window.append({name: float(v[k]) for name, v in values.items()})
      if not all(np.isfinite(host.window[-1][n]) for n in ('loss', 'grad_norm')):
        diverge(host, step, chief)


def record(host: MemberRun, data_position: bytes, step: int) -> dict:
  """What member `host`'s checkpoint of `step` holds besides its state: its seed's data position,
  its eval metrics and its progress (JSON-able: it is saved with the population's checkpoints)."""
  return {
    'step': step,
    'data': data_position.decode(),
    'metrics': metrics_lib.scalars(host.last_eval),
    'progress': run_progress.to_save(host.stopping, host.window),
  }


class _DataPosition:
  """A saved data position, checkpointed like the iterator it was read from."""

  def __init__(self, state: str):
    self.state = state

  def get_state(self) -> bytes:
    return self.state.encode()


def write_checkpoints(hosts: Sequence[MemberRun], stacks: dict[str, steps.TrainState]) -> None:
  """Writes each member's checkpoints, as a single run's: its best evaluated step (from the best
  stack) and the step it stopped at (from the current one). Steps already there are kept."""
  for host in hosts:
    for record, stack in ((host.best, stacks['best']), (host.last, stacks['current'])):
      if record is None:
        continue
      state = population.member_state(stack, host.member.index)
      tx, _ = steps.create_optimizer(host.config)
      checkpoints.save(
        host.manager,
        record['step'],
        state.replace(opt_state=state.opt_state.inner_state, tx=tx),
        _DataPosition(record['data']),
        record['metrics'],
        config_validation.fingerprint(host.config),
        record['progress'],
      )
  for host in hosts:
    checkpoints.finish(host.manager)


def diverge(host: MemberRun, step: int, chief: bool) -> None:
  host.diverged = step
  reporting.say(
    f'Member {host.member.index} (seed {host.member.seed}, learning rate '
    f'{host.member.learning_rate:g}) diverged at step {step} (non-finite loss or state): it stops '
    'here; its best checkpoint is kept. The other members go on.',
    chief,
  )


def log_train(host: MemberRun, step: int, config: ml_collections.ConfigDict) -> None:
  values = {k: float(np.mean([w[k] for w in host.window])) for k in host.window[0]}
  schedule = steps.SCHEDULES[config.lr_schedule](
    host.member.learning_rate, int(config.warmup_steps), int(config.num_train_steps)
  )
  values['learning_rate'] = float(schedule(step - 1))
  host.writer.write(step, 'train', values)
  host.window = []


def table(title: str, hosts: Sequence[MemberRun], best_metric: str) -> str:
  """One row per member: its seed, rate, status and last eval loss and best metric."""
  lines = [
    title,
    f'| member | seed | learning rate | status | eval loss | eval {best_metric} |',
    '|---:|---:|---:|---|---:|---:|',
  ]
  for h in hosts:
    e = h.last_eval or {}
    status = (
      f'diverged at {h.diverged}' if h.diverged else 'stopped' if h.stopping.stopped else 'training'
    )
    lines.append(
      f'| {h.member.index} | {h.member.seed} | {h.member.learning_rate:g} | {status} | '
      f'{e.get("loss", float("nan")):.4f} | {e.get(best_metric, float("nan")):.4f} |'
    )
  return '\n'.join(lines)
