"""TFDS catalog datasets mapped onto model inputs, with tfds.testing.mock_data (no files, no network)."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from hybrid_jax.data import datasets
from hybrid_jax.data import pipeline
from hybrid_jax.errors import DataError
from configs import text
from configs import video


def test_imdb_reviews_maps_to_text_batches(tmp_path, own_catalog_vocab):
  config = text.get_config('smoke')
  config.dataset.name, config.dataset.data_dir = 'imdb_reviews', str(tmp_path)
  config.model.num_classes, config.model.vocab_size = None, None
  with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
    source = datasets.resolve(config)
    config, info = source.config, source.info
    batch = next(pipeline.create_train_iterator(source, process_index=0, process_count=1))
    eval_batches = list(pipeline.create_eval_batches(source, process_index=0, process_count=1))
    vocab_dir = tfds.builder('imdb_reviews', data_dir=str(tmp_path)).data_dir
  assert info.task == 'text' and info.num_classes == 2 and config.model.num_classes == 2
  assert batch['tokens'].shape == (8, 50) and batch['tokens'].dtype == np.int32
  assert batch['tokens'].max() < config.model.vocab_size and set(batch['label']) <= {0, 1}
  assert sum(int(b['mask'].sum()) for b in eval_batches) == 20
  assert os.path.exists(os.path.join(vocab_dir, own_catalog_vocab))  # Saved with the data.


def test_ucf101_maps_to_video_batches(tmp_path):
  config = video.get_config('smoke')
  config.dataset.name, config.dataset.data_dir = 'ucf101', str(tmp_path)
  config.model.num_classes = 101
  config.model.frame_shape, config.model.num_frames = (32, 32, 1), 4
  with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
    batch = next(
      pipeline.create_train_iterator(datasets.resolve(config), process_index=0, process_count=1)
    )
  assert batch['clip'].shape == (8, 4, 32, 32, 1) and batch['clip'].dtype == np.uint8
  assert batch['label'].dtype == np.int32 and batch['label'].max() < 101


def test_catalog_class_count_is_checked(tmp_path, own_catalog_vocab):
  config = text.get_config('smoke')  # num_classes=5, imdb_reviews has 2.
  config.dataset.name, config.dataset.data_dir = 'imdb_reviews', str(tmp_path)
  with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
    with pytest.raises(DataError, match=r'--config\.model\.num_classes=2 '):
      datasets.resolve(config)


def test_unprepared_catalog_dataset_says_how_to_prepare_it(tmp_path):
  config = text.get_config('smoke')
  config.dataset.name, config.dataset.data_dir = 'imdb_reviews', str(tmp_path)
  with pytest.raises(DataError, match='is not prepared in .* `tfds build imdb_reviews') as error:
    datasets.resolve(config)
  assert '\n' not in str(error.value)
