"""grain pipelines on the tiny builds: shapes, epochs, sharding, resumable state, exact padded eval."""

import itertools

import numpy as np
import pytest

from hybrid_jax.data import datasets
from hybrid_jax.data import pipeline
from hybrid_jax.errors import DataError
from configs import sensor
from configs import text
from configs import video


def _config(module, name, data_dir, **overrides):
  config = module.get_config('smoke')
  config.dataset.name = name
  config.dataset.data_dir = data_dir
  for key, value in overrides.items():
    target = config
    *path, leaf = key.split('.')
    for part in path:
      target = target[part]
    target[leaf] = value
  return config


def _weather(data_dir, **overrides):
  return _config(sensor, 'weather_stations/tiny', data_dir, **overrides)


def _ids(batch):
  """Identity of each weather example in a batch: its raw window bytes."""
  return [w.tobytes() for w in batch['window']]


@pytest.mark.parametrize(
  'module,name,keys',
  [
    (
      video,
      'moving_digits/tiny',
      {'clip': ((8, 10, 64, 64, 1), np.uint8), 'label': ((8,), np.int32)},
    ),
    (
      text,
      'bbc_news/tiny',
      {'tokens': ((8, 50), np.int32), 'length': ((8,), np.int32), 'label': ((8,), np.int32)},
    ),
    (
      sensor,
      'weather_stations/tiny',
      {
        'window': ((8, 24, 3, 5), np.float32),
        'length': ((8,), np.int32),
        'target': ((8,), np.float32),
      },
    ),
  ],
)
def test_batch_shapes_and_dtypes(tiny_data_dir, module, name, keys):
  config = _config(module, name, tiny_data_dir)
  batch = next(
    pipeline.create_train_iterator(datasets.resolve(config), process_index=0, process_count=1)
  )
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == keys
  eval_batch = next(
    iter(pipeline.create_eval_batches(datasets.resolve(config), process_index=0, process_count=1))
  )
  assert eval_batch['mask'].dtype == np.bool_ and eval_batch['mask'].shape == (16,)


def test_train_is_endless_and_reshuffled_each_epoch(tiny_data_dir):
  iterator = pipeline.create_train_iterator(
    datasets.resolve(_weather(tiny_data_dir)), process_index=0, process_count=1
  )
  epochs = [sum((_ids(next(iterator)) for _ in range(6)), []) for _ in range(3)]  # 48 = 6 x 8.
  for epoch in epochs:
    assert len(set(epoch)) == 48
  assert set(epochs[0]) == set(epochs[1]) == set(epochs[2])
  assert epochs[0] != epochs[1] != epochs[2]


def test_train_order_follows_the_seed(tiny_data_dir):
  def first(seed):
    it = pipeline.create_train_iterator(
      datasets.resolve(_weather(tiny_data_dir, seed=seed)), process_index=0, process_count=1
    )
    return sum((_ids(next(it)) for _ in range(3)), [])

  assert first(0) == first(0)
  assert first(0) != first(1)


def test_train_shards_are_disjoint_per_process(tiny_data_dir):
  config = _weather(tiny_data_dir)  # Global batch 8 -> 4 per process.
  shards = []
  for index in range(2):
    it = pipeline.create_train_iterator(
      datasets.resolve(config), process_index=index, process_count=2
    )
    batches = [next(it) for _ in range(6)]  # One epoch of a 24-example shard.
    assert batches[0]['window'].shape[0] == 4
    shards.append(set(sum((_ids(b) for b in batches), [])))
  assert len(shards[0]) == len(shards[1]) == 24 and not shards[0] & shards[1]


@pytest.mark.parametrize('process_count', [2, 4])
def test_one_global_order_whatever_the_process_count(tiny_data_dir, process_count):
  """Step t trains on the same examples, in the same device order, for 1, 2 or 4 processes:
  process p's rows are rows [p * B, (p + 1) * B) of the 1-process global batch (3 epochs)."""
  source = datasets.resolve(_weather(tiny_data_dir))  # Global batch 8, 48 examples: 6 per epoch.
  single = pipeline.create_train_iterator(source, process_index=0, process_count=1)
  parts = [
    pipeline.create_train_iterator(source, process_index=p, process_count=process_count)
    for p in range(process_count)
  ]
  for _ in range(18):
    expected = next(single)
    batches = [next(it) for it in parts]
    for key, value in expected.items():
      np.testing.assert_array_equal(np.concatenate([b[key] for b in batches]), value)


def test_iterator_state_restores_position(tiny_data_dir):
  config = _config(video, 'moving_digits/tiny', tiny_data_dir)
  it = pipeline.create_train_iterator(datasets.resolve(config), process_index=0, process_count=1)
  for _ in range(7):  # Past the first epoch (40 examples).
    next(it)
  state = it.get_state()
  expected = [next(it)['clip'] for _ in range(3)]
  restored = pipeline.create_train_iterator(
    datasets.resolve(config), process_index=0, process_count=1
  )
  restored.set_state(state)
  for clip in expected:
    np.testing.assert_array_equal(next(restored)['clip'], clip)


def test_background_workers_give_the_same_batches(tiny_data_dir):
  batches = []
  for workers in (0, 1):
    it = pipeline.create_train_iterator(
      datasets.resolve(_weather(tiny_data_dir, **{'dataset.num_workers': workers})),
      process_index=0,
      process_count=1,
    )
    batches.append([_ids(next(it)) for _ in range(3)])
  assert batches[0] == batches[1]


@pytest.mark.parametrize('process_count,eval_batch', [(1, 16), (1, 6), (3, 6), (4, 4)])
def test_eval_covers_every_example_once(tiny_data_dir, process_count, eval_batch):
  config = _weather(tiny_data_dir, eval_batch_size=eval_batch)
  seen, counts = [], set()
  for index in range(process_count):
    batches = pipeline.create_eval_batches(
      datasets.resolve(config), process_index=index, process_count=process_count
    )
    listed = list(batches)
    counts.add(len(listed))
    assert len(listed) == len(batches)
    for batch in listed:
      assert batch['window'].shape[0] == eval_batch // process_count
      seen += [w for w, m in zip(_ids(batch), batch['mask']) if m]
  assert len(counts) == 1  # Every process yields the same number of batches.
  assert len(seen) == 16 and len(set(seen)) == 16


def test_text_ids_respect_vocab_size_and_max_length(tiny_data_dir):
  config = _config(
    text,
    'tweet_sentiment/tiny',
    tiny_data_dir,
    **{'model.vocab_size': 20, 'model.max_length': 7, 'model.num_classes': 3},
  )
  for batch in itertools.islice(
    pipeline.create_eval_batches(datasets.resolve(config), process_index=0, process_count=1), 2
  ):
    tokens, length = batch['tokens'], batch['length']
    assert tokens.shape[1] == 7 and tokens.max() < 20
    assert np.all((length >= 1) & (length <= 7))
    positions = np.arange(7)[None]
    assert np.all((tokens != 0) == (positions < length[:, None]))
    assert (tokens == 1).any()  # Rare words fell to OOV.


def test_sensor_batches_are_normalized_with_train_statistics(tiny_data_dir):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  source = datasets.resolve(_weather(tiny_data_dir, eval_batch_size=16))
  config, info = source.config, source.info
  batch = next(
    iter(pipeline.create_eval_batches(datasets.resolve(config), process_index=0, process_count=1))
  )
  raw = tfds.builder('weather_stations/tiny', data_dir=tiny_data_dir).as_data_source(
    split=config.dataset.eval_split
  )
  raw_targets = sorted(float(raw[i]['target']) for i in range(len(raw)))
  np.testing.assert_allclose(
    sorted(batch['target'] * info.target_std + info.target_mean), raw_targets, rtol=1e-5
  )
  train = next(
    pipeline.create_train_iterator(
      datasets.resolve(_weather(tiny_data_dir, batch_size=48)), process_index=0, process_count=1
    )
  )
  assert abs(train['window'].mean()) < 0.2 and abs(train['target'].mean()) < 1e-4


def test_load_info_fills_none_fields_from_the_data(tiny_data_dir):
  config = _config(
    video,
    'moving_digits/tiny',
    tiny_data_dir,
    **{'model.num_classes': None, 'model.frame_shape': None, 'model.num_frames': None},
  )
  source = datasets.resolve(config)
  config, info = source.config, source.info
  assert (config.model.num_classes, tuple(config.model.frame_shape), config.model.num_frames) == (
    20,
    (64, 64, 1),
    10,
  )
  assert info.num_classes == 20 and info.num_train_examples == 40 and info.num_eval_examples == 20
  assert info.baselines['chance_accuracy'] == pytest.approx(0.05)
  config = _config(
    text, 'bbc_news/tiny', tiny_data_dir, **{'model.vocab_size': None, 'model.max_length': None}
  )
  config = datasets.resolve(config).config
  assert config.model.vocab_size == len(info_vocab(tiny_data_dir)) and config.model.max_length > 50


def info_vocab(data_dir):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  return tfds.builder('bbc_news/tiny', data_dir=data_dir).info.metadata['vocab']


@pytest.mark.parametrize(
  'module,name,overrides,message',
  [
    (text, 'tweet_sentiment/tiny', {}, r'--config\.model\.num_classes=3 '),
    (video, 'moving_digits/tiny', {'model.num_classes': 10}, r'--config\.model\.num_classes=20 '),
    (
      video,
      'moving_digits/tiny',
      {'model.frame_shape': (32, 32, 1)},
      r'--config\.model\.frame_shape=\(64,64,1\)',
    ),
    (
      sensor,
      'weather_stations/tiny',
      {'model.window_shape': (48, 3, 5)},
      r'--config\.model\.window_shape=\(24,3,5\)',
    ),
    (text, 'moving_digits/tiny', {}, r'--config=configs/video\.py'),
    (video, 'no_such_dataset', {}, r'Unknown dataset'),
    (video, 'moving_digits/huge', {}, r'moving_digits/tiny'),
    (text, 'bbc_news/tiny', {'dataset.eval_split': 'dev'}, r'--config\.dataset\.eval_split'),
    (text, 'bbc_news/tiny', {'model.vocab_size': 2}, r'--config\.model\.vocab_size >= 3'),
    (video, 'moving_digits/tiny', {'batch_size': 9}, r'--config\.batch_size'),
  ],
)
def test_bad_input_fails_with_one_line(tiny_data_dir, module, name, overrides, message):
  config = _config(module, name, tiny_data_dir, **overrides)
  with pytest.raises(DataError, match=message) as error:
    pipeline.create_train_iterator(datasets.resolve(config), process_index=0, process_count=2)
  assert '\n' not in str(error.value)
