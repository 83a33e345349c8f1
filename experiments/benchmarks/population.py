"""Study runs per hour: K runs of one arm as a population (one vmapped step) vs one after another.

For each shipped dataset's reference model (concat) at the study's settings (its config, batch
size, run length and evaluations: experiments/study/protocol.py), trains K runs (seeds 0..K-1, one
learning rate) both ways, end to end, as the study does: one after another
(`study.runs.train_run`: train, evaluate on validation, checkpoint, result.json; the first run
compiles, the others reuse it) and as one population (`study.populations.train_runs`: one compile,
one vmapped step per batch, one evaluation pass for all members, the members' checkpoints and
result.json). Runs per hour = 3600 x K / seconds. Each (dataset, K) runs the two ways in the same
process, one right after the other, and the table reports their ratio, which survives a noisy
machine better than either rate.

It also times the train step alone (fixed in-memory batches, no data, no evaluation): the vmapped
step of K members against K single steps. That ratio is the population's arithmetic: where it is
near 1, the step already keeps the device busy and the population can only save what a run spends
outside its steps (compiling, evaluating, checkpointing, reading data).

  JAX_PLATFORMS=cpu python -m experiments.benchmarks.population [--members 4,16] \\
      [--datasets weather_stations,...] [--steps moving_digits=100] \\
      [--members_for moving_digits=4] [--out FILE.md]
"""

import argparse
import copy
import os
import platform
import tempfile
import time

from hybrid_jax import platforms

platforms.choose_platform()  # Before JAX starts: the CPU, quietly, where CUDA has no driver.

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np

from experiments.benchmarks import tables
from experiments.benchmarks.train_step import synthetic_batch
from experiments.study import populations as study_populations
from experiments.study import protocol
from experiments.study import runs as study_runs
from hybrid_jax import input_kinds
from hybrid_jax import parallel
from hybrid_jax import population
from hybrid_jax import steps as steps_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

COMMAND = 'python -m experiments.benchmarks.population'  # JAX_PLATFORMS=cpu prefixed on a CPU.
DATASETS = ('japanese_vowels', 'weather_stations', 'controls/both', 'bbc_news', 'moving_digits')


def study_config(dataset: str, steps: int | None = None, root: str = '/tmp/unused'):
  """The dataset's config as the study trains it (`protocol.base_config`: resolved, its run length
  and evaluation cadence), or with `steps` a shorter run with the same number of evaluations."""
  study = protocol.Protocol(
    study_dir=root,
    results_dir=root,
    datasets=[dataset],
    steps={dataset: steps} if steps else {},
    train_split='train',  # The command's default: each dataset's own splits.
    validation_split='validation',
  )
  return protocol.base_config(dataset, study)


def _time(step, state, args, seconds: float) -> tuple[float, float]:
  """(compile + first step seconds, median seconds per step over windows filling `seconds`)."""
  start = time.perf_counter()
  state, metrics = step(state, *args)
  jax.block_until_ready(metrics)
  first = time.perf_counter() - start
  state, metrics = step(state, *args)  # Warm-up.
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  state, metrics = step(state, *args)
  jax.block_until_ready(metrics)
  per_window = max(1, int(seconds / 3 / max(time.perf_counter() - start, 1e-4)))
  windows = []
  for _ in range(3):
    start = time.perf_counter()
    for _ in range(per_window):
      state, metrics = step(state, *args)
    jax.block_until_ready((state, metrics))
    windows.append((time.perf_counter() - start) / per_window)
  return first, float(np.median(windows))


def single_step_seconds(config, seconds: float) -> tuple[float, float]:
  devices = tuple(jax.devices()[:1])
  p_train, _ = steps_lib.make_steps(devices, input_kinds.head(config).name, 0)
  model = input_kinds.create_model(config)
  state = steps_lib.create_train_state(config, model, jax.random.key(0))
  batch = parallel.shard_batch(
    synthetic_batch(config, config.batch_size, np.random.default_rng(0)), 1
  )
  return _time(p_train, state, (batch, jax.random.key(1)), seconds)


def population_step_seconds(config, k: int, seconds: float) -> tuple[float, float]:
  config = copy.deepcopy(config)
  config.population.seeds = ','.join(str(s) for s in range(k))
  members = population.members(config)
  devices = tuple(jax.devices()[:1])
  p_train, _ = population.make_steps(devices, input_kinds.head(config).name, 0)
  model = input_kinds.create_model(config)
  states = population.init_states(config, model, members)
  rng = np.random.default_rng(0)
  batches = population.shard_batches(
    [synthetic_batch(config, config.batch_size, rng) for _ in range(k)], 1
  )
  _, keys = population.keys(members)
  args = (batches, keys, population.seed_index(members), np.ones(k, bool))
  return _time(p_train, states, args, seconds)


def end_to_end_seconds(config, k: int, root: str) -> tuple[float, float]:
  """(seconds for K runs one after another, seconds for them as one population), study code."""
  dirs = {(float(config.learning_rate), s): os.path.join(root, 'single', str(s)) for s in range(k)}
  start = time.perf_counter()
  for (lr, seed), workdir in dirs.items():
    config_s = copy.deepcopy(config)
    config_s.update(learning_rate=lr, seed=seed)
    study_runs.train_run(config_s, workdir)
  single = time.perf_counter() - start
  dirs = {key: os.path.join(root, 'population', str(key[1])) for key in dirs}
  start = time.perf_counter()
  study_populations.train_runs(config, dirs, 'best', 2**40)
  return single, time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--datasets', default=','.join(DATASETS))
  parser.add_argument('--members', default='4,16')
  parser.add_argument('--steps', default='', help='dataset=N,...: shorter runs for slow datasets.')
  parser.add_argument(
    '--members_for', default='', help='dataset=K1:K2,...: other population sizes for a dataset.'
  )
  parser.add_argument('--seconds', type=float, default=3.0, help='Timed seconds per step timing.')
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  short = {k: int(v) for k, _, v in (x.partition('=') for x in args.steps.split(',') if x)}
  sizes = {
    k: v.split(':') for k, _, v in (x.partition('=') for x in args.members_for.split(',') if x)
  }
  lines = [
    '# Population vs one run after another: study runs per hour',
    '',
    f'{platform.processor() or platform.machine()}, {jax.device_count()} x '
    f'{jax.devices()[0].platform} device(s), jax {jax.__version__}; one device. The concat model '
    'of each dataset at the study\'s settings; K runs = K seeds at one learning rate. "End to end": '
    'the study\'s code, training, validation, checkpoints, result.json (the first sequential run '
    'compiles, as an arm\'s first run does). "Step only": the vmapped step of K members vs K '
    'single steps, fixed batches.',
    '',
    '| dataset | params | steps/run | evals/run | K | one after another: s | population: s | '
    'runs/h one after another | runs/h population | speed-up end to end | speed-up step only |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  command = ('JAX_PLATFORMS=cpu ' if jax.default_backend() == 'cpu' else '') + COMMAND
  for dataset in args.datasets.split(','):
    with tempfile.TemporaryDirectory() as root:
      config = study_config(dataset, short.get(dataset), root)
      model = input_kinds.create_model(config)
      shapes = jax.eval_shape(model.init, jax.random.key(0), input_kinds.dummy_batch(config))
      params = sum(x.size for x in jax.tree.leaves(shapes['params']))
      steps = int(config.num_train_steps)
      evals = steps // int(config.eval_every_steps)
      for k in (int(x) for x in sizes.get(dataset, args.members.split(','))):
        single, pop = end_to_end_seconds(config, k, os.path.join(root, str(k)))
        _, one_step = single_step_seconds(config, args.seconds)
        _, pop_step = population_step_seconds(config, k, args.seconds)
        lines.append(
          f'| {dataset} | {params:,} | {steps} | {evals} | {k} | {single:.1f} | {pop:.1f} | '
          f'{3600 * k / single:,.0f} | {3600 * k / pop:,.0f} | {single / pop:.2f}x | '
          f'{k * one_step / pop_step:.2f}x |'
        )
        print(lines[-1], flush=True)
        tables.save_table(lines, args.out, command)  # A benchmark stopped early keeps its rows.
  tables.write_table(lines, args.out, command)


if __name__ == '__main__':
  main()
