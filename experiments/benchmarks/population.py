"""Study runs per hour: a population of K members in one vmapped step vs K runs one after another.

For each shipped dataset's reference model at the study's settings (its config, batch size and run
length: experiments/study/protocol.py), times the real pmapped train steps on fixed in-memory
batches (model + optimizer only, no data loading, no evaluation): the single run's
`steps.make_steps` and the population's `population.make_steps` with K members (K distinct seeds,
so K batches per step, as the study's paired seeds are). Runs per hour = 3600 / (seconds per step x
steps per run), for the population counting its K runs. Each (dataset, K) is measured in the same
process right after its single-run baseline, and the table reports the ratio, which survives a
noisy machine better than either rate.

  JAX_PLATFORMS=cpu python -m experiments.benchmarks.population [--members 1,4,16] \\
      [--datasets weather_stations,...] [--seconds 3] [--out FILE.md]
"""

import argparse
import copy
import importlib
import platform
import time

from hybrid_jax import platforms

platforms.choose_platform()  # Before JAX starts: the CPU, quietly, where CUDA has no driver.

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np

from experiments.benchmarks import tables
from experiments.benchmarks.train_step import synthetic_batch
from experiments.study import protocol
from hybrid_jax import input_kinds
from hybrid_jax import parallel
from hybrid_jax import population
from hybrid_jax import steps as steps_lib
from hybrid_jax.data import datasets
from hybrid_jax.data import shipped
# pylint: enable=g-import-not-at-top,wrong-import-position

COMMAND = 'JAX_PLATFORMS=cpu python -m experiments.benchmarks.population'
DATASETS = ('japanese_vowels', 'weather_stations', 'controls/both', 'bbc_news', 'moving_digits')


def study_config(dataset: str):
  """The dataset's config as the study trains it (resolved: data-determined sizes filled)."""
  config = importlib.import_module(f'configs.{shipped.of(dataset).config}').get_config()
  config.dataset.name = dataset
  config = datasets.resolve(config).config
  spec = protocol.DATASETS[dataset]
  config.num_train_steps = int(spec.steps or config.num_train_steps)
  return config


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


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--datasets', default=','.join(DATASETS))
  parser.add_argument('--members', default='1,4,16')
  parser.add_argument('--seconds', type=float, default=3.0, help='Timed seconds per measurement.')
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  lines = [
    '# Population vs one run after another: study runs per hour',
    '',
    f'{platform.processor() or platform.machine()}, {jax.device_count()} x '
    f'{jax.devices()[0].platform} device(s), jax {jax.__version__}; train steps only (fixed '
    'in-memory batches, no evaluation); one device. K members = K seeds (K batches per step).',
    '',
    '| dataset | params | batch | steps/run | K | single: s/step | population: s/step | '
    'runs/h single | runs/h population | speed-up | first step (compile) s |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for dataset in args.datasets.split(','):
    config = study_config(dataset)
    model = input_kinds.create_model(config)
    shapes = jax.eval_shape(model.init, jax.random.key(0), input_kinds.dummy_batch(config))
    params = sum(x.size for x in jax.tree.leaves(shapes['params']))
    steps = int(config.num_train_steps)
    for k in (int(x) for x in args.members.split(',')):
      _, single = single_step_seconds(config, args.seconds)
      first, pop = population_step_seconds(config, k, args.seconds)
      single_rate, pop_rate = 3600 / (single * steps), 3600 * k / (pop * steps)
      lines.append(
        f'| {dataset} | {params:,} | {config.batch_size} | {steps} | {k} | {single:.5f} | '
        f'{pop:.5f} | {single_rate:,.0f} | {pop_rate:,.0f} | {pop_rate / single_rate:.2f}x | '
        f'{first:.1f} |'
      )
      print(lines[-1], flush=True)
  tables.write_table(lines, args.out, COMMAND)


if __name__ == '__main__':
  main()
