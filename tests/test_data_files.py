"""Files as a dataset (`--config.dataset.files`) and arrays as one (`hybrid_jax.data.from_arrays`).

The generic route reads the vendored JapaneseVowels `.ts` files into the same splits and features
as the dedicated builder; a tiny variable-length `.ts` regression file, a CSV of texts and an `.npz`
of clips train end to end and predict on raw inputs; the stratified carve is deterministic and
keeps class proportions; an edited file is prepared again; every bad file is one line, before
anything is written.
"""

import json
import os

import jax
import numpy as np
import pytest

import hybrid_jax
import hybrid_jax.data
from configs import japanese_vowels
from configs import sensor
from configs import text
from configs import video
from hybrid_jax import train
from hybrid_jax.data import datasets
from hybrid_jax.data import file_splits
from hybrid_jax.data.builders import common
from hybrid_jax.errors import DataError
import cli_runner

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')
WORDS = (('good', 'great', 'fine', 'nice'), ('bad', 'awful', 'poor', 'sad'))


def _config(module, files, data_dir, variant='smoke'):
  config = module.get_config(variant)
  config.dataset.update(files=str(files), data_dir=str(data_dir))
  return config


def write_csv(path, n=40, extra=''):
  rng = np.random.default_rng(0)
  lines = ['text,label']
  for i in range(n):
    lines.append(' '.join(rng.choice(WORDS[i % 2], 6)) + ',' + ('pos', 'neg')[i % 2])
  path.write_text('\n'.join(lines) + '\n' + extra)
  return path


def write_clips(path, n=24, **extra):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (n, 4, 8, 8, 1), dtype=np.uint8)
  y = np.arange(n) % 3
  x[y == 1, :, :4] = 0  # Something to learn.
  np.savez(path, x=x, y=y, **extra)
  return path


def test_japanese_vowels_files_give_the_builders_splits_and_features(tmp_path):
  shipped = datasets.prepare_shipped('japanese_vowels', str(tmp_path / 'shipped'))
  source = datasets.resolve(
    _config(japanese_vowels, common.SOURCES_DIR / 'JapaneseVowels_TRAIN.ts', tmp_path / 'f', '')
  )
  assert source.config.model.window_shape == (29, 12) and source.config.model.num_classes == 9
  for split in ('train', 'validation', 'test'):
    ours, theirs = source.records(split), shipped.as_data_source(split=split)
    assert len(ours) == len(theirs) == {'train': 216, 'validation': 54, 'test': 370}[split]
    for i in range(len(ours)):
      a, b = ours[i], theirs[i]
      np.testing.assert_array_equal(a['window'], b['window'])
      assert (a['label'], a['length']) == (b['label'], b['length'])
  ours, theirs = source.metadata, shipped.info.metadata
  for key in ('feature_mean', 'feature_std', 'window_shape'):
    np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-6)
  assert 'train 216 / validation 54 / test 370' in source.config.dataset.splits_made


def test_tiny_ts_regression_with_variable_lengths(tmp_path):
  files = os.path.join(DATA, 'tiny_regression_TRAIN.ts')
  source = datasets.resolve(_config(sensor, files, tmp_path))
  assert source.config.head == 'regression'
  assert source.config.model.window_shape == (8, 2)  # The longest series (test) of 2 channels.
  sizes = {s: len(source.records(s)) for s in ('train', 'validation', 'test')}
  assert sizes == {'train': 8, 'validation': 2, 'test': 4}
  train_targets = [float(source.records('train')[i]['target']) for i in range(8)]
  assert source.info.target_mean == pytest.approx(np.mean(train_targets))
  assert {int(source.records('train')[i]['length']) for i in range(8)} >= {2, 3, 4}


@pytest.mark.parametrize('kind', ['text_csv', 'clips_npz'])
def test_file_datasets_train_end_to_end_and_predict_raw_inputs(kind, tmp_path):
  if kind == 'text_csv':
    config = _config(text, write_csv(tmp_path / 'reviews.csv'), tmp_path / 'd')
    raw = ['good great nice', 'awful bad poor sad']
  else:
    config = _config(video, write_clips(tmp_path / 'clips.npz'), tmp_path / 'd')
    raw = np.random.default_rng(1).integers(0, 256, (2, 4, 8, 8, 1), dtype=np.uint8)
  config.num_train_steps = 2
  config.update(log_every_steps=1, eval_every_steps=2, checkpoint_every_steps=2)
  workdir = str(tmp_path / 'run')
  metrics = train.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
  assert np.isfinite(metrics['loss'])
  with open(os.path.join(workdir, 'config.json')) as f:
    assert 'carved' in json.load(f)['dataset']['splits_made']
  config.dataset.eval_split = 'test'
  assert train.evaluate(config, workdir, 'latest')['num_examples'] > 0
  out = hybrid_jax.load(workdir, checkpoint='latest', devices=jax.devices()[:1]).predict(raw)
  assert out.probabilities.shape == (2, 2 if kind == 'text_csv' else 3)


def test_jsonl_targets_npy_clips_and_npz_lengths_are_read(tmp_path):
  rows = [
    {'text': f'word{i % 3} more', 'target': i / 2, 'split': s}
    for i, s in enumerate(['train'] * 8 + ['validation'] * 2 + ['test'] * 2)
  ]
  (tmp_path / 'r.jsonl').write_text('\n'.join(json.dumps(r) for r in rows) + '\n')
  source = datasets.resolve(_config(text, tmp_path / 'r.jsonl', tmp_path / 'd'))
  assert source.config.head == 'regression' and source.info.num_eval_examples == 2
  assert source.info.target_mean == pytest.approx(np.mean([i / 2 for i in range(8)]))
  clips = np.random.default_rng(0).random((12, 3, 8, 8, 3)).astype(np.float32)
  np.save(tmp_path / 'c.npy', clips)
  np.save(tmp_path / 'c_y.npy', np.array(['x', 'y'] * 6))
  source = datasets.resolve(_config(video, tmp_path / 'c.npy', tmp_path / 'd'))
  assert source.config.model.frame_shape == (8, 8, 3) and source.config.model.num_frames == 3
  x = np.random.default_rng(0).normal(size=(15, 7, 2))
  np.savez(tmp_path / 's.npz', x=x, y=np.arange(15) % 3, lengths=np.arange(15) % 7 + 1)
  source = datasets.resolve(_config(sensor, tmp_path / 's.npz', tmp_path / 'd'))
  record = source.records('train')[0]
  assert record['length'] == len(record['window']) and source.config.model.window_shape == (7, 2)


def test_from_arrays_is_trainable_by_name(tmp_path):
  rng = np.random.default_rng(0)
  x = [rng.normal(size=(int(rng.integers(3, 9)), 4)).astype(np.float32) for _ in range(30)]
  y = np.arange(30) % 2
  name = hybrid_jax.data.from_arrays(
    'my_series', train=(x[:24], y[:24]), test=(x[24:], y[24:]), data_dir=str(tmp_path)
  )
  config = sensor.get_config('smoke')
  config.dataset.update(name=name, data_dir=str(tmp_path))
  source = datasets.resolve(config)
  assert source.config.model.window_shape[1:] == (4,) and source.config.model.num_classes == 2
  # 12 per class in train: round(12 x 0.2) = 2 of each carved as validation.
  assert (source.info.num_train_examples, source.info.num_eval_examples) == (20, 4)
  pandas = pytest.importorskip('pandas')
  frame = pandas.DataFrame({'text': ['good film', 'bad plot'] * 10, 'label': ['pos', 'neg'] * 10})
  hybrid_jax.data.from_arrays('my_texts', train=frame, data_dir=str(tmp_path))
  config = text.get_config('smoke')
  config.dataset.update(name='my_texts', data_dir=str(tmp_path))
  assert datasets.resolve(config).config.model.num_classes == 2


def test_carve_is_stratified_and_deterministic():
  labels = np.array(['a'] * 50 + ['b'] * 30 + ['c'] * 20)[np.random.default_rng(0).permutation(100)]
  out = file_splits.carve(labels, 0.2)
  assert sorted(np.unique(labels[out], return_counts=True)[1].tolist()) == [4, 6, 10]
  np.testing.assert_array_equal(out, file_splits.carve(labels, 0.2))
  seeded = file_splits.carve(labels, 0.2, seed=3)
  assert sorted(np.unique(labels[seeded], return_counts=True)[1].tolist()) == [4, 6, 10]
  np.testing.assert_array_equal(seeded, file_splits.carve(labels, 0.2, seed=3))
  # Evenly spaced: the last of every 5 rows of each class (rows 0, 2, .. 18 are class 0).
  assert file_splits.carve(np.arange(20) % 2, 0.2).tolist() == [8, 9, 18, 19]
  timed = file_splits.carve(np.array([0] * 10 + [1] * 10), 0.2, time_order=True)
  assert timed.tolist() == [8, 9, 18, 19]  # The last rows of each class.


def test_an_edited_file_is_prepared_again(tmp_path):
  path = write_csv(tmp_path / 'reviews.csv')
  first = datasets.resolve(_config(text, path, tmp_path / 'd'))
  assert datasets.resolve(_config(text, path, tmp_path / 'd')).config.dataset.name == (
    first.config.dataset.name
  )
  write_csv(path, n=50)
  second = datasets.resolve(_config(text, path, tmp_path / 'd'))
  assert second.config.dataset.name != first.config.dataset.name
  sizes = [len(second.records(s)) for s in ('train', 'validation', 'test')]
  assert sum(sizes) == 50  # The new content, prepared anew.


def _ts(body, header='@classLabel true a b'):
  return f'@problemName t\n@dimensions 1\n{header}\n@data\n{body}'


BAD = {
  'malformed .ts line': ('x_TRAIN.ts', _ts('1,2,3:a\n1,x,3:b\n'), 'x_TRAIN.ts:6'),
  'NaN in a series': ('x_TRAIN.ts', _ts('1,?,3:a\n1,2,3:b\n'), 'fill_missing'),
  'label not in header': ('x_TRAIN.ts', _ts('1,2:a\n1,2:c\n'), "label 'c'"),
  'missing text column': ('t.csv', 'body,label\nhi,a\n', "no 'text' column"),
  'missing label column': ('t.csv', 'text,kind\nhi,a\n', "no 'label' column"),
  'no y in .npz': ('a.npz', None, "it needs x (the examples) and y"),
  'bad CSV row': ('t.csv', 'text,label\nhi,a\nx,y,z\n', 't.csv:3'),
  'bad JSON line': ('t.jsonl', '{"text": "hi", "label": "a"}\n{oops\n', 't.jsonl:2'),
  'empty split': (
    's.csv',
    'text,label,split\nhi,a,train\nho,a,test\n',
    'validation split is empty',
  ),
  'unseen label in test': (
    's.csv',
    'text,label,split\nhi,a,train\nho,a,validation\nha,b,test\n',
    "label 'b' of the test split",
  ),
}


@pytest.mark.parametrize('case', sorted(BAD))
def test_bad_files_are_one_line_and_write_nothing(case, tmp_path):
  name, content, words = BAD[case]
  (tmp_path / 'in').mkdir()
  path = tmp_path / 'in' / name
  if content is None:
    np.savez(path, x=np.zeros((4, 3, 2)))
  else:
    path.write_text(content)
  if name.endswith('_TRAIN.ts'):
    (tmp_path / 'in' / name.replace('TRAIN', 'TEST')).write_text(_ts('1,2,3:a\n'))
  module = text if name.endswith('.csv') or name.endswith('.jsonl') else sensor
  with pytest.raises(DataError) as error:
    datasets.resolve(_config(module, path, tmp_path / 'd'))
  assert '\n' not in str(error.value) and words in str(error.value), str(error.value)
  assert not (tmp_path / 'd').exists()


def test_channels_differing_between_splits_are_refused(tmp_path):
  rng = np.random.default_rng(0)
  np.savez(tmp_path / 'a.npz', x=rng.normal(size=(6, 5, 3)), y=np.arange(6) % 2)
  np.savez(tmp_path / 'b.npz', x=rng.normal(size=(4, 5, 2)), y=np.arange(4) % 2)
  config = _config(sensor, f'train={tmp_path}/a.npz,test={tmp_path}/b.npz', tmp_path / 'd')
  with pytest.raises(DataError, match=r'b.npz row 0: a series of shape \(5, 2\) where train has'):
    datasets.resolve(config)
  assert not (tmp_path / 'd').exists()


def test_a_bad_file_through_the_command_line(tmp_path):
  path = tmp_path / 'clips.npz'
  x = np.zeros((6, 4, 8, 8, 1), np.float32)
  x[2, 0, 0, 0, 0] = np.nan
  np.savez(path, x=x, y=np.arange(6) % 2)
  done = cli_runner.run(
    [
      '-m',
      'hybrid_jax.main',
      '--config=configs/video.py:smoke',
      f'--config.dataset.files={path}',
      f'--config.dataset.data_dir={tmp_path / "d"}',
      f'--workdir={tmp_path / "run"}',
    ],
    devices=1,
  )
  assert done.returncode != 0
  lines = done.stderr.strip().splitlines()
  assert len(lines) == 1 and 'clips.npz row 2' in lines[0], done.stderr[-2000:]
  assert not (tmp_path / 'd').exists() and not (tmp_path / 'run').exists()
