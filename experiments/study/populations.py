"""The study's runs of one arm trained as populations (hybrid_jax/population_train.py).

  results = train_runs(config, {(lr, seed): run_dir}, keep, budget_bytes)

Runs of one arm differ only in learning rate and seed, so the pending ones (no result.json yet)
are trained as populations of seeds x rates in one vmapped step. A member equals the single run
with its seed and rate (tests/test_population_train.py, on a CPU: to float32 rounding, not bit for
bit; on a GPU its LSTM is the scan where the single run's is cuDNN's), has the same config and
fingerprint, and its dir is a single run's: once the population has finished,
each member's dir gets its result.json and is moved to the run's own dir, where the study reads
it exactly as a single run's (a finished run is reused whichever way it was trained). Populations
are bounded by a memory budget (`population.member_bytes`); a population interrupted by a kill
resumes from its own checkpoint when the same runs are pending again.

When it pays (`use_populations`, --population=auto): on a GPU or TPU, where one small run leaves
most of the device idle. Not on a CPU: there a member's step costs what its single run's step costs
(the vmapped step of K members takes about K single steps' time), so a population saves only what a
run spends outside its steps, and the study's populations (6 to 8 members) train no more runs per
hour than one run after another (experiments/results/benchmark_population.md); --population=on
groups on a CPU too.
"""

import copy
import hashlib
import json
import os
import shutil

import jax

from experiments.study import runs as study_runs
from hybrid_jax import input_kinds
from hybrid_jax import population
from hybrid_jax import population_train


def use_populations(mode: str) -> bool:
  """Whether the study trains its runs as populations under --population=`mode`."""
  return jax.default_backend() != 'cpu' if mode == 'auto' else mode == 'on'


def plan(pending: list[tuple[float, int]], max_members: int) -> list[tuple[list[int], list[float]]]:
  """Populations (seeds, rates) whose products cover exactly the `pending` (rate, seed) runs, each
  of at most `max_members` members: runs grouped by rate, rates with the same seeds merged."""
  seeds_of: dict[float, list[int]] = {}
  for lr, seed in pending:
    seeds_of.setdefault(lr, []).append(seed)
  rates_of: dict[tuple[int, ...], list[float]] = {}
  for lr, seeds in seeds_of.items():
    rates_of.setdefault(tuple(seeds), []).append(lr)
  out = []
  for seeds, rates in rates_of.items():
    rates_per = max(1, min(len(rates), max_members))
    for r in range(0, len(rates), rates_per):
      chunk = rates[r : r + rates_per]
      seeds_per = max(1, max_members // len(chunk))
      for s in range(0, len(seeds), seeds_per):
        out.append((list(seeds[s : s + seeds_per]), chunk))
  return out


def _member_config(config, lr: float, seed: int):
  config = copy.deepcopy(config)
  config.update(learning_rate=lr, seed=seed)
  return config


_MEMBER_BYTES: dict[str, int] = {}  # fingerprint of an arm's config -> population.member_bytes.


def _member_bytes(config) -> int:
  """population.member_bytes of an arm's config, compiled once per config and process."""
  key = study_runs.fingerprint(config)
  if key not in _MEMBER_BYTES:
    _MEMBER_BYTES[key] = population.member_bytes(config, input_kinds.create_model(config))
  return _MEMBER_BYTES[key]


def train_runs(
  config, run_dirs: dict[tuple[float, int], str], keep: str, budget_bytes: int
) -> dict[tuple[float, int], dict]:
  """Trains (or reuses) the runs {(lr, seed): run dir} of one arm's `config`; returns their
  result.json records. Finished runs are reused; the others are trained as populations."""
  results, pending = {}, {}
  for (lr, seed), workdir in run_dirs.items():
    if os.path.exists(os.path.join(workdir, 'result.json')):
      results[lr, seed] = study_runs.train_run(_member_config(config, lr, seed), workdir, keep)
    else:
      pending[lr, seed] = workdir
  if not pending:
    return results
  # A pending dir may hold an interrupted single run: a population replaces it, if of its config.
  for (lr, seed), workdir in pending.items():
    study_runs.check_interrupted_run(_member_config(config, lr, seed), workdir)
  max_members = max(1, budget_bytes // _member_bytes(config))
  for seeds, rates in plan(list(pending), max_members):
    grouped = copy.deepcopy(config)
    grouped.population.seeds = ','.join(str(s) for s in seeds)
    grouped.population.learning_rates = ','.join(repr(float(lr)) for lr in rates)
    members = population.members(grouped)
    arm_dir = os.path.dirname(pending[members[0].learning_rate, members[0].seed])
    key = json.dumps([study_runs.fingerprint(config), seeds, rates])
    workdir = os.path.join(arm_dir, 'population_' + hashlib.sha256(key.encode()).hexdigest()[:12])
    print(f'[study] population of {len(members)}: seeds {seeds} x rates {rates}', flush=True)
    with study_runs.clock(workdir) as elapsed:
      outcome = population_train.train_population(grouped, workdir)
    seconds = elapsed() / len(members)  # Each member's share of the time.
    for member, out in zip(members, outcome, strict=True):
      lr, seed = member.learning_rate, member.seed
      single = _member_config(config, lr, seed)
      source = population.member_dir(workdir, member.index)
      diverged = out['diverged'] and (
        f'Diverged at step {out["diverged"]} (non-finite loss or state; trained in a population).'
      )
      study_runs.write_result(single, source, seconds, diverged)
      if os.path.exists(pending[lr, seed]):  # What an interrupted single run left.
        shutil.rmtree(pending[lr, seed])
      os.rename(source, pending[lr, seed])
      results[lr, seed] = study_runs.train_run(single, pending[lr, seed], keep)
    shutil.rmtree(workdir)
  return results
