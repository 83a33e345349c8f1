"""Shared fixtures: the tiny builds of the shipped datasets, prepared once per test process (each
pytest-xdist worker)."""

import glob
import os
import uuid

import pytest

from hybrid_jax.data import catalog
from hybrid_jax.data import shipped

# The tiny build of every shipped dataset (the one table of them: hybrid_jax/data/shipped.py).
TINY_DATASETS = tuple(f'{name}/{dataset.tiny}' for name, dataset in shipped.SHIPPED.items())


@pytest.fixture(scope='session')
def tiny_data_dir(tmp_path_factory) -> str:
  """A TFDS data_dir holding the 'tiny' build of every shipped builder (a few seconds in all).

  Use with `config.dataset.name = 'moving_digits/tiny'` (etc.: `TINY_DATASETS`, e.g.
  'controls/both_tiny') and `config.dataset.data_dir = tiny_data_dir`.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from hybrid_jax.data import datasets  # pylint: disable=g-import-not-at-top

  data_dir = str(tmp_path_factory.mktemp('tfds_tiny'))
  tfds.disable_progress_bar()
  for name in TINY_DATASETS:
    datasets.prepare_shipped(name, data_dir)
  return data_dir


@pytest.fixture
def own_catalog_vocab(monkeypatch):
  """A catalog text dataset's vocabulary saved where only this test reads it.

  Under `tfds.testing.mock_data` every builder's data_dir is one fake path
  (/tmp/non-existing/tfds/data_dir/...) shared by every test, worker and earlier run: the vocabulary
  the catalog saves there on first use would be read by the next test, built from another mock
  (its size then depends on which test ran first). Yields the file's name in the builder's dir.
  """
  name = f'hybrid_jax_vocab_{uuid.uuid4().hex}.json'
  monkeypatch.setattr(catalog, 'VOCAB_FILE', name)
  yield name
  for path in glob.glob(f'/tmp/non-existing/tfds/data_dir/**/{name}', recursive=True):
    os.remove(path)
