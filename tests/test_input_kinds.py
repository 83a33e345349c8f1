"""Input kind x head: sensor classification, variable-length series, the registry, one-line errors."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from configs import japanese_vowels
from configs import sensor
from configs import text
from configs import video
from hybrid_jax import input_kinds
from hybrid_jax.data import datasets
from hybrid_jax.data import decoders
from hybrid_jax.data import pipeline
from hybrid_jax import train
from hybrid_jax.errors import DataError
from hybrid_jax.errors import InputError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def count_params(params):
  return sum(leaf.size for leaf in jax.tree.leaves(params))


def _sensor_config(pooling='flatten', head='', window_shape=(20, 4, 1), num_classes=None, **model):
  config = sensor.get_config()
  config.head = head
  config.model.update(window_shape=window_shape, pooling=pooling, num_classes=num_classes, **model)
  return config


def test_reference_sensor_model_and_its_classification_variant_differ_only_in_the_head():
  regression = _sensor_config(head='regression')
  classification = _sensor_config(head='classification', num_classes=9)
  counts = {}
  for name, config in (('regression', regression), ('classification', classification)):
    model = input_kinds.create_model(config)
    variables = jax.eval_shape(model.init, jax.random.key(0), input_kinds.dummy_batch(config))
    counts[name] = count_params(variables['params'])
    outputs = jax.eval_shape(model.apply, variables, input_kinds.dummy_batch(config, 3))
    assert outputs.shape == ((3,) if name == 'regression' else (3, 9))
  assert counts['regression'] == 6_241  # Conv1D64 || LSTM(32) -> Dense(1), as the Keras reference.
  fused = 10 * 64 + 32  # Flatten(10 pooled steps x 64) + LSTM(32).
  assert counts['classification'] == 6_241 - (fused + 1) + (fused * 9 + 9)


@pytest.mark.parametrize('pooling', ['flatten', 'global_max'])
@pytest.mark.parametrize('head', ['regression', 'classification'])
@pytest.mark.parametrize('branches', ['both', 'cnn', 'lstm'])
def test_padding_never_changes_a_series_output(pooling, head, branches):
  rng = np.random.default_rng(0)
  lengths = np.array([7, 13, 1, 29], np.int32)
  series = [rng.normal(size=(n, 12)).astype(np.float32) for n in lengths]
  config = _sensor_config(pooling, head, window_shape=(29, 12), num_classes=5, branches=branches)
  model = input_kinds.create_model(config)
  variables = model.init(jax.random.key(0), input_kinds.dummy_batch(config))

  def padded(time, fill):
    window = np.full((len(series), time, 12), fill, np.float32)
    for i, s in enumerate(series):
      window[i, : len(s)] = s
    return {'window': window, 'length': lengths}

  reference = model.apply(variables, padded(29, 0.0))
  np.testing.assert_allclose(
    model.apply(variables, padded(29, 7.5)), reference, rtol=1e-6, atol=1e-6
  )
  if pooling == 'global_max':  # Any time length: the same series with 0 and with 20 padded steps.
    for i, s in enumerate(series):
      alone = model.apply(variables, {'window': s[None], 'length': lengths[i : i + 1]})
      with_20 = model.apply(
        variables, {'window': np.pad(s, ((0, 20), (0, 0)))[None], 'length': lengths[i : i + 1]}
      )
      np.testing.assert_allclose(alone, with_20, rtol=1e-6, atol=1e-6)
      np.testing.assert_allclose(alone[0], reference[i], rtol=1e-5, atol=1e-5)


def test_full_length_series_give_the_reference_outputs():
  """'length' = time everywhere (what fixed-length datasets carry) changes nothing but rounding.

  Without lengths the LSTM's scan skips its padding select, which XLA may fuse differently.
  """
  config = _sensor_config(head='regression')
  model = input_kinds.create_model(config)
  batch = input_kinds.dummy_batch(config, 4)
  batch['window'] = np.random.default_rng(1).normal(size=batch['window'].shape).astype(np.float32)
  variables = model.init(jax.random.key(0), batch)
  without = model.apply(variables, {'window': batch['window']})
  np.testing.assert_allclose(model.apply(variables, batch), without, rtol=1e-6, atol=1e-7)
  short = dict(batch, length=np.full_like(batch['length'], 5))
  assert not np.allclose(model.apply(variables, short), without, atol=1e-3)  # The test can fail.


def test_decoders_turn_raw_inputs_into_model_examples():
  decode = decoders.SensorDecoder((5, 2), mean=[1.0, 2.0], std=[2.0, 4.0])
  example = decode.inputs([[3.0, 6.0], [1.0, 2.0]])
  np.testing.assert_array_equal(example['window'], [[1, 1], [0, 0], [0, 0], [0, 0], [0, 0]])
  assert example['length'] == 2
  assert decode.inputs(np.ones((9, 2)))['length'] == 5  # Longer series are cut at window_shape[0].
  with pytest.raises(InputError, match='series must be'):
    decode.inputs(np.ones((3, 4)))
  words = decoders.TextDecoder(vocab_size=10, max_length=4, vocab=['<pad>', '<oov>', 'good', 'day'])
  example = words.inputs('Good day, sunshine')
  np.testing.assert_array_equal(example['tokens'], [2, 3, 1, 0])
  assert example['length'] == 3
  clip = decoders.VideoDecoder(2, (4, 4, 1)).inputs(np.zeros((5, 8, 8, 3), np.uint8))
  assert clip['clip'].shape == (2, 4, 4, 1) and clip['clip'].dtype == np.uint8
  batch = decoders.collate([example, example])
  assert batch['tokens'].shape == (2, 4)


def test_every_input_kind_declares_what_the_code_needs():
  for name, kind in input_kinds.INPUT_KINDS.items():
    config = {'video': video, 'text': text, 'sensor': sensor}[name].get_config()
    batch = input_kinds.dummy_batch(config, 3)
    assert set(batch) <= set(kind.batch_keys)
    assert all(batch[k].dtype == kind.batch_keys[k] for k in batch)
    assert os.path.exists(os.path.join(REPO, kind.config_file))
  # No data read: the kind's default.
  assert input_kinds.head(sensor.get_config()).name == 'regression'
  assert input_kinds.head(video.get_config()).name == 'classification'


def _jv_config(data_dir, **overrides):
  config = japanese_vowels.get_config('smoke')
  config.dataset.update(name='japanese_vowels/tiny', data_dir=data_dir)
  config.update(overrides)
  return config


def test_japanese_vowels_resolves_to_variable_length_classification(tiny_data_dir):
  source = datasets.resolve(_jv_config(tiny_data_dir))
  config, info = source.config, source.info
  assert (info.task, info.head, config.head, info.num_classes) == (
    'sensor',
    'classification',
    'classification',
    9,
  )
  assert tuple(config.model.window_shape) == (29, 12) and config.model.num_classes == 9
  # 2 train, 1 validation / speaker.
  assert (info.num_train_examples, info.num_eval_examples) == (18, 9)
  batch = next(pipeline.create_train_iterator(source, process_index=0, process_count=1))
  assert batch['window'].shape == (8, 29, 12) and batch['label'].dtype == np.int32
  assert 7 <= batch['length'].min() and batch['length'].max() <= 29
  for window, length in zip(batch['window'], batch['length']):
    assert not window[length:].any() and window[length - 1].any()  # Zero padding after the series.


def test_a_head_the_data_cannot_supervise_is_a_one_line_error(tiny_data_dir):
  with pytest.raises(DataError, match="no 'target' feature for config.head='regression'") as error:
    datasets.resolve(_jv_config(tiny_data_dir, head='regression'))
  assert '\n' not in str(error.value)
  config = sensor.get_config('smoke')
  config.dataset.update(name='weather_stations/tiny', data_dir=tiny_data_dir)
  config.head = 'classification'
  with pytest.raises(DataError, match="no 'label' feature"):
    datasets.resolve(config)


def test_resume_of_sensor_classification_is_bit_identical(tiny_data_dir, tmp_path):
  straight = _jv_config(
    tiny_data_dir, num_train_steps=6, checkpoint_every_steps=3, eval_every_steps=3
  )
  first_half = _jv_config(
    tiny_data_dir, num_train_steps=3, checkpoint_every_steps=3, eval_every_steps=3
  )
  final = train.train_and_evaluate(straight, str(tmp_path / 'straight'))
  train.train_and_evaluate(first_half, str(tmp_path / 'resumed'))  # Stops (and saves) at step 3 ...
  resumed = train.train_and_evaluate(straight, str(tmp_path / 'resumed'))  # ... continues to 6.
  assert resumed == final
  states = [
    train.evaluate(straight, str(tmp_path / d), checkpoint='6') for d in ('straight', 'resumed')
  ]
  assert states[0]['confusion'] == states[1]['confusion'] and states[0]['loss'] == states[1]['loss']


# A user's own sensor builder: a ClassLabel and series of different lengths (as in the README).
OWN_SENSOR_BUILDER = textwrap.dedent('''
    import numpy as np
    import tensorflow_datasets as tfds

    class MyGestures(tfds.core.GeneratorBasedBuilder):
      VERSION = tfds.core.Version('1.0.0')

      def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                'window': tfds.features.Tensor(shape=(None, 3), dtype=np.float32),
                'label': tfds.features.ClassLabel(names=['wave', 'shake'])}),
            metadata=tfds.core.MetadataDict())

      def _split_generators(self, dl_manager):
        self.info.metadata.update(window_shape=[16, 3])  # The longest series, 3 channels.
        return {'train': self._generate_examples(0, 32), 'validation': self._generate_examples(1, 9),
                'test': self._generate_examples(2, 9)}

      def _generate_examples(self, seed, n):
        rng = np.random.default_rng(seed)
        for i in range(n):
          length = int(rng.integers(4, 17))
          yield i, {'window': (rng.normal(size=(length, 3)) + i % 2).astype(np.float32), 'label': i % 2}
''')


def test_own_variable_length_sensor_builder_trains_through_the_cli(tmp_path):
  package = tmp_path / 'user_code' / 'my_sensors'
  package.mkdir(parents=True)
  (package / '__init__.py').write_text('')
  (package / 'my_gestures.py').write_text(OWN_SENSOR_BUILDER)
  env = dict(
    os.environ,
    JAX_PLATFORMS='cpu',
    PYTHONPATH=str(tmp_path / 'user_code'),
    XLA_FLAGS='--xla_force_host_platform_device_count=1',
  )
  command = [
    sys.executable,
    '-m',
    'hybrid_jax.main',
    '--config=configs/sensor.py:smoke',
    '--config.dataset.builder_module=my_sensors.my_gestures',
    '--config.dataset.name=my_gestures',
    '--config.model.window_shape=None',
    '--config.model.pooling=global_max',
    f'--config.dataset.data_dir={tmp_path / "data"}',
    f'--workdir={tmp_path / "run"}',
  ]
  result = subprocess.run(
    command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert '[final eval] step 4' in result.stdout and 'accuracy' in result.stdout
  with open(tmp_path / 'run' / 'config.json', encoding='utf-8') as f:
    saved = f.read()
  assert '"head": "classification"' in saved and '"num_classes": 2' in saved
