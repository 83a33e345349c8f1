"""Records and raw inputs -> model inputs, one decoder per input kind (numpy only, picklable).

  decode = SensorDecoder(window_shape, mean, std)   # built once per dataset (input_kinds.py)
  example = decode.inputs(raw)        # one raw user input -> model inputs, e.g. {'window', 'length'}
  example = decode(record)            # one stored record -> model inputs (+ nothing else)
  example = Example(decode, head, metadata)(record)   # + the head's label (normalized target)
  batch = collate([example, ...])     # stacks (inputs of one kind always share a shape)

The input pipeline and prediction share these, so a raw input is decoded exactly as training
decoded its stored records.
"""

from typing import Any, Mapping

import numpy as np

from hybrid_jax.data import text_vocab
from hybrid_jax.errors import DataError
from hybrid_jax.errors import InputError

Metadata = Mapping[str, Any]


def metadata_value(metadata: Metadata, key: str, what: str):
  """metadata[key], or a one-line DataError naming the key the builder must store."""
  if not metadata or key not in metadata:
    raise DataError(
      f"The dataset's metadata has no {key!r} ({what}): store it in "
      f'self.info.metadata in the builder\'s _split_generators.'
    )
  return metadata[key]


class VideoDecoder:
  """A clip [time, height, width, channels] -> {'clip': uint8 [num_frames, *frame_shape]}.

  Integer clips are pixels 0..255; float clips are read as [0, 1] intensities. A clip of another
  shape is resampled: `num_frames` evenly spaced frames, nearest-neighbour resize, RGB -> luma (ITU-R 601) or grey -> RGB.
  `key`: the record feature holding the clip.
  """

  def __init__(self, num_frames: int, frame_shape, key: str = 'clip'):
    self.shape = (int(num_frames), *map(int, frame_shape))
    self.key = key

  def inputs(self, clip) -> dict[str, np.ndarray]:
    clip = np.asarray(clip)
    if clip.ndim != 4 or 0 in clip.shape or clip.shape[-1] not in (1, 3):
      raise InputError(f'A clip must be [time, height, width, 1 or 3 channels], got {clip.shape}.')
    if np.issubdtype(clip.dtype, np.integer) and clip.dtype != np.uint8:
      clip = np.clip(clip, 0, 255).astype(np.uint8)  # Integer pixels 0..255.
    elif clip.dtype != np.uint8:
      clip = np.clip(np.rint(clip.astype(np.float32) * 255), 0, 255).astype(np.uint8)
    if clip.shape != self.shape:
      clip = _resample(clip, self.shape)
    return {'clip': clip}

  def __call__(self, record) -> dict[str, np.ndarray]:
    return self.inputs(record[self.key])


def _resample(video_THWC: np.ndarray, shape) -> np.ndarray:
  """Even frame sampling, nearest resize and channel conversion to `shape` (uint8)."""
  num_frames, height, width, channels = shape
  t = np.linspace(0, len(video_THWC) - 1, num_frames).round().astype(np.int64)
  y = (np.arange(height) * video_THWC.shape[1] / height).astype(np.int64)
  x = (np.arange(width) * video_THWC.shape[2] / width).astype(np.int64)
  clip = video_THWC[t][:, y][:, :, x]
  if clip.shape[-1] == 3 and channels == 1:  # ITU-R 601 luma.
    clip = (clip.astype(np.float32) @ np.array([[0.299], [0.587], [0.114]], np.float32)).round()
  elif clip.shape[-1] == 1 and channels == 3:
    clip = np.repeat(clip, 3, axis=-1)
  return clip.astype(np.uint8)


class TextDecoder:
  """Token ids (a stored record) or a raw string -> {'tokens' int32 [max_length], 'length' int32}.

  Strings are tokenized with `text_vocab.tokenize` and encoded with the dataset's train
  vocabulary (`metadata['vocab']`); ids >= vocab_size become OOV; texts are cut at max_length.
  """

  def __init__(self, vocab_size: int, max_length: int, vocab=None, key: str = 'tokens'):
    self.vocab_size, self.max_length, self.key = int(vocab_size), int(max_length), key
    self.vocab = list(vocab) if vocab is not None else None
    self._word_to_id = None

  def inputs(self, text) -> dict[str, np.ndarray]:
    if isinstance(text, np.ndarray) and text.dtype.kind in 'OSU':
      text = text.item()
    if isinstance(text, (str, bytes)):
      if self.vocab is None:
        raise InputError(
          'This dataset stores no vocabulary (metadata["vocab"]): pass token ids, not text.'
        )
      if self._word_to_id is None:
        self._word_to_id = {w: i for i, w in enumerate(self.vocab)}
      text = text.decode('utf-8', 'replace') if isinstance(text, bytes) else text
      ids = text_vocab.encode(text_vocab.tokenize(text), self._word_to_id)
    else:
      ids = np.asarray(text)
      if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(
          f'Text must be a string or a 1-D array of token ids, got {ids.dtype} {ids.shape}.'
        )
    tokens, length = text_vocab.fit_ids(ids, self.vocab_size, self.max_length)
    return {'tokens': tokens, 'length': np.int32(length)}

  def __call__(self, record) -> dict[str, np.ndarray]:
    return self.inputs(record[self.key])

  def __getstate__(self):  # Workers rebuild the word index lazily.
    return {**self.__dict__, '_word_to_id': None}


class SensorDecoder:
  """A series [time, *channels] in original units -> {'window' float32 [T, *channels], 'length'}.

  Normalizes with the train statistics (`metadata['feature_mean']`, `['feature_std']`, shaped like
  one time step; none stored: values are used as they are), then cuts at / zero-pads to
  T = window_shape[0]; 'length' is the number of real steps (1..T), so the model masks the rest.
  """

  def __init__(self, window_shape, mean=None, std=None, key: str = 'window'):
    self.key = key
    self.window_shape = tuple(int(d) for d in window_shape)
    self.mean = None if mean is None else np.asarray(mean, np.float32)
    self.std = None if std is None else np.maximum(np.asarray(std, np.float32), 1e-6)

  def inputs(self, series) -> dict[str, np.ndarray]:
    series = np.asarray(series, np.float32)
    steps, channels = self.window_shape[0], self.window_shape[1:]
    if series.ndim != len(self.window_shape) or series.shape[1:] != channels or not len(series):
      raise InputError(
        f'A series must be [time >= 1, {", ".join(map(str, channels))}], got {series.shape}.'
      )
    if self.mean is not None:
      series = (series - self.mean) / self.std
    length = min(len(series), steps)
    window = np.zeros(self.window_shape, np.float32)
    window[:length] = series[:length]
    return {'window': window, 'length': np.int32(length)}

  def __call__(self, record) -> dict[str, np.ndarray]:
    return self.inputs(record[self.key])


class Example:
  """Stored record -> model inputs + the head's label, for the pipeline (picklable).

  Regression targets are normalized: (target - metadata['target_mean']) / metadata['target_std'].
  """

  def __init__(self, decode, the_head, metadata: Metadata, label_key: str | None = None):
    self.decode, self.label_key = decode, the_head.label_key
    self.record_key = label_key or the_head.label_key
    self.dtype = the_head.label_dtype
    self.shift, self.scale = 0.0, 1.0
    if the_head.regression:
      self.shift = float(metadata_value(metadata, 'target_mean', 'the train targets\' mean'))
      self.scale = float(metadata_value(metadata, 'target_std', 'the train targets\' std'))

  def __call__(self, record) -> dict[str, np.ndarray]:
    label = (np.asarray(record[self.record_key], np.float64) - self.shift) / self.scale
    return {**self.decode(record), self.label_key: label.astype(self.dtype)}


def collate(examples) -> dict[str, np.ndarray]:
  """Stacks examples (dicts of equally shaped arrays) into a batch."""
  return {key: np.stack([ex[key] for ex in examples]) for key in examples[0]}
