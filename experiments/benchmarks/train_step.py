"""Train-step throughput: the default configs, or the reference shapes with before/after variants.

Times the real pmapped `steps.train_step` (the same compiled function the train loop uses) on a
fixed in-memory batch, so the number is model + optimizer only, no data loading. The data stream's
benchmark (input_pipeline.py) compares its pipeline against the default table (>= 3x).

  JAX_PLATFORMS=cpu python -m experiments.benchmarks.train_step [--steps 20] [--out FILE.md]
  JAX_PLATFORMS=cpu python -m experiments.benchmarks.train_step --reference \\
      [--cases video_b32_t8,...] [--variants after,before] [--windows 5] [--out FILE.md]

`--reference` runs the reference shapes (frames 64x64x3, LSTM(64), 10 classes; text vocab
10,000 x 100, length 50; sensor 20x4) at the batch sizes of the peer comparison, each case and
variant in a fresh subprocess (one at a time), and reports examples/s (median over timed windows),
the process CPU seconds per step (all threads: steadier than wall time on a shared machine), the
first step's time (compile + one step) and the child's peak RSS. Variant 'after' is the code as
it is; 'before' is the previous formulation kept for the equality tests (video: the frame CNN's
literal conv -> ReLU -> pool order on one batch of all frames; sensor: the LSTM's input projection
hoisted out of its scan), measured in the same run so that
ratios survive a noisy machine; 'batched' and 'per_frame' name the video alternatives explicitly.

`--xla ynn_off,xla_default --repeats 3` also varies XLA:CPU's YNNPACK flag (`XLA_SETTINGS`): XLA
reads XLA_FLAGS once, so each setting runs in its own child, interleaved (for each case and variant:
repeat x setting); the table (rewritten after each child) gives each row's median over its runs and
the median of the paired per-repeat ratios to the last setting (the measurements behind
`hybrid_jax.platforms.CPU_XLA_FLAGS_BY_JAXLIB`).
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Optional

from hybrid_jax import platforms

platforms.choose_platform()  # Before JAX starts: the CPU, quietly, where CUDA has no driver.

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np

from configs import sensor
from configs import text
from configs import video
from experiments.benchmarks import tables
from experiments.benchmarks.reference_shapes import REFERENCE_CASES
from experiments.benchmarks.reference_shapes import REFERENCE_MODEL
from experiments.benchmarks.reference_shapes import STEPS_PER_WINDOW
from hybrid_jax import input_kinds
from hybrid_jax import parallel
from hybrid_jax import steps as steps_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMAND = 'JAX_PLATFORMS=cpu python -m experiments.benchmarks.train_step'
CONFIGS = {'video': video, 'text': text, 'sensor': sensor}
YNN = 'xla_cpu_experimental_ynn_fusion_type'
# --xla setting -> the value of the YNNPACK flag in the child's XLA_FLAGS ('+individual_convolution'
# adds to XLA's default list, which already holds it: XLA's own default; '' is no YNNPACK fusions).
XLA_SETTINGS = {'ynn_off': '', 'xla_default': '+individual_convolution'}
# variant -> task -> fields of config.model to override (the previous formulation).
VARIANTS = {
  'after': {},
  'before': {
    'video': dict(frame_cnn_formulation='conv_relu_pool', frame_cnn_batching='batched'),
    'sensor': dict(lstm_projection='hoisted'),
  },
  'batched': {'video': dict(frame_cnn_formulation='pool_first', frame_cnn_batching='batched')},
  'per_frame': {'video': dict(frame_cnn_formulation='pool_first', frame_cnn_batching='per_frame')},
}


def synthetic_batch(config, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """A batch with the model's input shapes and valid labels/targets (random content)."""
  batch = input_kinds.dummy_batch(config, batch_size)
  for key, value in batch.items():
    if key == 'tokens':
      batch[key] = rng.integers(2, config.model.vocab_size, value.shape).astype(np.int32)
    elif value.dtype == np.uint8:
      batch[key] = rng.integers(0, 256, value.shape).astype(np.uint8)
    elif key != 'length':
      batch[key] = rng.normal(size=value.shape).astype(value.dtype)
  head = input_kinds.head(config)
  if head.regression:
    batch[head.label_key] = rng.normal(size=(batch_size,)).astype(np.float32)
  else:
    batch[head.label_key] = rng.integers(0, config.model.num_classes, (batch_size,)).astype(
      np.int32
    )
  return batch


def benchmark(config, steps: int, windows: int = 1) -> dict[str, float]:
  """Compiles once, warms up, then times `windows` windows of `steps` steps each.

  Returns examples/s of the median window (and steps/s), the first step's seconds (compile + run)
  and the batch size.
  """
  devices = tuple(jax.devices())
  p_train, _ = steps_lib.make_steps(devices, input_kinds.head(config).name, 0)
  model = input_kinds.create_model(config)
  state = parallel.replicate(
    steps_lib.create_train_state(config, model, jax.random.key(0)), devices
  )
  batch = parallel.shard_batch(
    synthetic_batch(config, config.batch_size, np.random.default_rng(0)), len(devices)
  )
  key = jax.random.key(1)
  start = time.perf_counter()
  state, metrics = p_train(state, batch, key)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  for _ in range(2):  # Warm-up.
    state, metrics = p_train(state, batch, key)
  jax.block_until_ready(metrics)
  window_s = []
  cpu_start = time.process_time()
  for _ in range(windows):
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = p_train(state, batch, key)
    jax.block_until_ready((state, metrics))
    window_s.append(time.perf_counter() - start)
  cpu_s_per_step = (time.process_time() - cpu_start) / (windows * steps)
  elapsed = float(np.median(window_s))
  return {
    'batch_size': config.batch_size,
    'steps_per_sec': steps / elapsed,
    'examples_per_sec': steps * config.batch_size / elapsed,
    'compile_s': compile_s,
    'cpu_s_per_step': cpu_s_per_step,
  }


def reference_config(case: str):
  task, batch_size, extra = REFERENCE_CASES[case]
  config = CONFIGS[task].get_config()
  config.model.update(**REFERENCE_MODEL[task], **extra)
  config.batch_size = batch_size
  return config


def run_child(case: str, variant: str, steps: int, windows: int) -> dict[str, float]:
  """One case and variant in this process; adds the peak RSS (GB) of the process."""
  config = reference_config(case)
  config.model.update(**VARIANTS[variant].get(REFERENCE_CASES[case][0], {}))
  result = benchmark(config, steps, windows)
  result['peak_rss_gb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
  return result


def steps_for(case: str, seconds: float = 4.0) -> int:
  """Steps per timed window, so that a window lasts a few seconds on a 2-core CPU."""
  return max(1, int(STEPS_PER_WINDOW[case] * seconds / 4.0))


def run_reference_child(
  case: str, variant: str, steps: int, windows: int, xla_setting: Optional[str] = None
) -> dict[str, float]:
  """Runs one case and variant in a fresh child process (with `xla_setting`'s XLA_FLAGS)."""
  command = [
    sys.executable,
    '-m',
    'experiments.benchmarks.train_step',
    '--child',
    case,
    variant,
    str(steps),
    str(windows),
  ]
  env = None
  if xla_setting is not None:
    user = ' '.join(t for t in os.environ.get('XLA_FLAGS', '').split() if YNN not in t)
    env = dict(os.environ, XLA_FLAGS=f'{user} --{YNN}={XLA_SETTINGS[xla_setting]}'.strip())
  child = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT, env=env)
  if child.returncode != 0:
    sys.exit(f'{case} {variant} {xla_setting or ""} failed:\n{child.stderr[-3000:]}')
  result = json.loads(child.stdout.strip().splitlines()[-1])
  print(
    f'{case} {variant} {xla_setting or ""}: {result["examples_per_sec"]:.1f} examples/s, first '
    f'step {result["compile_s"]:.1f} s, peak RSS {result["peak_rss_gb"]:.2f} GB',
    flush=True,
  )
  return result


def main_xla(args, cases: list[str], variants: list[str]) -> None:
  """Each case and variant under each XLA setting, interleaved over `args.repeats` rounds."""
  settings = args.xla.split(',')
  if [s for s in settings if s not in XLA_SETTINGS]:
    sys.exit(f'Unknown --xla setting in {settings}: settings are {list(XLA_SETTINGS)}.')
  runs = {}  # (case, variant, setting) -> results of each repeat.
  for case in cases:
    for variant in variants:
      for _ in range(args.repeats):
        for setting in settings:
          steps = args.steps or steps_for(case)
          result = run_reference_child(case, variant, steps, args.windows, setting)
          runs.setdefault((case, variant, setting), []).append(result)
          write_xla_table(runs, settings, args.out)  # After each child: a partial table.


def write_xla_table(runs: dict, settings: list[str], out: Optional[str]) -> None:
  """Medians over the repeats so far, and the paired ratios to the last setting."""
  lines = [
    f'Train-step throughput by XLA setting ({jax.device_count()} {jax.devices()[0].platform} '
    f'device(s), {os.cpu_count()} cores, {platform.processor() or platform.machine()}, jax '
    f'{jax.__version__}, jaxlib {platforms.jaxlib_version()}, python {platform.python_version()}, '
    f'load average {os.getloadavg()[0]:.1f} at the end)',
    '',
    f'| case | variant | XLA setting | runs | examples/s (median) | x {settings[-1]} (median) | '
    'per-repeat ratios | CPU s/step | first step s | peak RSS GB |',
    '|---|---|---|---:|---:|---:|---|---:|---:|---:|',
  ]
  for (case, variant, setting), results in runs.items():
    base = runs.get((case, variant, settings[-1]), [])
    ratio = ratios = ''
    if setting != settings[-1] and base:
      paired = [r['examples_per_sec'] / b['examples_per_sec'] for r, b in zip(results, base)]
      ratio, ratios = f'{np.median(paired):.2f}', ', '.join(f'{x:.2f}' for x in paired)
    median = {key: float(np.median([r[key] for r in results])) for key in results[0]}
    lines.append(
      f'| {case} | {variant} | {setting} | {len(results)} | {median["examples_per_sec"]:.1f} | '
      f'{ratio} | {ratios} '
      f'| {median["cpu_s_per_step"]:.3g} | {median["compile_s"]:.1f} | '
      f'{median["peak_rss_gb"]:.2f} |'
    )
  tables.write_table(lines, out, COMMAND)


def main_reference(args) -> None:
  cases = args.cases.split(',') if args.cases else list(REFERENCE_CASES)
  variants = args.variants.split(',')
  unknown = [c for c in cases if c not in REFERENCE_CASES] + [
    v for v in variants if v not in VARIANTS
  ]
  if unknown:
    sys.exit(
      f'Unknown case or variant {unknown}: cases are {list(REFERENCE_CASES)}, variants '
      f'{list(VARIANTS)}.'
    )
  if args.xla:
    main_xla(args, cases, variants)
    return
  rows = []
  for case in cases:
    task = REFERENCE_CASES[case][0]
    for variant in variants:
      if variant != 'after' and task not in VARIANTS[variant]:
        continue  # Nothing changed for this task: 'before' would be the same code.
      steps = args.steps or steps_for(case)
      result = run_reference_child(case, variant, steps, args.windows)
      rows.append((case, variant, steps, result))
  before = {case: r for case, v, _, r in rows if v == 'before'}
  header = (
    f'Train-step throughput at the reference shapes ({jax.device_count()} '
    f'{jax.devices()[0].platform} device(s), {os.cpu_count()} cores, '
    f'{platform.processor() or platform.machine()}, jax {jax.__version__}, '
    f'python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end)'
  )
  lines = [
    header,
    '',
    '| case | variant | batch | steps/window | examples/s | x before | '
    'CPU s/step | first step s | peak RSS GB |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for case, variant, steps, r in rows:
    ratio = ''
    if variant != 'before' and case in before:
      ratio = f'{r["examples_per_sec"] / before[case]["examples_per_sec"]:.2f}'
    lines.append(
      f'| {case} | {variant} | {r["batch_size"]} | {steps} | '
      f'{r["examples_per_sec"]:.1f} | {ratio} | {r["cpu_s_per_step"]:.3g} | '
      f'{r["compile_s"]:.1f} | '
      f'{r["peak_rss_gb"]:.2f} |'
    )
  tables.write_table(lines, args.out, COMMAND)


def main_defaults(args) -> None:
  rows = []
  for name, module in CONFIGS.items():
    result = benchmark(module.get_config(), args.steps or 20, args.windows)
    rows.append((name, result))
    print(f'{name}: {result["examples_per_sec"]:.0f} examples/s', flush=True)
  header = (
    f'Train-step throughput (default configs, {jax.device_count()} '
    f'{jax.devices()[0].platform} device(s), {os.cpu_count()} cores, '
    f'{platform.processor() or platform.machine()}, jax {jax.__version__}, '
    f'load average {os.getloadavg()[0]:.1f} at the end)'
  )
  lines = [
    header,
    '',
    '| config | global batch | steps/s | examples/s | compile s |',
    '|---|---:|---:|---:|---:|',
  ]
  for name, r in rows:
    lines.append(
      f'| {name} | {r["batch_size"]} | {r["steps_per_sec"]:.2f} | '
      f'{r["examples_per_sec"]:.0f} | {r["compile_s"]:.1f} |'
    )
  tables.write_table(lines, args.out, COMMAND)


def main():
  if len(sys.argv) > 1 and sys.argv[1] == '--child':
    case, variant, steps, windows = sys.argv[2:6]
    print(json.dumps(run_child(case, variant, int(steps), int(windows))), flush=True)
    return
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    '--steps',
    type=int,
    default=0,
    help='Timed steps per window (default: 20; with --reference, per case).',
  )
  parser.add_argument(
    '--windows', type=int, default=1, help='Timed windows; the median is reported.'
  )
  parser.add_argument('--reference', action='store_true', help='Reference shapes and variants.')
  parser.add_argument(
    '--cases', default='', help=f'With --reference: subset of {list(REFERENCE_CASES)}.'
  )
  parser.add_argument(
    '--variants', default='after,before', help=f'With --reference: of {list(VARIANTS)}.'
  )
  parser.add_argument(
    '--xla',
    default='',
    help=f'With --reference: XLA settings to compare, of {list(XLA_SETTINGS)} (ratio to the last).',
  )
  parser.add_argument(
    '--repeats', type=int, default=1, help='With --xla: interleaved rounds; medians are reported.'
  )
  parser.add_argument('--out', default=None, help='Also write the table to this markdown file.')
  args = parser.parse_args()
  if args.reference:
    main_reference(args)
  else:
    main_defaults(args)


if __name__ == '__main__':
  main()
