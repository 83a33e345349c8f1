"""TFDS catalog datasets (e.g. ucf101, imdb_reviews) mapped onto the same model inputs.

The dataset must already be prepared in `data_dir` in the array_record format (the machines this
code targets cannot download it), e.g. on a machine with internet:
  tfds build imdb_reviews --data_dir=/data/tfds --file_format=array_record
The input kind is read from the features (`input_kinds.InputKind.catalog_feature`): a `Video` feature +
`ClassLabel` -> video; a `Text` feature + `ClassLabel` -> text. Video clips are sampled to `num_frames` evenly spaced frames and resized
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

from hybrid_jax import input_kinds
from hybrid_jax.data import shipped
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


def is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
  """`builder.is_prepared()` without TFDS's warning about a folder it has not prepared yet."""
  return (builder.data_path / 'dataset_info.json').exists() and builder.is_prepared()


def open_builder(
  name: str, data_dir: str | None, error_cls
) -> tuple[tfds.core.DatasetBuilder, 'CatalogAdapter']:
  """The prepared catalog builder and its adapter; `error_cls` one-liners for every failure."""
  _allow_video_without_tensorflow()
  for family in ('video', 'text'):  # Legacy catalog modules register their builders on import.
    importlib.import_module(f'tensorflow_datasets.{family}')
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise error_cls(
      f"Unknown dataset {name!r}: use one of {', '.join(shipped.SHIPPED)} "
      "(add '/tiny' for the test builds), or a TFDS catalog name prepared in data_dir."
    ) from None
  except ModuleNotFoundError as e:
    raise error_cls(
      f'TFDS dataset {name!r} cannot be opened without {e.name}: pip install {e.name}.'
    ) from None
  not_prepared = error_cls(
    f'TFDS dataset {name!r} is not prepared in {builder.data_dir_root} and cannot be downloaded here: '
    f'run `tfds build {name} --data_dir=DIR --file_format=array_record` on a machine with internet, '
    f'copy DIR here and set --config.dataset.data_dir=DIR.'
  )
  try:  # (Under tfds.testing.mock_data an unprepared builder still yields a data source.)
    builder.as_data_source(split=next(iter(builder.info.splits), 'train'))
  except (AssertionError, FileNotFoundError):
    raise not_prepared from None
  except (NotImplementedError, ValueError) as e:
    if not is_prepared(builder):
      raise not_prepared from None
    raise error_cls(
      f'TFDS dataset {name!r} in {builder.data_dir} is not in array_record format: convert it '
      f'with `tfds convert_format --dataset_dir={builder.data_dir} --out_file_format=array_record` '
      f'({str(e).splitlines()[0]}).'
    ) from None
  return builder, CatalogAdapter(builder, error_cls)


class CatalogAdapter:
  """Which features of a catalog dataset feed which model inputs (`input_kinds.INPUT_KINDS`)."""

  def __init__(self, builder: tfds.core.DatasetBuilder, error_cls):
    self.builder, self.error_cls = builder, error_cls
    features = builder.info.features
    labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    inputs = [
      (kind.name, k)
      for kind in input_kinds.INPUT_KINDS.values()
      if kind.catalog_feature
      for k, f in features.items()
      if type(f).__name__ == kind.catalog_feature
    ]
    if not labels or not inputs:
      kinds = ' or '.join(
        k.catalog_feature for k in input_kinds.INPUT_KINDS.values() if k.catalog_feature
      )
      raise error_cls(
        f'{builder.name}: only catalog datasets with a ClassLabel and a {kinds} feature '
        f'map onto hybrid_jax models (features: {sorted(features)}); write a builder instead.'
      )
    self.label_key = 'label' if 'label' in labels else labels[0]
    self.task, self.input_key = inputs[0]
    self.label_names = tuple(features[self.label_key].names)
    self.vocab: list[str] | None = None
    self.length_p95 = None

  def metadata(self, task: str, config=None) -> dict[str, Any]:
    """The builder-metadata equivalent the input kind reads (shapes, vocabulary).

    Video: frame_shape and num_frames from the Video feature where it fixes them, else the config's
    (clips are resampled to the config's shapes). Text: a train-split vocabulary built on first use.
    """
    feature = self.builder.info.features[self.input_key]
    if isinstance(feature, tfds.features.Text):
      self.load_vocab()
      return {'vocab': self.vocab, 'train_length_percentiles': {'95': self.length_p95}}
    model = config.model if config is not None else {}
    shape = tuple(feature.shape)
    meta = {
      'frame_shape': shape[1:] if None not in shape[1:] else model.get('frame_shape'),
      'num_frames': shape[0] if shape[0] is not None else model.get('num_frames'),
    }
    for key, value in meta.items():
      if value is None:
        raise self.error_cls(f'{self.builder.name} does not fix {key}: set --config.model.{key}.')
    return meta

  def load_vocab(self, train_split: str = 'train') -> None:
    """Reads, or builds from `train_split` and saves, the word vocabulary (PAD=0, OOV=1)."""
    if self.vocab is not None:
      return
    path = os.path.join(self.builder.data_dir, VOCAB_FILE)
    if not os.path.exists(path):
      source = self.builder.as_data_source(split=train_split)
      tokens = [text_vocab.tokenize(_as_str(source[i][self.input_key])) for i in range(len(source))]
      payload = {
        'vocab': text_vocab.build_vocab(tokens),
        'length_p95': int(np.percentile([max(len(t), 1) for t in tokens], 95)),
      }
      os.makedirs(self.builder.data_dir, exist_ok=True)
      with open(path + '.tmp', 'w') as f:
        json.dump(payload, f)
      os.replace(path + '.tmp', path)
    with open(path) as f:
      payload = json.load(f)
    self.vocab, self.length_p95 = payload['vocab'], payload['length_p95']


def _as_str(value) -> str:
  if isinstance(value, np.ndarray):
    value = value.item()
  return value.decode('utf-8', 'replace') if isinstance(value, bytes) else str(value)
