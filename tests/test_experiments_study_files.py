"""The study on your files: `python -m experiments.study --config=configs/<kind>.py --files=...`.

A tiny variable-length `.ts` regression dataset (tests/data) goes through the study's own flags
(--files, --config, --seeds, --arms, --steps, --lrs; the default margin) and ends in the same
report, plot and verdict as a shipped dataset.
"""

import json
import os

from absl import flags

from experiments.study import __main__ as study_main
from experiments.study import conduct
from experiments.study import protocol as study
from hybrid_jax.data import datasets

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')


def test_study_on_a_files_dataset_end_to_end(tmp_path):
  files = os.path.join(DATA, 'tiny_regression_TRAIN.ts')
  argv = [
    'study.py',
    '--config=configs/sensor.py:smoke',
    f'--files={files}',
    '--seeds=2',
    '--arms=cnn,concat',
    '--lrs=1e-3',
    '--steps=2',
    '--evals_per_run=1',
    '--noextend_grid',  # One rate, tried alone (extension: test_experiments_study.py).
    f'--data_dir={tmp_path / "data"}',
    f'--study_dir={tmp_path / "runs"}',
    f'--results_dir={tmp_path / "results"}',
  ]
  values = flags.FlagValues()
  study_main.define_flags(values)
  values(argv)
  protocol = study_main.protocol_from_flags(values, argv)
  [name] = protocol.datasets
  assert name.startswith('tiny_regression_') and protocol.steps == {'*': 2}
  protocol.num_resamples = 200
  [summary] = conduct.run_study(protocol)
  assert summary['steps'] == 2 and summary['seeds'] == [0, 1] and summary['arms'] == protocol.arms
  base = study.base_config(name, protocol)
  target_std = datasets.resolve(base).info.target_std
  assert summary['margin'] == study.FILES_MARGIN * target_std  # The stated default.
  assert 'train 8 / validation 2 / test 4' in summary['splits_made']
  report = (tmp_path / 'results' / f'study_{name}.md').read_text()
  assert 'Verdict' in report and summary['analysis']['verdict'] in report
  assert (tmp_path / 'results' / f'study_{name}_forest.png').read_bytes()[:4] == b'\x89PNG'
  for run in (tmp_path / 'runs' / name / 'concat').iterdir():
    assert json.loads((run / 'config.json').read_text())['dataset']['files'] == files
