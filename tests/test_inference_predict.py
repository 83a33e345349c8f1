"""hybrid_jax.load(...).predict on raw inputs: it reproduces --mode=eval, needs no dataset, and
refuses bad runs and bad inputs with one line (API and the predict CLI).

Runs train on 4 fake CPU devices (conftest.py) and are predicted on 1.
"""

import json
import logging
import os
import shutil

from absl import logging as absl_logging
import jax
import ml_collections
import numpy as np
import pytest

import hybrid_jax
from configs import sensor
from configs import text
from configs import video
from hybrid_jax import inference
from hybrid_jax import orbax_logs
from hybrid_jax import raw_inputs
from hybrid_jax import train
from hybrid_jax.data import datasets
from hybrid_jax.data import pipeline
from hybrid_jax.data import shipped
from hybrid_jax.data import text_vocab
from hybrid_jax.data.builders import text_builder
from hybrid_jax.errors import CheckpointError, InputError
import cli_runner

CONFIGS = {
  'moving_digits/tiny': video,
  'bbc_news/tiny': text,
  'tweet_sentiment/tiny': text,
  'weather_stations/tiny': sensor,
}

pytestmark = [
  pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning'),
  pytest.mark.filterwarnings('ignore:coroutine .* was never awaited:RuntimeWarning'),
]


def _config(name, data_dir, **overrides):
  config = CONFIGS[name].get_config('smoke')
  config.dataset.name = name
  config.dataset.data_dir = data_dir
  for key, value in overrides.items():
    config[key] = value
  return config


def _raw_test_examples(config):
  """(raw inputs, labels or targets) of the test split, as a user would have them.

  Text: the original strings, re-read from the builder's source package and selected exactly as
  the builder selects its test split (md5 split, first per class); clips and windows: the stored
  arrays (uint8 clips; windows and targets in original units).
  """
  builder = datasets.resolve(config).builder
  if config.task == 'text':
    # pylint: disable=protected-access
    rows = [r for r in builder._load() if text_vocab.split_of(r[1]) == 'test']
    per_class = builder.builder_config.per_class
    if per_class is not None:
      rows = text_builder._first_per_class(rows, per_class // 2)  # pylint: disable=protected-access
    names = builder.info.features['label'].names
    return [r[1] for r in rows], np.array([names.index(r[2]) for r in rows])
  source = builder.as_data_source(split='test')
  records = [source[i] for i in range(len(source))]
  key, answer = ('clip', 'label') if config.task == 'video' else ('window', 'target')
  return np.stack([r[key] for r in records]), np.array([r[answer] for r in records])


def _eval_inputs(config):
  """The eval pipeline's model inputs (every example once), to compare with `preprocess`."""
  parts = []
  for batch in pipeline.create_eval_batches(
    datasets.resolve(config), process_index=0, process_count=1
  ):
    mask = batch['mask']
    parts.append({k: v[mask] for k, v in batch.items() if k not in ('mask', 'label', 'target')})
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _sorted_rows(batch):
  """Text batches in a canonical row order (the raw texts come in another order than the split)."""
  rows = np.concatenate([batch['tokens'], batch['length'][:, None]], axis=1)
  return rows[np.lexsort(rows.T[::-1])]


@pytest.mark.parametrize('name', ['moving_digits/tiny', 'bbc_news/tiny', 'weather_stations/tiny'])
def test_raw_predictions_reproduce_eval_without_the_data(name, tiny_data_dir, tmp_path):
  # A private copy of the prepared data, deleted before predicting.
  data_dir = str(tmp_path / 'tfds')
  shutil.copytree(
    os.path.join(tiny_data_dir, shipped.base_name(name)),
    os.path.join(data_dir, shipped.base_name(name)),
  )
  steps = 4 if name.startswith('moving') else 12
  config = _config(
    name,
    data_dir,
    num_train_steps=steps,
    eval_every_steps=steps // 2,
    checkpoint_every_steps=steps // 2,
  )
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)  # 4 devices; best checkpoint chosen on validation.
  config.dataset.eval_split = 'test'
  evaluated = train.evaluate(config, workdir, checkpoint='best')  # --mode=eval --split=test.
  raw, answers = _raw_test_examples(config)
  expected_inputs = _eval_inputs(config)

  shutil.rmtree(data_dir)
  moved = str(tmp_path / 'elsewhere' / 'run')
  os.renames(workdir, moved)
  model = hybrid_jax.load(moved, checkpoint='best', devices=jax.devices()[:1])
  assert model.step == evaluated['step'] and model.devices == (jax.devices()[0],)

  # The raw inputs become exactly the model inputs that the eval pipeline made.
  inputs = model.preprocess(raw)
  assert set(inputs) == set(expected_inputs)
  if config.task == 'text':
    np.testing.assert_array_equal(_sorted_rows(inputs), _sorted_rows(expected_inputs))
  else:
    for key, value in expected_inputs.items():
      assert inputs[key].dtype == value.dtype
      np.testing.assert_array_equal(inputs[key], value)

  out = model.predict(raw, batch_size=8)
  assert len(out) == evaluated['num_examples'] == len(answers)
  if config.task == 'sensor':
    error = out.values - answers.astype(np.float64)  # Original units (°F).
    assert np.mean(np.abs(error)) == pytest.approx(evaluated['mae_original_units'], rel=1e-6)
    assert np.sqrt(np.mean(error**2)) == pytest.approx(evaluated['rmse_original_units'], rel=1e-6)
  else:
    assert np.sum(out.label_ids == answers) / len(answers) == evaluated['accuracy']  # Exactly.
    confusion = np.zeros_like(np.array(evaluated['confusion']))
    np.add.at(confusion, (answers, out.label_ids), 1)
    assert confusion.tolist() == evaluated['confusion']
    log_p = out.logits - jax.scipy.special.logsumexp(out.logits, axis=-1, keepdims=True)
    loss = -np.mean(np.take_along_axis(np.asarray(log_p), answers[:, None], 1))
    assert loss == pytest.approx(evaluated['loss'], rel=1e-5)
    np.testing.assert_allclose(out.probabilities.sum(-1), 1, rtol=1e-5)
    assert out.labels == [model.label_names[i] for i in out.label_ids]
    if 'top_5_accuracy' in evaluated:
      top5 = np.argsort(-out.logits, axis=-1)[:, :5]
      assert np.mean(np.any(top5 == answers[:, None], -1)) == evaluated['top_5_accuracy']

  # Another call of the same batch size, with fewer inputs, reuses the compiled function.
  again = model.predict(raw[:3], batch_size=8)
  assert model.num_traces == 1
  np.testing.assert_array_equal(
    *((again.values, out.values[:3]) if config.task == 'sensor' else (again.logits, out.logits[:3]))
  )
  # The same run on all 4 devices (the batch split over them) predicts the same.
  four = hybrid_jax.load(moved, checkpoint='best').predict(raw, batch_size=8)
  assert len(four) == len(out)
  if config.task == 'sensor':
    np.testing.assert_allclose(four.values, out.values, rtol=1e-5)
  else:
    np.testing.assert_allclose(four.probabilities, out.probabilities, atol=1e-6)


@pytest.fixture(scope='module')
def text_run(tiny_data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('inference') / 'text')
  config = _config('tweet_sentiment/tiny', tiny_data_dir)
  config.model.num_classes = None  # 3 sentiments, from the data.
  train.train_and_evaluate(config, workdir)
  return workdir


def test_embed_zeroed_branch_and_head(text_run):
  model = hybrid_jax.load(text_run, checkpoint='latest')
  texts = ['@ana this is GREAT!!! http://x.co', 'worst day ever?', 'ok', '']
  assert model.label_names == ('negative', 'neutral', 'positive')
  assert model.branch_names == ('cnn', 'lstm')
  features = model.embed(texts)
  assert {k: v.shape for k, v in features.items()} == {'cnn': (4, 128), 'lstm': (4, 64)}
  out = model.predict(texts)
  np.testing.assert_allclose(model.apply_head(features).logits, out.logits, atol=1e-5)
  no_lstm = model.predict(texts, zero_branches=('lstm',))
  by_head = model.apply_head({'cnn': features['cnn'], 'lstm': np.zeros_like(features['lstm'])})
  np.testing.assert_allclose(no_lstm.logits, by_head.logits, atol=1e-5)
  assert np.abs(no_lstm.logits - out.logits).max() > 1e-6  # The LSTM's features did count.
  # A run is self-describing: its spec holds the vocabulary (first vocab_size words) and shapes.
  spec = inference.read_spec(text_run)
  assert spec['input']['metadata']['vocab'][:2] == [text_vocab.PAD_TOKEN, text_vocab.OOV_TOKEN]
  assert spec['config']['model']['max_length'] == model.config.model.max_length
  with pytest.raises(InputError, match=r"branches are \['cnn', 'lstm'\]"):
    model.predict(texts, zero_branches=('gru',))
  with pytest.raises(InputError, match="head reads"):
    model.apply_head({'cnn': features['cnn']})


def test_load_drops_orbax_warnings_only_while_it_runs(text_run, caplog, monkeypatch):
  absl_logger = absl_logging.get_absl_logger()
  # Without the command lines' process-wide filter, whatever an earlier test installed.
  monkeypatch.setattr(
    absl_logger,
    'filters',
    [f for f in absl_logger.filters if not isinstance(f, orbax_logs.ExpectedWarnings)],
  )
  before = list(absl_logger.filters)
  with caplog.at_level(logging.WARNING):
    hybrid_jax.load(text_run, checkpoint='latest')
  expected = [
    r.getMessage()
    for r in caplog.records
    if r.getMessage().startswith(orbax_logs.EXPECTED_WARNINGS)
  ]
  assert expected == []
  assert absl_logger.filters == before
  with pytest.raises(CheckpointError), orbax_logs.quiet():
    raise CheckpointError('refused')
  assert absl_logger.filters == before


def _one_line(error) -> str:
  message = str(error.value)
  assert '\n' not in message and len(message) < 600, message
  return message


def _rewrite_spec(workdir, edit, fix_checksum=True):
  path = os.path.join(workdir, inference.SPEC_FILE)
  with open(path, encoding='utf-8') as f:
    spec = json.load(f)
  edit(spec)
  if fix_checksum:
    spec['sha256'] = inference._checksum(spec)  # pylint: disable=protected-access
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(spec, f)


def test_bad_runs_are_one_line_checkpoint_errors(tiny_data_dir, tmp_path):
  config = _config('weather_stations/tiny', tiny_data_dir)
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)

  def copy(name):
    shutil.copytree(workdir, str(tmp_path / name))
    return str(tmp_path / name)

  with pytest.raises(CheckpointError, match='No run directory') as e:
    hybrid_jax.load(str(tmp_path / 'nowhere'))
  _one_line(e)
  with pytest.raises(CheckpointError, match='saved steps are') as e:
    hybrid_jax.load(workdir, checkpoint=3)
  _one_line(e)
  no_checkpoints = copy('no_checkpoints')
  shutil.rmtree(os.path.join(no_checkpoints, 'checkpoints'))
  with pytest.raises(CheckpointError, match='train first') as e:
    hybrid_jax.load(no_checkpoints)
  _one_line(e)
  newer = copy('newer')
  _rewrite_spec(newer, lambda s: s.update(version=inference.VERSION + 1))
  with pytest.raises(CheckpointError, match='newer hybrid_jax') as e:
    hybrid_jax.load(newer)
  _one_line(e)
  edited = copy('edited')
  _rewrite_spec(edited, lambda s: s['head'].update(target_mean=0.0), fix_checksum=False)
  with pytest.raises(CheckpointError, match='checksum') as e:
    hybrid_jax.load(edited)
  _one_line(e)
  mixed = copy('mixed')  # An inference.json describing another model than the checkpoints hold.
  _rewrite_spec(mixed, lambda s: s['config']['model'].update(lstm_units=8))
  with pytest.raises(
    CheckpointError, match=r'was trained with other settings \(model.lstm_units: 32 -> 8\)'
  ) as e:
    hybrid_jax.load(mixed)
  _one_line(e)
  os.remove(os.path.join(copy('old'), inference.SPEC_FILE))
  with pytest.raises(CheckpointError, match='inference.json is missing') as e:
    hybrid_jax.load(str(tmp_path / 'old'))
  _one_line(e)

  model = hybrid_jax.load(workdir, devices=jax.devices()[:1])
  window = np.zeros((24, 3, 5), np.float32)
  bad_inputs = {
    'a batch of': window,  # One window without the batch axis.
    r'Input 1 has shape \(20, 3, 5\)': [window, window[:20]],
    'dtype <U': [np.full((24, 3, 5), 'x')],
    'NaN or inf': [np.full((24, 3, 5), np.nan)],
    'No inputs': [],
    'single string': 'a window',
  }
  for message, inputs in bad_inputs.items():
    with pytest.raises(InputError, match=message) as e:
      model.predict(inputs)
    _one_line(e)


def _raw(task, metadata=None, resample=False, **model):
  config = ml_collections.ConfigDict({'task': task, 'model': model})
  return raw_inputs.RawInputs(
    task,
    config,
    {'tokenizer': raw_inputs.TOKENIZER, 'metadata': metadata or {}, 'resample': resample},
  )


def test_raw_input_kinds_check_and_pad():
  clips_raw = _raw('video', num_frames=4, frame_shape=(8, 8, 1))
  clips = np.random.default_rng(0).integers(0, 256, (2, 4, 8, 8, 1))
  batch = clips_raw.batch(clips)  # int64 pixels 0..255 cast like training.
  assert batch['clip'].dtype == np.uint8 and batch['clip'].shape == (2, 4, 8, 8, 1)
  np.testing.assert_array_equal(batch['clip'], clips)
  np.testing.assert_array_equal(clips_raw.batch(clips / 255.0)['clip'], clips)  # Floats: [0, 1].
  for message, inputs in {
    r'values in \[0, 255\]; float': clips * 1.0,
    r'pixel values in \[300, 300\]': clips * 0 + 300,
    r'Input 0 has shape \(4, 8, 8, 3\)': np.zeros((1, 4, 8, 8, 3), np.uint8),
    'x\\[None\\]': clips[0],
  }.items():
    with pytest.raises(InputError, match=message):
      clips_raw.batch(inputs)
  # A catalog run resampled its clips in training: any clip size is resampled the same way.
  resampled = _raw('video', resample=True, num_frames=2, frame_shape=(4, 4, 1)).batch(clips)
  assert resampled['clip'].shape == (2, 2, 4, 4, 1)

  text_raw = _raw('text', {'vocab': ['<pad>', '<oov>', 'the', 'cat']}, vocab_size=4, max_length=3)
  batch = text_raw.batch(['The cat the cat', 'a dog', ''])
  np.testing.assert_array_equal(batch['tokens'], [[2, 3, 2], [1, 1, 0], [1, 0, 0]])
  np.testing.assert_array_equal(batch['length'], [3, 2, 1])
  with pytest.raises(InputError, match='Input 1 is a int'):
    text_raw.batch(['ok', 3])

  # A variable-length sensor model (global_max pooling): padded to window_shape[0] + 'length'.
  stats = {'feature_mean': [[1.0], [0.0]], 'feature_std': [[2.0], [1.0]]}
  series_raw = _raw('sensor', stats, window_shape=(8, 2, 1), pooling='global_max')
  batch = series_raw.batch([np.ones((3, 2, 1)), np.ones((5, 2, 1))])
  assert batch['window'].shape == (2, 8, 2, 1)
  np.testing.assert_array_equal(batch['length'], [3, 5])
  np.testing.assert_array_equal(batch['window'][0, :3, :, 0], [[0, 1]] * 3)
  assert not batch['window'][0, 3:].any()
  fixed_raw = _raw('sensor', stats, window_shape=(8, 2, 1), pooling='flatten')
  with pytest.raises(
    InputError, match=r'Input 0 has shape \(3, 2, 1\); this model takes series \(8, 2, 1\)'
  ):
    fixed_raw.batch([np.ones((3, 2, 1))])


def _predict_cli(args, stdin=None):
  return cli_runner.run(['-m', 'hybrid_jax.predict', *args], devices=1, stdin=stdin)


def test_predict_cli(text_run, tmp_path):
  texts = ['What a lovely morning!', 'I hate waiting in line', '', 'meh']
  path = tmp_path / 'texts.txt'
  path.write_text('\n'.join(texts) + '\n', encoding='utf-8')
  done = _predict_cli([f'--workdir={text_run}', f'--input={path}', '--checkpoint=latest'])
  assert done.returncode == 0, done.stderr[-3000:]
  rows = [json.loads(line) for line in done.stdout.splitlines()]
  expected = hybrid_jax.load(text_run, checkpoint='latest').predict([t for t in texts if t])
  assert [r['line'] for r in rows] == [1, 2, 4]  # Blank lines are skipped, lines keep numbers.
  assert [r['label'] for r in rows] == expected.labels
  np.testing.assert_allclose(
    [list(r['probabilities'].values()) for r in rows], expected.probabilities, atol=1e-6
  )

  empty = _predict_cli([f'--workdir={text_run}', '--input=-'], stdin='\n')
  assert empty.returncode != 0 and 'Traceback' not in empty.stderr
  assert (
    empty.stderr.strip().splitlines()[-1] == 'error: stdin has no text: give one text per line.'
  )


@pytest.mark.parametrize('task', ['text', 'video'])
def test_catalog_runs_describe_their_inputs(task, tmp_path, own_catalog_vocab):
  """imdb_reviews / ucf101 (mock data): the spec turns raw catalog inputs into the eval inputs."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from hybrid_jax.data import catalog  # pylint: disable=g-import-not-at-top

  config = (text if task == 'text' else video).get_config('smoke')
  config.dataset.data_dir = str(tmp_path)
  if task == 'text':
    config.dataset.name, key = 'imdb_reviews', 'text'
    config.model.num_classes, config.model.vocab_size = None, 30
  else:
    config.dataset.name, key = 'ucf101', 'video'
    config.model.num_classes, config.model.frame_shape, config.model.num_frames = (
      101,
      (16, 16, 1),
      3,
    )
  # 20 mock texts hold more than 30 distinct words: the spec's vocabulary is cut to vocab_size.
  with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
    source = datasets.resolve(config)
    config = source.config
    spec = inference.build_spec(source)
    records = source.builder.as_data_source(split='test')
    raw = [records[i][key] for i in range(len(records))]
    expected = _eval_inputs(config)
  if task == 'text':
    raw = [catalog._as_str(r) for r in raw]  # pylint: disable=protected-access
    assert len(spec['input']['metadata']['vocab']) == 30
  else:
    assert spec['input']['resample'] and raw[0].shape[1:] != (16, 16, 1)
  batch = raw_inputs.RawInputs(task, config, spec['input']).batch(raw)
  for name, value in expected.items():
    np.testing.assert_array_equal(batch[name], value)


def test_predict_cli_reads_files_and_writes_csv(tmp_path):
  import io  # pylint: disable=g-import-not-at-top
  from hybrid_jax import predict  # pylint: disable=g-import-not-at-top  (defines no flags)

  windows = np.arange(2 * 4 * 3 * 1, dtype=np.float32).reshape(2, 4, 3, 1)
  np.save(tmp_path / 'batch.npy', windows)
  np.save(tmp_path / 'one.npy', windows[0])
  np.savez(tmp_path / 'named.npz', a=windows[0], b=windows)
  inputs, ids = predict.read_inputs(str(tmp_path / 'batch.npy'), 'sensor')
  assert len(inputs) == 2 and ids == [('index', 0), ('index', 1)]
  np.testing.assert_array_equal(inputs[1], windows[1])
  inputs, ids = predict.read_inputs(str(tmp_path / 'one.npy'), 'sensor')  # One example.
  assert len(inputs) == 1 and inputs[0].shape == (4, 3, 1)
  inputs, ids = predict.read_inputs(str(tmp_path / 'named.npz'), 'sensor')
  assert [i for _, i in ids] == ['a', 'b[0]', 'b[1]'] and len(inputs) == 3
  (tmp_path / 'empty.npy').write_bytes(b'')
  (tmp_path / 'text.npy').write_text('not numpy')
  for name, message in {
    'empty.npy': 'is empty',
    'text.npy': 'not a .npy or .npz',
    'missing.npy': 'Cannot read',
  }.items():
    with pytest.raises(InputError, match=message) as e:
      predict.read_inputs(str(tmp_path / name), 'video')
    _one_line(e)
  out = io.StringIO()
  rows = [{'label': 'b', 'probabilities': {'a': 0.25, 'b': 0.75}}]
  predict.write_rows(rows, [('line', 3)], ('a', 'b'), 'csv', out)
  assert out.getvalue() == 'line,label,p_a,p_b\n3,b,0.25,0.75\n'
