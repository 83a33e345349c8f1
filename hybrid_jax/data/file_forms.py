"""The form of the examples read from files: features, train-only metadata and encoding.

  spec = build(splits, note, extra)   # {'features', 'metadata', 'splits', 'encode', 'label'}

What the examples are decides the input kind, by the form of an example (not by a file format):
  texts (str)               -> 'tokens' int32 [num_tokens] (vocabulary of train)
  series [time, channels]   -> 'window' float32 (+ 'length'); window_shape, train mean/std
  clips [T, H, W, C]        -> 'clip' uint8; frame_shape, num_frames
and the labels decide the head: class labels -> a ClassLabel 'label', numbers -> a float 'target'
(with the train targets' mean and std). Each form names the input kind it feeds (input_kinds.py).
"""

import collections

import numpy as np
import tensorflow_datasets as tfds

from hybrid_jax.data import files
from hybrid_jax.data import text_vocab
from hybrid_jax.data.builders import common
from hybrid_jax.errors import DataError


class _Texts:
  input_kind = 'text'
  feature = 'tokens'

  def check(self, splits):
    pass

  def features(self, splits):
    return {self.feature: tfds.features.Tensor(shape=(None,), dtype=np.int32)}

  def metadata(self, splits):
    tokens = [text_vocab.tokenize(t) for t in splits['train'].examples]
    self.vocab = text_vocab.build_vocab(tokens)
    self.word_to_id = {w: i for i, w in enumerate(self.vocab)}
    lengths = np.array([max(len(t), 1) for t in tokens])
    percentiles = {str(p): int(np.percentile(lengths, p)) for p in (50, 90, 95, 100)}
    return {'vocab': self.vocab, 'train_length_percentiles': percentiles}

  def encode(self, text):
    return {self.feature: text_vocab.encode(text_vocab.tokenize(text), self.word_to_id)}


class _Series:
  input_kind = 'sensor'
  feature = 'window'

  def check(self, splits):
    channels = splits['train'].examples[0].shape[1:]
    for rows in splits.values():
      for x, at in zip(rows.examples, rows.where):
        if x.shape[1:] != channels or not len(x):
          raise DataError(
            f'{at}: a series of shape {x.shape} where train has {channels} channels: give every '
            'series of every split the same channels (and at least one time step).'
          )
        if not np.isfinite(x).all():
          raise DataError(f'{at}: the series holds NaN or inf: fix or drop it.')

  def features(self, splits):
    channels = splits['train'].examples[0].shape[1:]
    return {
      self.feature: tfds.features.Tensor(shape=(None, *channels), dtype=np.float32),
      'length': common.scalar_int('Time steps in the series.'),
    }

  def metadata(self, splits):
    steps = np.concatenate(splits['train'].examples)
    longest = max(len(x) for rows in splits.values() for x in rows.examples)
    return {
      'window_shape': [longest, *steps.shape[1:]],
      'feature_mean': steps.mean(axis=0).tolist(),
      'feature_std': steps.std(axis=0).tolist(),
    }

  def encode(self, x):
    return {self.feature: np.asarray(x, np.float32), 'length': len(x)}


class _Clips:
  input_kind = 'video'
  feature = 'clip'

  def check(self, splits):
    shape = splits['train'].examples[0].shape
    for rows in splits.values():
      for x, at in zip(rows.examples, rows.where):
        if x.shape != shape or x.shape[-1] not in (1, 3):
          raise DataError(
            f'{at}: a clip of shape {x.shape} where train has {shape}: give every clip the same '
            '[time, height, width, 1 or 3 channels].'
          )
        low, high = float(np.min(x)), float(np.max(x))
        floating = np.issubdtype(x.dtype, np.floating)
        if not np.isfinite([low, high]).all() or low < 0 or high > (1 if floating else 255):
          raise DataError(
            f'{at}: clip values in [{low:g}, {high:g}]: store uint8 pixels 0..255 or floats in '
            '[0, 1].'
          )

  def features(self, splits):
    shape = splits['train'].examples[0].shape
    return {self.feature: tfds.features.Tensor(shape=shape, dtype=np.uint8)}

  def metadata(self, splits):
    time, *frame = splits['train'].examples[0].shape
    return {'frame_shape': frame, 'num_frames': time}

  def encode(self, x):
    if np.issubdtype(x.dtype, np.floating):
      x = np.rint(x * 255)
    return {self.feature: np.asarray(x).astype(np.uint8)}


def _form(rows: files.Rows):
  """The form of the examples (texts, series or clips), from the first one."""
  first = rows.examples[0]
  if isinstance(first, str):
    return _Texts()
  ndim = np.ndim(first)
  forms = {2: _Series, 4: _Clips}
  if ndim not in forms:
    raise DataError(
      f'{rows.where[0]}: an example of {ndim} dimensions: give texts, series [time, channels] '
      'or clips [time, height, width, channels].'
    )
  return forms[ndim]()


def _label_names(rows: files.Rows) -> list[str]:
  """Declared order (.ts @classLabel), else numbers numerically, then other names sorted."""
  if rows.label_order:
    return list(rows.label_order)

  def key(name):
    try:
      return (0, float(name), name)
    except ValueError:
      return (1, 0.0, name)

  return sorted(set(rows.labels), key=key)


def build(splits: dict[str, files.Rows], note: str, extra: dict) -> dict:
  """Features, metadata (train-only statistics) and encoders of checked splits."""
  form = _form(splits['train'])
  for split, rows in splits.items():
    if type(_form(rows)) is not type(form):
      raise DataError(f'{rows.where[0]}: {split} holds other examples than train: fix the file.')
  form.check(splits)
  features = form.features(splits)
  metadata = {'input_kind': form.input_kind, 'splits_made': note, **extra}
  metadata.update(form.metadata(splits))
  train = splits['train']
  for rows in splits.values():
    bad = [] if rows.targets is None else np.flatnonzero(~np.isfinite(rows.targets))
    if len(bad):
      raise DataError(f'{rows.where[bad[0]]}: the target is NaN or inf: fix or drop the row.')
  if train.labels is None:
    mean, std = float(train.targets.mean()), float(max(train.targets.std(), 1e-6))
    features['target'] = tfds.features.Tensor(shape=(), dtype=np.float32)
    metadata.update(target_mean=mean, target_std=std)
    metadata['baselines'] = {
      s: {'train_mean_mae': float(np.mean(np.abs(r.targets - mean)))} for s, r in splits.items()
    }

    def label(rows, i):
      return {'target': np.float32(rows.targets[i])}

  else:
    names = _label_names(train)
    ids = {n: i for i, n in enumerate(names)}
    features['label'] = tfds.features.ClassLabel(names=names)
    majority = collections.Counter(train.labels).most_common(1)[0][0]
    metadata['baselines'] = {
      s: {
        'chance_accuracy': 1 / len(names),
        'majority_class_accuracy': float(np.mean([v == majority for v in r.labels])),
      }
      for s, r in splits.items()
    }

    def label(rows, i):
      return {'label': ids[rows.labels[i]]}

  return dict(features=features, metadata=metadata, splits=splits, encode=form.encode, label=label)
