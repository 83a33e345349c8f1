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
from hybrid_jax import population_members as members_lib
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
    members_lib.MemberRun(
      m,
      population.member_config(config, m),
      population.member_dir(workdir, m.index),
      run_progress.EarlyStopping(run.best_metric, config.early_stopping_patience),
      [],
    )
    for m in members
  ]
  for host in hosts:  # Before anything is written: a member dir of another run is refused.
    members_lib.check_dir(host)
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
      members_lib.drop_replayed_steps(host.directory, latest)
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
    members_lib.write_checkpoints(hosts, stacks)
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
      members_lib.take_metrics(hosts, *pending, chief)
    pending = (step, device_metrics, active)
    at_end = step == total
    do_eval = at_end or step % config.eval_every_steps == 0
    do_save = do_eval or step % config.checkpoint_every_steps == 0
    if not (do_save or step % config.log_every_steps == 0):
      continue
    members_lib.take_metrics(hosts, *pending, chief)
    pending = None
    if step % config.log_every_steps == 0 or at_end:
      for host in hosts:
        if host.window and host.diverged is None:
          members_lib.log_train(host, step, config)
      progress.update(step, {'members_training': float(sum(h.active for h in hosts))})
    if do_save:  # A member whose update made its state non-finite diverged there.
      finite = parallel.to_host(population.all_finite(states))
      for host in hosts:
        if host.active and not finite[host.member.index]:
          members_lib.diverge(host, step, chief)
    evaluated = [h for h in hosts if h.active] if do_eval else []
    if evaluated:
      _evaluate(run, p_eval, states, evaluated, step, num_local)
      reporting.say(members_lib.table(f'[eval] step {step}', hosts, run.best_metric), chief)
      improved = np.zeros(len(hosts), bool)
      improved[[h.member.index for h in evaluated if h.stopping.evals_since_best == 0]] = True
      best = population.keep_best(best, states, improved)
      for host in evaluated:
        position = iterators.iterators[index[host.member.index]].get_state()
        if improved[host.member.index]:
          host.best = members_lib.record(host, position, step)
        if host.stopping.stopped or at_end:
          host.last = members_lib.record(host, position, step)
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


def _results(run, hosts: Sequence[members_lib.MemberRun], step: int) -> list[dict[str, object]]:
  """Each member's final eval metrics, with its index, seed, rate and how it ended."""
  for host in hosts:
    if host.last_eval is None and host.diverged is None:  # A finished population, re-run.
      host.last_eval = train.evaluate(host.config, host.directory, 'latest', run.devices)
  reporting.say(
    members_lib.table(f'[final eval] step {step}', hosts, run.best_metric), run.is_chief
  )
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
