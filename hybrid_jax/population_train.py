"""Training a population (population.py): K runs of one model in one compiled step, each a run.

  results = train_population(config, workdir)         # [final eval metrics of member k]
  results = evaluate_population(config, workdir)      # --mode=eval: every member's checkpoint

A population's workdir holds its members' run dirs, each what a single run with the member's seed
and learning rate writes (config.json, inference.json, metrics.jsonl, tensorboard/, and
checkpoints/ with its best and its last step): `--mode=eval --member=k`, `hybrid_jax.load(workdir,
member=k)` and TensorBoard (one run per member) read them as single runs. The member's checkpoints
are single-run checkpoints: its optimizer state without the injected rate, and the data position of
its seed's iterator.

  workdir/config.json, workdir/checkpoints/   the population: every member's current and best
                                              state (stacked), every seed's data position, each
                                              member's progress (for resume)
  workdir/members/<k>/                        member k's run dir

Each member stops on its own (config.early_stopping_patience): a stopped member's state no longer
changes and it logs nothing more; the population ends when every member has stopped or the last step
is reached. The population's checkpoints hold each member's best evaluated state, so the members'
own checkpoints are written once, when the population ends (one save per evaluation instead of one
per member: a member checkpoint costs more than a small model's evaluation). A member's steps after
the population's latest (written before a kill) are removed on resume and written again.
"""

import copy
import dataclasses
import functools
import json
import os
import shutil
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hybrid_jax import checkpoint_verification
from hybrid_jax import checkpoints
from hybrid_jax import config_validation
from hybrid_jax import fileio
from hybrid_jax import inference
from hybrid_jax import input_kinds
from hybrid_jax import metrics as metrics_lib
from hybrid_jax import parallel
from hybrid_jax import population
from hybrid_jax import reporting
from hybrid_jax import run_progress
from hybrid_jax import steps
from hybrid_jax import train
from hybrid_jax.data import pipeline
from hybrid_jax.errors import ConfigError


class _SeedIterators:
  """One train iterator per distinct seed, checkpointed as one grain item (a JSON list)."""

  def __init__(self, iterators: Sequence[Any]):
    self.iterators = list(iterators)

  def __iter__(self):
    return self

  def __next__(self) -> list[dict[str, np.ndarray]]:
    return [next(it) for it in self.iterators]

  def get_state(self) -> bytes:
    return json.dumps([it.get_state().decode() for it in self.iterators]).encode()

  def set_state(self, state: bytes) -> None:
    for it, one in zip(self.iterators, json.loads(state.decode()), strict=True):
      it.set_state(one.encode())

  def start_prefetch(self) -> None:
    for it in self.iterators:
      if hasattr(it, 'start_prefetch'):
        it.start_prefetch()


@dataclasses.dataclass
class _Member:
  """Host-side state of one member: its config, early stopping, train window, writer, manager.

  diverged: the step at which its loss or parameters stopped being finite (then it is stopped:
    its last checkpoints are its last finite states); None while it trains normally.
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
  # What its checkpoints will hold (`_record`): its best evaluated step and the step it stopped at.
  best: Optional[dict] = None
  last: Optional[dict] = None

  @property
  def active(self) -> bool:
    return not self.stopping.stopped and self.diverged is None


def train_population(
  config: ml_collections.ConfigDict, workdir: str, devices: Optional[Sequence[Any]] = None
) -> list[dict[str, object]]:
  """Trains every member of `config.population` (see the module docstring); resumes if it can.

  Returns:
    Each member's final eval metrics (its last evaluation), with 'member', 'seed',
    'learning_rate', 'stopped' and 'diverged' (a step, or None) added, in member order.
  """
  train.check_workdir(workdir)
  members = population.members(config)
  if not members:
    raise ConfigError('config.population is empty: train a single run with hybrid_jax.train.')
  run = train.Run(config, devices)
  config, chief = run.config, run.is_chief
  model = input_kinds.create_model(config)
  # Not placed replicated (out_shardings): a replicated input to the population's pmapped step
  # stalled XLA:CPU's collectives on simulated devices; pmap broadcasts a one-device (or host) copy.
  init = functools.partial(population.init_states, config, model, members)
  # The population's checkpoints hold every member's current state and (item 'best') its best
  # evaluated one: each member's best checkpoint is written from it when the population ends.
  abstract = checkpoints.abstract_like(jax.eval_shape(init), run.sharding)
  iterators = _SeedIterators(
    [
      pipeline.create_train_iterator(dataclasses.replace(run.source, config=_with_seed(config, s)))
      for s in population.distinct_seeds(members)
    ]
  )
  hosts = [
    _Member(
      m,
      population.member_config(config, m),
      population.member_dir(workdir, m.index),
      run_progress.EarlyStopping(run.best_metric, config.early_stopping_patience),
      [],
    )
    for m in members
  ]
  for host in hosts:  # Before anything is written: a member dir of another run is refused.
    _check_member_dir(host)
  restored = checkpoints.restore_latest(
    workdir,
    config.keep_checkpoints,
    run.best_metric,
    abstract,
    iterators,
    config,
    {'best': abstract},
  )
  if restored is not None:
    stacks = parallel.to_host({'current': restored.state, 'best': restored.extra['best']})
  else:
    states = init()
    stacks = {'current': states, 'best': jax.tree.map(jnp.copy, states)}
  latest = restored.step if restored is not None else 0
  if chief:  # Accepted: from here on the population writes.
    train.make_workdir(workdir)
    fileio.write_text(os.path.join(workdir, 'config.json'), config.to_json_best_effort(indent=2))
  if restored is not None:
    reporting.say(f'Resumed the population of {len(members)} from step {latest}.', chief)
    checkpoint_verification.set_aside(checkpoints.checkpoint_dir(workdir), restored.skipped)
  saved = (restored.progress or {}).get('members', []) if restored is not None else []
  for host in hosts:
    k = host.member.index
    if k < len(saved):
      host.stopping.restore(saved[k])
      host.window = run_progress.train_window(saved[k])
      host.diverged = saved[k].get('diverged')
      host.best, host.last = saved[k].get('best'), saved[k].get('last')
    if chief:
      os.makedirs(host.directory, exist_ok=True)
      fileio.write_text(
        os.path.join(host.directory, 'config.json'), host.config.to_json_best_effort(indent=2)
      )
      member_source = dataclasses.replace(run.source, config=host.config)
      inference.save_spec(host.directory, inference.build_spec(member_source))
      _drop_replayed_steps(host.directory, latest)
    host.manager = checkpoints.create_manager(
      host.directory, config.keep_checkpoints, run.best_metric
    )
    host.writer = reporting.MetricWriter(host.directory, active=chief, resume_step=latest)
    host.writer.write_hparams(
      reporting.flat_hparams(host.config.to_dict()),
      [f'eval/{name}' for name in run.eval_metric_names],
    )
  manager = checkpoints.create_manager(workdir, config.keep_checkpoints, run.best_metric)
  try:
    stacks = _loop(run, hosts, stacks, iterators, manager)
    _write_members(hosts, stacks)
    return _results(run, hosts, int(parallel.to_host(stacks['current'].step).max()))
  finally:
    for host in hosts:
      if host.manager is not None:
        checkpoints.finish(host.manager)
        host.manager.close()
      if host.writer is not None:
        host.writer.close()
    checkpoints.finish(manager)
    manager.close()


def _with_seed(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
  config = copy.deepcopy(config)
  config.seed = seed
  return config


def _check_member_dir(host: _Member) -> None:
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


def _drop_replayed_steps(directory: str, latest: int) -> None:
  """Removes member checkpoints after the population's step `latest`: written before a kill, they
  are replayed by the resumed population, identically."""
  root = checkpoints.checkpoint_dir(directory)
  if not os.path.isdir(root):
    return
  for name in os.listdir(root):
    if name.isdigit() and int(name) > latest:
      shutil.rmtree(os.path.join(root, name))


def _loop(run, hosts, stacks, iterators, manager) -> dict[str, steps.TrainState]:
  """Trains until the last step or until every member has stopped; returns the final stacks."""
  config, chief = run.config, run.is_chief
  total = config.num_train_steps
  members = [h.member for h in hosts]
  fingerprint = config_validation.fingerprint(config)
  p_train, p_eval = population.make_steps(
    run.devices, run.head.name, run.top_k, float(config.model.aux_loss_weight)
  )
  _, dropout_keys = population.keys(members)
  index = population.seed_index(members)
  states, best = stacks['current'], stacks['best']
  step = int(parallel.to_host(states.step).max())
  progress = reporting.Progress(total, config.batch_size, step, active=chief)
  num_local = len(run.local_devices)
  pending = None  # The last step's (step, device metrics, active), fetched one step later.
  while step < total and any(h.active for h in hosts):
    active = np.array([h.active for h in hosts])
    batches = population.shard_batches(next(iterators), num_local)
    states, device_metrics = p_train(states, batches, dropout_keys, index, active)
    step += 1
    if pending is not None:  # The step before (already done), without stalling dispatch.
      _take_metrics(hosts, *pending, chief)
    pending = (step, device_metrics, active)
    at_end = step == total
    do_eval = at_end or step % config.eval_every_steps == 0
    do_save = do_eval or step % config.checkpoint_every_steps == 0
    if not (do_save or step % config.log_every_steps == 0):
      continue
    _take_metrics(hosts, *pending, chief)
    pending = None
    if step % config.log_every_steps == 0 or at_end:
      for host in hosts:
        if host.window and host.diverged is None:
          _log_train(host, step, config)
      progress.update(step, {'members_training': float(sum(h.active for h in hosts))})
    if do_save:  # A member whose update made its state non-finite diverged there.
      finite = parallel.to_host(population.all_finite(states))
      for host in hosts:
        if host.active and not finite[host.member.index]:
          _diverge(host, step, chief)
    evaluated = [h for h in hosts if h.active] if do_eval else []
    if evaluated:
      _evaluate(run, p_eval, states, evaluated, step, num_local)
      reporting.say(_table(f'[eval] step {step}', hosts, run.best_metric), chief)
      improved = [h for h in evaluated if h.stopping.evals_since_best == 0]
      best = population.keep_best(
        best, states, np.isin(np.arange(len(hosts)), [h.member.index for h in improved])
      )
      for host in improved:
        host.best = _record(host, iterators, index, step)
      for host in evaluated:
        if host.stopping.stopped or at_end:
          host.last = _record(host, iterators, index, step)
    if do_save:
      checkpoints.save(
        manager,
        step,
        parallel.to_global(states, run.devices),
        iterators,
        None,
        fingerprint,
        {
          'members': [
            {
              **run_progress.to_save(h.stopping, h.window),
              'diverged': h.diverged,
              'best': h.best,
              'last': h.last,
            }
            for h in hosts
          ]
        },
        {'best': parallel.to_global(best, run.devices)},
      )
    progress.reset_clock(step)
  return {'current': states, 'best': best}


def _take_metrics(hosts, step: int, device_metrics, active: np.ndarray, chief: bool) -> None:
  """Appends each active member's train metrics of `step` to its window; a non-finite loss or
  gradient norm makes the member diverge there."""
  values = parallel.to_host(device_metrics)
  for host in hosts:
    k = host.member.index
    if active[k] and host.diverged is None:
      host.window.append({name: float(v[k]) for name, v in values.items()})
      if not all(np.isfinite(host.window[-1][n]) for n in ('loss', 'grad_norm')):
        _diverge(host, step, chief)


def _record(host: _Member, iterators: _SeedIterators, index: np.ndarray, step: int) -> dict:
  """What member `host`'s checkpoint of `step` holds besides its state: its seed's data position,
  its eval metrics and its progress (JSON-able: it is saved with the population's checkpoints)."""
  return {
    'step': step,
    'data': iterators.iterators[index[host.member.index]].get_state().decode(),
    'metrics': metrics_lib.scalars(host.last_eval),
    'progress': run_progress.to_save(host.stopping, host.window),
  }


class _DataPosition:
  """A saved data position, checkpointed like the iterator it was read from."""

  def __init__(self, state: str):
    self.state = state

  def get_state(self) -> bytes:
    return self.state.encode()


def _write_members(hosts: Sequence[_Member], stacks: dict[str, steps.TrainState]) -> None:
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


def _results(run, hosts: Sequence[_Member], step: int) -> list[dict[str, object]]:
  """Each member's final eval metrics, with its index, seed, rate and how it ended."""
  for host in hosts:
    if host.last_eval is None and host.diverged is None:  # A finished population, re-run.
      host.last_eval = train.evaluate(host.config, host.directory, 'latest', run.devices)
  reporting.say(_table(f'[final eval] step {step}', hosts, run.best_metric), run.is_chief)
  return [
    {
      'member': h.member.index,
      'seed': h.member.seed,
      'learning_rate': h.member.learning_rate,
      'stopped': h.stopping.stopped,
      'diverged': h.diverged,
      **(h.last_eval or {}),
    }
    for h in hosts
  ]


def _diverge(host: _Member, step: int, chief: bool) -> None:
  host.diverged = step
  reporting.say(
    f'Member {host.member.index} (seed {host.member.seed}, learning rate '
    f'{host.member.learning_rate:g}) diverged at step {step} (non-finite loss or state): it stops '
    'here; its checkpoints are its last finite states. The other members go on.',
    chief,
  )


def _log_train(host: _Member, step: int, config: ml_collections.ConfigDict) -> None:
  values = {k: float(np.mean([w[k] for w in host.window])) for k in host.window[0]}
  schedule = steps.SCHEDULES[config.lr_schedule](
    host.member.learning_rate, int(config.warmup_steps), int(config.num_train_steps)
  )
  values['learning_rate'] = float(schedule(step - 1))
  host.writer.write(step, 'train', values)
  host.window = []


def _evaluate(run, p_eval, states, hosts, step, num_local) -> None:
  """Every member on the eval split in one pass (one vmapped step per batch); each evaluated
  host's metrics are written and its early stopping updated."""
  totals = None
  for batch in run.eval_batches():
    sums = parallel.to_host(p_eval(states, parallel.shard_batch(batch, num_local)))
    totals = metrics_lib.add_sums(totals, sums)
  for host in hosts:
    k = host.member.index
    host.last_eval = metrics_lib.finalize(
      {name: v[k] for name, v in totals.items()}, run.top_k, run.target_std
    )
    host.writer.write(step, 'eval', host.last_eval)
    host.stopping.update(host.last_eval)


def _table(title: str, hosts: Sequence[_Member], best_metric: str) -> str:
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


def evaluate_population(
  config: ml_collections.ConfigDict,
  workdir: str,
  checkpoint: str = 'latest',
  devices: Optional[Sequence[Any]] = None,
) -> list[dict[str, object]]:
  """`train.evaluate` of every member's run dir (--mode=eval without --member)."""
  out = []
  for m in population.members(config):
    directory = population.member_dir(workdir, m.index)
    metrics = train.evaluate(population.member_config(config, m), directory, checkpoint, devices)
    out.append({'member': m.index, 'seed': m.seed, 'learning_rate': m.learning_rate, **metrics})
  return out
