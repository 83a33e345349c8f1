"""Predict a trained text run on the original test strings and compare with its eval accuracy.

  JAX_PLATFORMS=cpu python -m experiments.predict_raw_text --workdir=workdirs/text \\
      [--checkpoint=best]

Reads the raw texts from the builder's source package (split as the builder splits them), so the
tokenisation in `hybrid_jax.load(...).predict` is checked against what training stored. Prints the
load and predict wall times (first call compiles, the second does not) and the accuracy beside the
test accuracy that `--mode=eval --split=test` wrote for the same checkpoint (run it first).
"""

import argparse
import json
import os
import time

from hybrid_jax import platforms

platforms.choose_platform()  # Before JAX starts: the CPU, quietly, where CUDA has no driver.

# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np

import hybrid_jax
from hybrid_jax.data import datasets
from hybrid_jax.data import text_vocab
# pylint: enable=g-import-not-at-top,wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--checkpoint', default='best')
  parser.add_argument('--batch_size', type=int, default=64)
  args = parser.parse_args()
  start = time.perf_counter()
  model = hybrid_jax.load(args.workdir, args.checkpoint)
  loaded = time.perf_counter()
  builder = datasets.prepare_shipped(model.config.dataset.name, model.config.dataset.data_dir)
  if builder.builder_config.per_class is not None:
    raise SystemExit('Use a run on a full dataset (the tiny builds select texts per class).')
  rows = [r for r in builder._load() if text_vocab.split_of(r[1]) == 'test']  # pylint: disable=protected-access
  names = builder.info.features['label'].names
  texts, labels = [r[1] for r in rows], np.array([names.index(r[2]) for r in rows])
  times = []
  for _ in range(2):
    t = time.perf_counter()
    out = model.predict(texts, batch_size=args.batch_size)
    times.append(time.perf_counter() - t)
  evaluated = os.path.join(args.workdir, f'eval_test_step_{model.step}.json')
  if not os.path.exists(evaluated):
    raise SystemExit(
      f'{evaluated} is missing: run --mode=eval --split=test --checkpoint='
      f'{args.checkpoint} on this workdir first.'
    )
  with open(evaluated, encoding='utf-8') as f:
    tested = json.load(f)
  print(
    f'{model}: load {loaded - start:.2f} s; predict {len(texts)} raw texts: first call '
    f'{times[0]:.2f} s, second {times[1]:.2f} s; traces {model.num_traces}'
  )
  print(
    f'accuracy on the raw test strings {np.mean(out.label_ids == labels):.6f}; --mode=eval '
    f"--split=test at step {model.step}: {tested['accuracy']:.6f}"
  )


if __name__ == '__main__':
  main()
