"""Tiny builds of the shipped TFDS builders: shapes, dtypes, labels, determinism, disjoint splits."""

import hashlib
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from hybrid_jax import errors
from hybrid_jax.data import datasets
from hybrid_jax.data import shipped
from hybrid_jax.data import text_vocab
from hybrid_jax.data.builders import bbc_news
from hybrid_jax.data.builders import common
from hybrid_jax.data.builders import japanese_vowels
from hybrid_jax.data.builders import moving_digits
from hybrid_jax.data.builders import tweet_sentiment
from hybrid_jax.data.builders import weather_stations


def _examples(data_dir, name, split):
  source = tfds.builder(name, data_dir=data_dir).as_data_source(split=split)
  return [source[i] for i in range(len(source))]


def test_moving_digits_examples(tiny_data_dir):
  for split, n in (('train', 40), ('test', 20)):
    examples = _examples(tiny_data_dir, 'moving_digits/tiny', split)
    assert len(examples) == n
    for ex in examples:
      clip = ex['clip']
      assert clip.dtype == np.uint8 and clip.shape == (10, 64, 64, 1)
      assert 0 <= ex['label'] < 20 and ex['label'] == 2 * ex['digit'] + ex['sense']
      # The whole digit stays on the canvas: every frame holds the same ink.
      ink = clip.reshape(10, -1).sum(axis=1, dtype=np.int64)
      assert np.all(ink == ink[0]) and ink[0] > 0
    # Both senses of every digit image are present (balanced labels).
    assert sorted(ex['label'] for ex in examples) == sorted(list(range(20)) * (n // 20))


def _turn_sign(clip):
  """+1 clockwise on screen, -1 counter-clockwise, from the digit's centre of mass per frame."""
  frames = clip[..., 0].astype(np.float64)
  ys, xs = np.mgrid[:64, :64]
  mass = frames.sum(axis=(1, 2))
  pos = np.stack([(frames * xs).sum(axis=(1, 2)) / mass, (frames * ys).sum(axis=(1, 2)) / mass], -1)
  d = np.diff(pos, axis=0)
  cross = d[:-1, 0] * d[1:, 1] - d[:-1, 1] * d[1:, 0]  # > 0: clockwise with y pointing down.
  return np.sign(cross.sum())


def test_moving_digits_label_encodes_sense_of_rotation(tiny_data_dir):
  for ex in _examples(tiny_data_dir, 'moving_digits/tiny', 'train'):
    assert _turn_sign(ex['clip']) == (1 if ex['sense'] == 0 else -1), ex['label']


def test_moving_digits_single_frame_does_not_reveal_sense():
  """Positions at any frame have the same distribution for both senses (<= 50% from one frame)."""
  for t in (0, 5, 9):
    stats = []
    for sense in (0, 1):
      pos = np.array(
        [
          moving_digits.trajectory(np.random.default_rng([7, sense, i]), sense)[t]
          for i in range(3000)
        ],
        np.float64,
      )
      stats.append(np.concatenate([pos.mean(0), pos.std(0)]))
    np.testing.assert_allclose(stats[0], stats[1], atol=0.6)


def test_moving_digits_train_test_use_disjoint_images(tiny_data_dir):
  train = {ex['image_index'] for ex in _examples(tiny_data_dir, 'moving_digits/tiny', 'train')}
  test = {ex['image_index'] for ex in _examples(tiny_data_dir, 'moving_digits/tiny', 'test')}
  assert len(train) == 20 and len(test) == 10 and not train & test
  _, labels = moving_digits.load_digits()
  full = moving_digits.split_digits(labels, 400, 100)
  assert len(full['train']) == 4000 and len(full['test']) == 1000
  assert not set(full['train']) & set(full['test'])
  assert np.all(np.bincount(labels[full['test']]) == 100)


@pytest.mark.parametrize('name,num_classes', [('bbc_news/tiny', 5), ('tweet_sentiment/tiny', 3)])
def test_text_examples_and_train_only_vocab(tiny_data_dir, name, num_classes):
  builder = tfds.builder(name, data_dir=tiny_data_dir)
  vocab = builder.info.metadata['vocab']
  assert vocab[:2] == [text_vocab.PAD_TOKEN, text_vocab.OOV_TOKEN]
  train = _examples(tiny_data_dir, name, 'train')
  test = _examples(tiny_data_dir, name, 'test')
  for ex in train + test:
    assert ex['tokens'].dtype == np.int32 and ex['tokens'].ndim == 1 and len(ex['tokens']) >= 1
    assert ex['tokens'].min() >= 1 and ex['tokens'].max() < len(vocab)
    assert 0 <= ex['label'] < num_classes
  # Every vocabulary word occurs in the train split: the vocabulary saw no test text.
  train_ids = np.unique(np.concatenate([ex['tokens'] for ex in train]))
  np.testing.assert_array_equal(train_ids[train_ids >= 2], np.arange(2, len(vocab)))
  assert not {tuple(ex['tokens']) for ex in train} & {tuple(ex['tokens']) for ex in test}
  assert sorted(set(ex['label'] for ex in train)) == list(range(num_classes))


def test_text_tokenizer_and_split_rule():
  assert text_vocab.tokenize("I don't like it!! http://t.co/x @Bob #Sad 2013") == [
    'i',
    "don't",
    'like',
    'it',
    '!',
    '!',
    'xxurl',
    'xxuser',
    'sad',
    '2013',
  ]
  assert text_vocab.split_of('same text') == text_vocab.split_of('same text')
  fractions = np.mean([text_vocab.split_of(f'text {i}') == 'test' for i in range(5000)])
  assert 0.18 < fractions < 0.22
  tokens, length = text_vocab.fit_ids(np.array([5, 60, 7, 8]), vocab_size=50, max_length=3)
  np.testing.assert_array_equal(tokens, [5, 1, 7]) and length == 3
  tokens, length = text_vocab.fit_ids(np.array([5]), vocab_size=50, max_length=3)
  np.testing.assert_array_equal(tokens, [5, 0, 0])
  assert length == 1


def test_weather_examples_time_split_and_train_only_statistics(tiny_data_dir):
  builder = tfds.builder('weather_stations/tiny', data_dir=tiny_data_dir)
  meta = builder.info.metadata
  train = _examples(tiny_data_dir, 'weather_stations/tiny', 'train')
  test = _examples(tiny_data_dir, 'weather_stations/tiny', 'test')
  assert (len(train), len(test)) == (48, 16)
  for ex in train + test:
    assert ex['window'].shape == (24, 3, 5) and ex['window'].dtype == np.float32
    assert np.isfinite(ex['window']).all() and np.isfinite(ex['target'])
  train_times = np.array([ex['time'] for ex in train])
  test_times = np.array([ex['time'] for ex in test])
  # Train targets (last input + 6 h) end before the first test input hour (last input - 23 h).
  assert train_times.max() + weather_stations.HORIZON < test_times.min() - 23
  # Statistics are those of the hours the train windows cover, and nothing else.
  hours = {}
  for ex in train:
    for k in range(24):
      hours[ex['time'] - 23 + k] = ex['window'][k]
  stacked = np.stack(list(hours.values()))
  np.testing.assert_allclose(meta['feature_mean'], stacked.mean(0), rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(
    meta['target_mean'], np.mean([ex['target'] for ex in train]), rtol=1e-5
  )
  # Persistence baseline on the test split, recomputed from the stored windows (JFK temp).
  persistence = np.mean([abs(ex['window'][-1, 1, 0] - ex['target']) for ex in test])
  np.testing.assert_allclose(meta['baselines']['test']['persistence_mae'], persistence, rtol=1e-5)


def test_weather_cleaning_leaves_no_gaps():
  values, times = weather_stations.load_hourly()
  assert values.shape == (8730, 3, 5) and not np.isnan(values).any()
  assert np.all(np.diff(times.astype(np.int64)) == 1)
  assert values[..., 3].max() < 100  # The 1048 mph wind record is gone.


def _records(data_dir, name, split):
  files = sorted(
    pathlib.Path(tfds.builder(name, data_dir=data_dir).data_dir).glob(f'*-{split}.array_record*')
  )
  assert files
  return [f.read_bytes() for f in files]


@pytest.mark.parametrize('name', [f'{n}/{d.tiny}' for n, d in shipped.SHIPPED.items()])
def test_builds_are_byte_identical(tiny_data_dir, tmp_path, name):
  datasets.prepare_shipped(name, str(tmp_path))
  for split in ('train', 'validation', 'test'):
    assert _records(tiny_data_dir, name, split) == _records(str(tmp_path), name, split)
  first = tfds.builder(name, data_dir=tiny_data_dir).info.metadata
  assert tfds.builder(name, data_dir=str(tmp_path)).info.metadata == first


def test_source_files_are_pinned(tmp_path, monkeypatch):
  missing = common.SourceFile('no_such_package_xyz', 'f.csv', 'no-such-package>=1', '0' * 64)
  with pytest.raises(errors.DataError, match=r"pip install 'no-such-package>=1'"):
    missing.path()
  assert bbc_news.BBC_DIR.verified_path().is_dir()
  # Vendored files: pinned by their (decompressed) content; a changed or lost file stops the build.
  for source in (moving_digits.MNIST_5K, tweet_sentiment.TWEETS_CSV, weather_stations.WEATHER_CSV):
    assert hashlib.sha256(source.read_bytes()).hexdigest() == source.sha256
  wrong = common.VendoredFile(moving_digits.MNIST_5K.name, '0' * 64)
  with pytest.raises(errors.DataError, match='not the pinned') as error:
    wrong.read_bytes()
  assert '\n' not in str(error.value)
  monkeypatch.setattr(common, 'SOURCES_DIR', tmp_path)
  with pytest.raises(errors.DataError, match='missing from this hybrid_jax install'):
    moving_digits.MNIST_5K.read_bytes()


def test_vendored_sources_are_documented():
  """Every vendored file has its sha256, provenance and license in sources/README.md."""
  readme = (common.SOURCES_DIR / 'README.md').read_text(encoding='utf-8')
  for name in (
    'mnist_5k.csv.gz',
    'tweet_sentiment.csv.gz',
    'nycflights13_weather.csv.gz',
    'JapaneseVowels_TRAIN.ts',
    'JapaneseVowels_TEST.ts',
  ):
    assert name in readme, name
    assert hashlib.sha256((common.SOURCES_DIR / name).read_bytes()).hexdigest() in readme, name


# Validation splits: carved from train, deterministic; the test splits are those of version 1.0.0.


@pytest.mark.parametrize(
  'name',
  [
    'moving_digits/tiny',
    'bbc_news/tiny',
    'tweet_sentiment/tiny',
    'weather_stations/tiny',
    'japanese_vowels/tiny',
  ],
)
def test_every_shipped_dataset_has_train_validation_test(tiny_data_dir, name):
  splits = tfds.builder(name, data_dir=tiny_data_dir).info.splits
  assert set(splits) == {'train', 'validation', 'test'}
  assert all(splits[s].num_examples > 0 for s in splits)


def test_validation_is_carved_from_train_and_test_is_unchanged():
  _, labels = moving_digits.load_digits()
  old = moving_digits.split_digits(labels, 400, 100)
  new = moving_digits.split_digits(labels, 360, 100, 40)
  np.testing.assert_array_equal(new['test'], old['test'])
  assert set(new['train']) | set(new['validation']) == set(old['train'])
  assert not set(new['train']) & set(new['validation'])
  assert np.all(np.bincount(labels[new['validation']]) == 40)
  texts = [f'some text {i}' for i in range(3000)]
  with_validation = [text_vocab.split_of(t) for t in texts]
  without = [text_vocab.split_of(t, validation_percent=0) for t in texts]
  assert [s == 'test' for s in with_validation] == [s == 'test' for s in without]
  assert 0.07 < np.mean([s == 'validation' for s in with_validation]) < 0.13


def test_weather_validation_lies_between_train_and_test_in_time(tiny_data_dir):
  times = {
    s: np.array([ex['time'] for ex in _examples(tiny_data_dir, 'weather_stations/tiny', s)])
    for s in ('train', 'validation', 'test')
  }
  horizon = weather_stations.HORIZON
  assert times['train'].max() + horizon < times['validation'].min() - 23  # No shared hour.
  assert times['validation'].max() + horizon < times['test'].min() - 23


def test_japanese_vowels_splits_and_variable_lengths():
  splits = japanese_vowels.load_splits()
  assert {s: len(y) for s, (_, y) in splits.items()} == {
    'train': 216,
    'validation': 54,
    'test': 370,
  }
  assert all(
    np.bincount(splits[s][1]).tolist() == [n] * 9 for s, n in (('train', 24), ('validation', 6))
  )
  lengths = [len(x) for xs, _ in splits.values() for x in xs]
  assert (min(lengths), max(lengths)) == (7, 29)
  assert all(x.shape[1] == 12 and x.dtype == np.float32 for x in splits['test'][0])
  assert japanese_vowels.TRAIN_TS.read_bytes().startswith(b'#')
  wrong = common.VendoredFile('JapaneseVowels_TRAIN.ts', '0' * 64)
  with pytest.raises(errors.DataError, match='not the pinned'):
    wrong.read_bytes()
