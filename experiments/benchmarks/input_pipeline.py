"""Input-pipeline throughput per shipped dataset, beside the train step it feeds.

  python -m experiments.benchmarks.input_pipeline [--data_dir=DIR] [--workers=0,2] [--out=FILE]

For each dataset (full build, prepared on first use): examples/s of the train iterator alone
(config batch size, after a warm-up), and examples/s of one jitted train step of the task's default
model (Adam, forward + backward, same batch) on this machine. The pipeline must be >= 3x faster.
Writes a markdown table to --out (default experiments/results/benchmark_input_pipeline.md).
"""

import argparse
import importlib
import os
import platform
import time

from hybrid_jax import platforms

platforms.choose_platform()  # Before JAX starts: the CPU, quietly, where CUDA has no driver.

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import optax

from hybrid_jax import input_kinds
from hybrid_jax.data import datasets
from hybrid_jax.data import pipeline
from hybrid_jax.data import shipped
# pylint: enable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The shipped datasets measured (each with its config, shipped.SHIPPED[name].config).
DATASETS = ('moving_digits', 'bbc_news', 'tweet_sentiment', 'weather_stations')


def pipeline_rate(source: datasets.Source, seconds: float) -> float:
  iterator = pipeline.create_train_iterator(source, process_index=0, process_count=1)
  for _ in range(3):  # Warm-up: opens files, starts workers.
    next(iterator)
  key = input_kinds.input_kind(source.config).input_keys[0]
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    count += next(iterator)[key].shape[0]
  return count / (time.perf_counter() - start)


def train_step_rate(source: datasets.Source, seconds: float) -> float:
  """examples/s of a jitted Adam step of the default model on one fixed batch (single device)."""
  config = source.config
  batch = next(pipeline.create_train_iterator(source, process_index=0, process_count=1))
  model = input_kinds.create_model(config)
  key = jax.random.key(0)
  params = model.init({'params': key, 'dropout': key}, batch, train=False)['params']
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)
  head = input_kinds.head(config)

  def loss_fn(p, b):
    out = model.apply({'params': p}, b, train=True, rngs={'dropout': key})
    return head.loss(out, b[head.label_key])

  @jax.jit
  def step(p, o, b):
    loss, grads = jax.value_and_grad(loss_fn)(p, b)
    updates, o = tx.update(grads, o, p)
    return optax.apply_updates(p, updates), o, loss

  params, opt_state, loss = step(params, opt_state, batch)
  loss.block_until_ready()
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    params, opt_state, loss = step(params, opt_state, batch)
    loss.block_until_ready()
    count += len(next(iter(batch.values())))
  return count / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data_dir', default=None, help='TFDS data_dir (default: TFDS default).')
  parser.add_argument('--workers', default='0,2', help='Comma-separated grain worker counts.')
  parser.add_argument('--seconds', type=float, default=5.0, help='Timing window per measurement.')
  parser.add_argument(
    '--out', default=os.path.join(ROOT, 'experiments', 'results', 'benchmark_input_pipeline.md')
  )
  args = parser.parse_args()
  workers = [int(w) for w in args.workers.split(',')]
  rows = []
  for name in DATASETS:
    config = importlib.import_module(f'configs.{shipped.SHIPPED[name].config}').get_config()
    config.dataset.name, config.dataset.data_dir = name, args.data_dir
    config.model.num_classes = None  # Taken from the data.
    rates = {}
    for w in workers:  # Each worker count is its own config: resolved (checked) like a run's.
      config.dataset.num_workers = w
      rates[w] = pipeline_rate(datasets.resolve(config), args.seconds)
    config.dataset.num_workers = 0
    source = datasets.resolve(config)
    step = train_step_rate(source, args.seconds)
    best = max(rates.values())
    rows.append((name, source.info.num_train_examples, config.batch_size, rates, step, best / step))
    print(
      f'{name}: pipeline {rates} ex/s, train step {step:.0f} ex/s, ratio {best / step:.1f}x',
      flush=True,
    )
  header = (
    '| dataset | train examples | batch | '
    + ' | '.join(f'pipeline ex/s ({w} workers)' for w in workers)
    + ' | train step ex/s | pipeline / step |'
  )
  lines = [
    '# Input pipeline benchmark',
    '',
    f'`python -m experiments.benchmarks.input_pipeline --workers={args.workers} '
    f'--seconds={args.seconds:g}` on {platform.machine()}, {os.cpu_count()} CPU cores, '
    f'jax {jax.__version__} backend {jax.default_backend()}; '
    'default configs (train step: jitted Adam step of the default model, one device).',
    '',
    header,
    '|' + '---|' * (5 + len(workers)),
  ]
  for name, n, batch, rates, step, ratio in rows:
    lines.append(
      f'| {name} | {n:,} | {batch} | '
      + ' | '.join(f'{rates[w]:,.0f}' for w in workers)
      + f' | {step:,.0f} | {ratio:.1f}x |'
    )
  with open(args.out, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
