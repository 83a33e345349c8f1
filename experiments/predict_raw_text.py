"""Predict a trained text run on the original test strings and compare with its eval accuracy.

  JAX_PLATFORMS=cpu python experiments/predict_raw_text.py --workdir=workdirs/text [--checkpoint=best]

Reads the raw texts from the builder's source package (split as the builder splits them), so the
tokenisation in `hybrid_jax.load(...).predict` is checked against what training stored. Prints the
load and predict wall times (first call compiles, the second does not) and both accuracies.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import hybrid_jax  # pylint: disable=g-import-not-at-top,wrong-import-position
from hybrid_jax.data import datasets  # pylint: disable=g-import-not-at-top,wrong-import-position
from hybrid_jax.data import text_vocab  # pylint: disable=g-import-not-at-top,wrong-import-position


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
  with open(os.path.join(args.workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    evals = {r['step']: r for r in map(json.loads, f) if r['split'] == 'eval'}
  print(
    f'{model}: load {loaded - start:.2f} s; predict {len(texts)} raw texts: first call '
    f'{times[0]:.2f} s, second {times[1]:.2f} s; traces {model.num_traces}'
  )
  print(
    f'accuracy on the raw test strings {np.mean(out.label_ids == labels):.6f}; in-training eval '
    f"at step {model.step}: {evals[model.step]['accuracy']:.6f}"
  )


if __name__ == '__main__':
  main()
