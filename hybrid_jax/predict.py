"""Predict with a trained run on raw inputs: one JSON line (or CSV row) per input, on stdout.

  python -m hybrid_jax.predict --workdir=workdirs/text --input=sentences.txt     # one text per line
  echo 'The striker scored twice.' | python -m hybrid_jax.predict --workdir=workdirs/text --input=-
  python -m hybrid_jax.predict --workdir=workdirs/video --input=clips.npy --format=csv
  python -m hybrid_jax.predict --workdir=workdirs/sensor --checkpoint=latest --input=windows.npz

Inputs: text runs read text lines (blank lines are skipped; `line` in the output is the 1-based
line number); video and sensor runs read `.npy` (an array [N, ...] of N examples, or one example)
or `.npz` (each array one example, or a stack of them; `name` in the output is the array's name). Outputs:
classification {"line"|"index", "label", "probabilities": {name: p}}; regression {"index",
"value"} in the target's original units.
"""

import csv
import io
import json
import os
import sys
from typing import Any

from absl import app
from absl import flags
from absl import logging

from hybrid_jax import platforms

platforms.choose_platform()  # Before JAX starts: the CPU, quietly, where CUDA has no driver.

# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np

from hybrid_jax import cli
from hybrid_jax import inference
from hybrid_jax import input_kinds
from hybrid_jax.errors import HybridJaxError
from hybrid_jax.errors import InputError
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (defined when run as a program, so importing this module defines none)."""
  flags.DEFINE_string(
    'workdir', None, 'A trained run directory (holds inference.json and checkpoints/).'
  )
  flags.DEFINE_string(
    'checkpoint', 'best', "'best' (by the run's best_metric), 'latest' or a step."
  )
  flags.DEFINE_string(
    'input',
    None,
    "Input file, or '-' for stdin: text lines (text runs), .npy "
    'or .npz arrays (video and sensor runs).',
  )
  flags.DEFINE_enum(
    'format', 'jsonl', ['jsonl', 'csv'], 'Output: one JSON line or CSV row per input.'
  )
  flags.DEFINE_integer('batch_size', 64, 'Inputs per compiled call (the last one is padded).')
  flags.mark_flags_as_required(['workdir', 'input'])


def read_inputs(
  path: str, task: str, example_ndim: int | None = None
) -> tuple[list[Any], list[tuple[str, Any]]]:
  """(inputs, ids): the examples of file `path` ('-': stdin) for input kind `task`, an id each.

  Args:
    path: the file, or '-' for stdin.
    task: the run's input kind (input_kinds.py): text files hold one text per line, the others
      .npy or .npz arrays.
    example_ndim: dimensions of one example (default: the input kind's, e.g. 4 for clips).

  Raises:
    InputError: the file is missing, empty, or not the format the input kind reads.
  """
  kind = input_kinds.input_kind(task)
  example_ndim = example_ndim or kind.example_ndim
  name = 'stdin' if path == '-' else path
  try:
    if path == '-':
      data = sys.stdin.buffer.read()
    else:
      with open(path, 'rb') as f:
        data = f.read()
  except OSError as e:
    raise InputError(
      f'Cannot read --input={path} ({e.strerror}): give an existing file or -.'
    ) from None
  if example_ndim is None:  # One text per line.
    lines = data.decode('utf-8', 'replace').splitlines()
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    if not numbered:
      raise InputError(f'{name} has no text: give one text per line.')
    return [line for _, line in numbered], [('line', i) for i, _ in numbered]
  if not data:
    raise InputError(f'{name} is empty: give a .npy array [N, ...] or a .npz of arrays.')
  try:
    loaded = np.load(io.BytesIO(data), allow_pickle=False)
  except ValueError:
    raise InputError(
      f'{name} is not a .npy or .npz file: {task} runs read numpy arrays (np.save / np.savez).'
    ) from None
  if isinstance(loaded, np.ndarray):
    inputs = [loaded] if loaded.ndim == example_ndim else list(loaded) if loaded.ndim else []
    if not inputs:
      raise InputError(f'{name} holds no examples: give an array [N, ...] with N >= 1.')
    return inputs, [('index', i) for i in range(len(inputs))]
  inputs, ids = [], []
  with loaded:
    if not loaded.files:
      raise InputError(f'{name} holds no arrays: give a .npz with one array per example.')
    for key in loaded.files:
      array = loaded[key]
      if array.ndim == example_ndim + 1:  # A stack of examples.
        inputs.extend(array)
        ids.extend(('name', f'{key}[{i}]') for i in range(len(array)))
      else:
        inputs.append(array)
        ids.append(('name', key))
  return inputs, ids


def write_rows(
  rows: list[dict[str, Any]], ids: list[tuple[str, Any]], label_names, fmt: str, out=sys.stdout
) -> None:
  """One JSON line or CSV row per prediction (CSV: id, label, p_<name>... or id, value)."""
  if fmt == 'jsonl':
    for (key, value), row in zip(ids, rows):
      out.write(json.dumps({key: value, **row}) + '\n')
    return
  writer = csv.writer(out, lineterminator='\n')
  id_name = ids[0][0]
  if label_names:
    writer.writerow([id_name, 'label', *(f'p_{n}' for n in label_names)])
    for (_, value), row in zip(ids, rows):
      writer.writerow(
        [value, row['label'], *(f'{row["probabilities"][n]:.6g}' for n in label_names)]
      )
  else:
    writer.writerow([id_name, 'value'])
    for (_, value), row in zip(ids, rows):
      writer.writerow([value, f"{row['value']:.6g}"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not FLAGS['verbosity'].present:  # Library INFO logs are noise here; outputs go to stdout.
    logging.set_verbosity(logging.WARNING)
  model = inference.load(FLAGS.workdir, FLAGS.checkpoint)
  inputs, ids = read_inputs(FLAGS.input, model.task, model.example_ndim)
  predictions = model.predict(inputs, batch_size=FLAGS.batch_size)
  print(
    f'hybrid_jax predict: {len(predictions)} input(s), {model.task} {model.head} model, '
    f'{os.path.abspath(model.checkpoint)}',
    file=sys.stderr,
    flush=True,
  )
  write_rows(predictions.rows(), ids, model.label_names, FLAGS.format)


if __name__ == '__main__':
  define_flags()
  cli.run(main, extra_errors=(HybridJaxError,))
