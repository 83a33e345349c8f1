"""A user's own dataset plugs in by writing one builder module and naming it in the config."""

import sys
import textwrap

import jax
import numpy as np
import pytest

from configs import video
from hybrid_jax import data
from hybrid_jax import models

# The builder a user writes (as in the README), with random clips standing in for their files.
OWN_BUILDER = textwrap.dedent('''
    import numpy as np
    import tensorflow_datasets as tfds

    class MyClips(tfds.core.GeneratorBasedBuilder):
      VERSION = tfds.core.Version('1.0.0')

      def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                'clip': tfds.features.Tensor(shape=(6, 16, 16, 1), dtype=np.uint8),
                'label': tfds.features.ClassLabel(names=['a', 'b', 'c'])}),
            metadata=tfds.core.MetadataDict())

      def _split_generators(self, dl_manager):
        self.info.metadata.update(num_frames=6, frame_shape=[16, 16, 1])
        return {'train': self._generate_examples(0, 24), 'test': self._generate_examples(1, 7)}

      def _generate_examples(self, seed, n):
        rng = np.random.default_rng(seed)
        for i in range(n):
          yield i, {'clip': rng.integers(0, 256, (6, 16, 16, 1), dtype=np.uint8), 'label': i % 3}
''')


@pytest.fixture(scope='module')
def own_builder_module(tmp_path_factory):
  """The user's package on sys.path (imported once: TFDS registers a builder name only once)."""
  root = tmp_path_factory.mktemp('user_code')
  package = root / 'my_datasets'  # TFDS builders must live in a package.
  package.mkdir()
  (package / '__init__.py').write_text('')
  (package / 'my_clips.py').write_text(OWN_BUILDER)
  sys.path.insert(0, str(root))
  yield 'my_datasets.my_clips'
  sys.path.remove(str(root))


def own_config(tmp_path, module):
  config = video.get_config('smoke')
  config.dataset.update(name='my_clips', builder_module=module, data_dir=str(tmp_path / 'data'))
  config.model.update(frame_shape=None, num_frames=None, num_classes=None)
  return config


def test_own_builder_is_prepared_and_feeds_the_model(tmp_path, own_builder_module):
  config = own_config(tmp_path, own_builder_module)
  info = data.load_info(config)
  assert (info.num_train_examples, info.num_eval_examples, info.num_classes) == (24, 7, 3)
  assert (tuple(config.model.frame_shape), config.model.num_frames) == ((16, 16, 1), 6)
  batch = next(data.create_train_iterator(config, process_index=0, process_count=1))
  assert batch['clip'].shape == (8, 6, 16, 16, 1) and batch['label'].shape == (8,)
  model = models.create_model(config)
  logits = model.apply(model.init(jax.random.key(0), batch), batch)
  assert logits.shape == (8, 3) and np.all(np.isfinite(logits))
  eval_rows = sum(int(b['mask'].sum()) for b in data.create_eval_batches(config, process_index=0,
                                                                          process_count=1))
  assert eval_rows == 7


def test_own_builder_errors_are_one_line(tmp_path, own_builder_module):
  config = own_config(tmp_path, 'no_such_module_here')
  with pytest.raises(data.DataError, match='builder_module') as error:
    data.load_info(config)
  assert '\n' not in str(error.value)
  config = own_config(tmp_path, own_builder_module)
  config.dataset.name = 'my_clipz'
  with pytest.raises(data.DataError, match='defines no dataset') as error:
    data.load_info(config)
  assert '\n' not in str(error.value)
