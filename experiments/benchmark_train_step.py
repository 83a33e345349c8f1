"""Train-step throughput per default config: the pace the input pipeline has to beat.

Times the real pmapped `train.train_step` (the same compiled function the train loop uses) on a
fixed in-memory batch, so the number is model + optimizer only, no data loading. The data stream's
experiments/benchmark_input_pipeline.py compares its pipeline against this table (>= 3x needed).

  JAX_PLATFORMS=cpu python experiments/benchmark_train_step.py [--steps 20] [--out FILE.md]
"""

import argparse
import os
import platform
import time

from hybrid_jax import platforms

platforms.choose_platform()  # Before JAX starts: the CPU, quietly, where CUDA has no driver.

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from configs import sensor, text, video  # pylint: disable=g-import-not-at-top,wrong-import-position
from hybrid_jax import models, parallel, tasks, train  # pylint: disable=g-import-not-at-top,wrong-import-position


def synthetic_batch(config, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """A batch with the model's input shapes and valid labels/targets (random content)."""
  batch = models.dummy_batch(config, batch_size)
  for key, value in batch.items():
    if key == 'tokens':
      batch[key] = rng.integers(2, config.model.vocab_size, value.shape).astype(np.int32)
    elif value.dtype == np.uint8:
      batch[key] = rng.integers(0, 256, value.shape).astype(np.uint8)
    elif key != 'length':
      batch[key] = rng.normal(size=value.shape).astype(value.dtype)
  head = tasks.head(config)
  if head.regression:
    batch[head.label_key] = rng.normal(size=(batch_size,)).astype(np.float32)
  else:
    batch[head.label_key] = rng.integers(0, config.model.num_classes, (batch_size,)).astype(np.int32)
  return batch


def benchmark(config, steps: int) -> dict[str, float]:
  """Compiles once, warms up, then times `steps` steps; returns steps/s and examples/s."""
  devices = tuple(jax.devices())
  p_train, _ = train.make_steps(devices, tasks.head(config).name, 0)
  model = models.create_model(config)
  state = parallel.replicate(train.create_train_state(config, model, jax.random.key(0)), devices)
  batch = parallel.shard_batch(synthetic_batch(config, config.batch_size,
                                               np.random.default_rng(0)), len(devices))
  key = jax.random.key(1)
  start = time.perf_counter()
  state, metrics = p_train(state, batch, key)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  for _ in range(2):  # Warm-up.
    state, metrics = p_train(state, batch, key)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = p_train(state, batch, key)
  jax.block_until_ready((state, metrics))
  elapsed = time.perf_counter() - start
  return {'batch_size': config.batch_size, 'steps_per_sec': steps / elapsed,
          'examples_per_sec': steps * config.batch_size / elapsed, 'compile_s': compile_s}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=20, help='Timed steps per config.')
  parser.add_argument('--out', default=None, help='Also write the table to this markdown file.')
  args = parser.parse_args()
  rows = []
  for name, module in (('video', video), ('text', text), ('sensor', sensor)):
    result = benchmark(module.get_config(), args.steps)
    rows.append((name, result))
    print(f'{name}: {result["examples_per_sec"]:.0f} examples/s', flush=True)
  header = (f'Train-step throughput (default configs, {jax.device_count()} '
            f'{jax.devices()[0].platform} device(s), {os.cpu_count()} cores, '
            f'{platform.processor() or platform.machine()}, jax {jax.__version__}, '
            f'load average {os.getloadavg()[0]:.1f} at the end)')
  lines = [header, '', '| config | global batch | steps/s | examples/s | compile s |',
           '|---|---:|---:|---:|---:|']
  for name, r in rows:
    lines.append(f'| {name} | {r["batch_size"]} | {r["steps_per_sec"]:.2f} | '
                 f'{r["examples_per_sec"]:.0f} | {r["compile_s"]:.1f} |')
  table = '\n'.join(lines)
  print(table)
  if args.out:
    with open(args.out, 'w', encoding='utf-8') as f:
      f.write(table + '\n\nCommand: `JAX_PLATFORMS=cpu python experiments/benchmark_train_step.py '
              f'--steps {args.steps} --out {args.out}`\n')


if __name__ == '__main__':
  main()
