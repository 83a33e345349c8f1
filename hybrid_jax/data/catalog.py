"""TFDS catalog datasets (e.g. ucf101, imdb_reviews) mapped onto the same model inputs.

The dataset must already be prepared in `data_dir` in the array_record format (the machines this
code targets cannot download it), e.g. on a machine with internet:
  tfds build imdb_reviews --data_dir=/data/tfds --file_format=array_record
The task is read from the features: a `Video` feature + `ClassLabel` -> video; a `Text` feature +
`ClassLabel` -> text. Video clips are sampled to `num_frames` evenly spaced frames and resized
(nearest) to `frame_shape`; text is tokenized with `text_vocab` and a vocabulary built from the
train split on first use, saved next to the prepared data as `hybrid_jax_vocab.json`.
"""

import importlib
import importlib.util
import json
import os
import types
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from hybrid_jax.data import text_vocab

VOCAB_FILE = 'hybrid_jax_vocab.json'


def _allow_video_without_tensorflow() -> None:
  """tfds.features.Video calls tf.dtypes.as_dtype in its constructor only; give it numpy's instead.

  Everything else a prepared Video dataset needs to decode (PNG/JPEG frames via OpenCV or PIL) works
  without TensorFlow; with TensorFlow installed nothing is changed.
  """
  if importlib.util.find_spec('tensorflow') is not None:
    return
  from tensorflow_datasets.core.features import video_feature  # pylint: disable=g-import-not-at-top
  video_feature.tf = types.SimpleNamespace(dtypes=types.SimpleNamespace(as_dtype=np.dtype))


def open_builder(name: str, data_dir: str | None, error_cls) -> tuple[tfds.core.DatasetBuilder, 'CatalogAdapter']:
  """The prepared catalog builder and its adapter; `error_cls` one-liners for every failure."""
  _allow_video_without_tensorflow()
  for family in ('video', 'text'):  # Legacy catalog modules register their builders on import.
    importlib.import_module(f'tensorflow_datasets.{family}')
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise error_cls(
        f'Unknown dataset {name!r}: use moving_digits, bbc_news, tweet_sentiment or weather_stations '
        "(add '/tiny' for the test builds), or a TFDS catalog name prepared in data_dir.") from None
  except ModuleNotFoundError as e:
    raise error_cls(f'TFDS dataset {name!r} cannot be opened without {e.name}: pip install {e.name}.') from None
  not_prepared = error_cls(
      f'TFDS dataset {name!r} is not prepared in {builder.data_dir_root} and cannot be downloaded here: '
      f'run `tfds build {name} --data_dir=DIR --file_format=array_record` on a machine with internet, '
      f'copy DIR here and set --config.dataset.data_dir=DIR.')
  try:  # (Under tfds.testing.mock_data an unprepared builder still yields a data source.)
    builder.as_data_source(split=next(iter(builder.info.splits), 'train'))
  except (AssertionError, FileNotFoundError):
    raise not_prepared from None
  except (NotImplementedError, ValueError) as e:
    if not builder.is_prepared():
      raise not_prepared from None
    raise error_cls(f'TFDS dataset {name!r} in {builder.data_dir} is not in array_record format: convert it '
                    f'with `tfds convert_format --dataset_dir={builder.data_dir} --out_file_format=array_record` '
                    f'({str(e).splitlines()[0]}).') from None
  return builder, CatalogAdapter(builder, error_cls)


class CatalogAdapter:
  """Which features of a catalog dataset feed which model inputs."""

  def __init__(self, builder: tfds.core.DatasetBuilder, error_cls):
    self.builder = builder
    features = builder.info.features
    labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    videos = [k for k, f in features.items() if isinstance(f, tfds.features.Video)]
    texts = [k for k, f in features.items() if isinstance(f, tfds.features.Text)]
    if not labels or not (videos or texts):
      raise error_cls(f'{builder.name}: only catalog datasets with a ClassLabel and a Video or Text feature '
                      f'map onto hybrid_jax models (features: {sorted(features)}); write a builder instead.')
    self.label_key = 'label' if 'label' in labels else labels[0]
    self.task = 'video' if videos else 'text'
    self.input_key = (videos or texts)[0]
    self.label_names = tuple(features[self.label_key].names)
    self.vocab: list[str] | None = None
    self.length_p95 = None

  def data_info(self, config, num_train: int, num_eval: int, info_cls):
    """DataInfo; only num_classes is enforced, shapes are the config's (resampled/resized to it)."""
    return info_cls(
        name=config.dataset.name, task=self.task, num_train_examples=num_train, num_eval_examples=num_eval,
        num_classes=len(self.label_names), target_mean=None, target_std=None,
        baselines={'chance_accuracy': 1 / len(self.label_names)}, label_names=self.label_names)

  def fill_defaults(self, config) -> None:
    """Fills None input-shape fields of config.model from the data."""
    model = config.model
    if self.task == 'video':
      frame_shape = self.builder.info.features[self.input_key].shape[1:]
      if model.get('frame_shape') is None and None not in frame_shape:
        model.frame_shape = tuple(frame_shape)
    else:
      self.load_vocab(config.dataset.train_split)
      if model.get('vocab_size') is None:
        model.vocab_size = len(self.vocab)
      if model.get('max_length') is None:
        model.max_length = self.length_p95

  def load_vocab(self, train_split: str) -> None:
    """Reads, or builds from `train_split` and saves, the word vocabulary (PAD=0, OOV=1)."""
    path = os.path.join(self.builder.data_dir, VOCAB_FILE)
    if not os.path.exists(path):
      source = self.builder.as_data_source(split=train_split)
      tokens = [text_vocab.tokenize(_as_str(source[i][self.input_key])) for i in range(len(source))]
      payload = {'vocab': text_vocab.build_vocab(tokens),
                 'length_p95': int(np.percentile([max(len(t), 1) for t in tokens], 95))}
      os.makedirs(self.builder.data_dir, exist_ok=True)
      with open(path + '.tmp', 'w') as f:
        json.dump(payload, f)
      os.replace(path + '.tmp', path)
    with open(path) as f:
      payload = json.load(f)
    self.vocab, self.length_p95 = payload['vocab'], payload['length_p95']

  def example_fn(self, config) -> Any:
    """A picklable record -> model-input dict function for the pipeline."""
    if self.task == 'video':
      return VideoExample(self.input_key, self.label_key, int(config.model.num_frames),
                          tuple(config.model.frame_shape))
    if self.vocab is None:
      self.load_vocab(config.dataset.train_split)
    return TextExample(self.input_key, self.label_key, {w: i for i, w in enumerate(self.vocab)},
                       int(config.model.vocab_size), int(config.model.max_length))


def _as_str(value) -> str:
  if isinstance(value, np.ndarray):
    value = value.item()
  return value.decode('utf-8', 'replace') if isinstance(value, bytes) else str(value)


class VideoExample:
  """Video record -> {'clip': uint8 [T, H, W, C], 'label': int32}: even frame sampling, nearest resize."""

  def __init__(self, video_key, label_key, num_frames, frame_shape):
    self.video_key, self.label_key = video_key, label_key
    self.num_frames, self.frame_shape = num_frames, frame_shape

  def __call__(self, record) -> dict[str, np.ndarray]:
    video_THWC = np.asarray(record[self.video_key])
    height, width, channels = self.frame_shape
    t = np.linspace(0, len(video_THWC) - 1, self.num_frames).round().astype(np.int64)
    y = (np.arange(height) * video_THWC.shape[1] / height).astype(np.int64)
    x = (np.arange(width) * video_THWC.shape[2] / width).astype(np.int64)
    clip = video_THWC[t][:, y][:, :, x]
    if clip.shape[-1] == 3 and channels == 1:  # ITU-R 601 luma.
      clip = (clip.astype(np.float32) @ np.array([[0.299], [0.587], [0.114]], np.float32)).round()
    elif clip.shape[-1] == 1 and channels == 3:
      clip = np.repeat(clip, 3, axis=-1)
    return {'clip': clip.astype(np.uint8), 'label': np.int32(record[self.label_key])}


class TextExample:
  """Text record -> {'tokens': int32 [max_length], 'length': int32, 'label': int32}."""

  def __init__(self, text_key, label_key, word_to_id, vocab_size, max_length):
    self.text_key, self.label_key, self.word_to_id = text_key, label_key, word_to_id
    self.vocab_size, self.max_length = vocab_size, max_length

  def __call__(self, record) -> dict[str, np.ndarray]:
    tokens = text_vocab.tokenize(_as_str(record[self.text_key]))
    ids, length = text_vocab.fit_ids(text_vocab.encode(tokens, self.word_to_id), self.vocab_size, self.max_length)
    return {'tokens': ids, 'length': np.int32(length), 'label': np.int32(record[self.label_key])}
