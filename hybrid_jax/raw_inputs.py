"""Raw inputs -> model batches, per input kind, exactly as the training pipeline prepares them.

One table (`KINDS`) names every input kind and what it provides:
  describe(config, source) -> dict   what inference needs, saved in the run's inference.json when
                                     training starts (vocabulary, normalisation, shapes)
  batch(inputs, spec) -> dict        raw inputs (a list of N examples) -> model batch of N rows
  describe_inputs(spec) -> str       what the kind takes, for messages and the CLI's help

The batch functions reuse the pipeline's own record functions (`pipeline.TextExample`,
`SensorExample`, `VideoExample`, `catalog.VideoExample`) so that predicting tokenises, normalises
and casts like training did. Bad inputs raise `InputError` with one line naming the example, what
it was and what the model takes.
"""

import math
from typing import Any, Sequence

import numpy as np

from hybrid_jax.data import catalog
from hybrid_jax.data import pipeline
from hybrid_jax.data import text_vocab
from hybrid_jax.errors import InputError

# Changes whenever `text_vocab.tokenize` would split some text differently: a run tokenised by
# another version cannot be predicted with this one.
TOKENIZER = 'hybrid_jax.text_vocab.tokenize/1'


def _examples(inputs: Any, what: str) -> list[Any]:
  """The N examples of `inputs` (a list, tuple or array whose first axis is the examples)."""
  if isinstance(inputs, (str, bytes)):
    raise InputError(f'Got a single string; pass a list of {what} (e.g. [text]).')
  if isinstance(inputs, np.ndarray):
    examples = list(inputs) if inputs.ndim else []
  elif isinstance(inputs, (list, tuple)):
    examples = list(inputs)
  else:
    raise InputError(f'Got {type(inputs).__name__}; pass a list of {what}.')
  if not examples:
    raise InputError(f'No inputs: pass a non-empty list of {what}.')
  return examples


def _stack(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {key: np.stack([row[key] for row in rows]) for key in rows[0]}


def _fmt_shape(shape) -> str:
  return '(' + ', '.join('None' if s is None else str(s) for s in shape) + ')'


# ----------------------------------------------------------------------------------------- text


class Text:
  """Strings, tokenised with `text_vocab`, truncated to max_length, ids >= vocab_size -> OOV."""

  @staticmethod
  def describe(config, source) -> dict[str, Any]:
    vocab_size = int(config.model.vocab_size)
    if source.adapter is not None:  # A catalog dataset: the vocabulary saved beside its data.
      source.adapter.load_vocab(config.dataset.train_split)
      vocab = source.adapter.vocab
    else:
      vocab = source.builder.info.metadata['vocab']
    # Words with ids >= vocab_size map to OOV anyway, so only the first vocab_size are kept.
    return {'tokenizer': TOKENIZER, 'vocab': list(vocab[:vocab_size]), 'vocab_size': vocab_size,
            'max_length': int(config.model.max_length)}

  @staticmethod
  def describe_inputs(spec) -> str:
    return (f"texts (str; tokenised, truncated to {spec['max_length']} tokens, "
            f"vocabulary of {spec['vocab_size']})")

  @staticmethod
  def batch(inputs: Any, spec: dict[str, Any]) -> dict[str, np.ndarray]:
    """list of N str -> {'tokens': int32 [N, max_length], 'length': int32 [N]}."""
    texts = _examples(inputs, 'strings')
    word_to_id = {w: i for i, w in enumerate(spec['vocab'])}
    to_example = pipeline.TextExample(int(spec['vocab_size']), int(spec['max_length']))
    rows = []
    for i, text in enumerate(texts):
      if isinstance(text, bytes):
        text = text.decode('utf-8', 'replace')
      if not isinstance(text, (str, np.str_)):
        raise InputError(f'Input {i} is a {type(text).__name__}, not a string: this text model '
                         'takes a list of strings.')
      ids = text_vocab.encode(text_vocab.tokenize(str(text)), word_to_id)
      row = to_example({'tokens': ids, 'label': 0})  # The training pipeline's own record function.
      rows.append({'tokens': row['tokens'], 'length': row['length']})
    return _stack(rows)


# ---------------------------------------------------------------------------------------- video


class Video:
  """Clips [time, height, width, channels]: uint8 pixels, or numbers in 0..255 cast like training."""

  @staticmethod
  def describe(config, source) -> dict[str, Any]:
    return {'clip_shape': [int(config.model.num_frames), *map(int, config.model.frame_shape)],
            'dtype': 'uint8',  # The pipeline casts every clip to uint8 (VideoExample).
            'resample': source.adapter is not None}  # Catalog runs sampled and resized clips.

  @staticmethod
  def describe_inputs(spec) -> str:
    return f"clips {_fmt_shape(spec['clip_shape'])} [time, height, width, channels] uint8"

  @staticmethod
  def batch(inputs: Any, spec: dict[str, Any]) -> dict[str, np.ndarray]:
    """N clips [T, H, W, C] (a list, or an array [N, T, H, W, C]) -> {'clip': uint8 [N, ...]}."""
    want = tuple(spec['clip_shape'])
    if isinstance(inputs, np.ndarray) and inputs.ndim == len(want):
      raise InputError(f'Got one array of shape {inputs.shape}; this model takes a batch of '
                       f'{Video.describe_inputs(spec)}: pass clip[None] for a single clip.')
    clips = _examples(inputs, 'clips')
    if spec.get('resample'):
      to_example = catalog.VideoExample('clip', 'label', want[0], want[1:])
    else:
      to_example = pipeline.VideoExample()
    rows = []
    for i, clip in enumerate(clips):
      clip = _numeric(clip, i, 'clip')
      if clip.ndim != len(want) or (not spec.get('resample') and clip.shape != want) or (
          spec.get('resample') and clip.shape[-1] not in (1, 3)):
        raise InputError(f'Clip {i} has shape {clip.shape}; this model takes '
                         f'{Video.describe_inputs(spec)}.')
      if clip.dtype != np.uint8:
        low, high = float(clip.min()), float(clip.max())
        if low < 0 or high > 255:
          raise InputError(f'Clip {i} ({clip.dtype}) has values in [{low:g}, {high:g}]; this model '
                           'was trained on pixels 0..255: pass uint8 clips.')
        if np.issubdtype(clip.dtype, np.floating) and 0 < high <= 1:
          raise InputError(f'Clip {i} ({clip.dtype}) looks scaled to [0, 1]; this model was '
                           'trained on pixels 0..255: pass (clip * 255).round().astype(np.uint8).')
      rows.append({'clip': to_example({'clip': clip, 'label': 0})['clip']})
    return _stack(rows)


def _numeric(x: Any, i: int, what: str) -> np.ndarray:
  """x as a real-number array, or a one-line InputError (strings, objects, NaN/inf)."""
  try:
    x = np.asarray(x)
  except ValueError:  # Ragged nested lists.
    raise InputError(f'Input {i} is not a rectangular array: each {what} must be one.') from None
  if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype,
                                                                                 np.floating)):
    raise InputError(f'Input {i} has dtype {x.dtype}; each {what} must hold real numbers.')
  if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
    raise InputError(f'Input {i} contains NaN or inf; each {what} must be finite.')
  return x


# --------------------------------------------------------------------------------------- sensor


class Sensor:
  """Windows [time, sensors, features] in original units, normalised with the train statistics.

  A stored window_shape whose time entry is None means the model takes variable-length series and
  a 'length' key: windows are then padded (zeros after normalisation) to a power of two, so that
  repeated calls reuse few compiled shapes.
  """

  @staticmethod
  def describe(config, source) -> dict[str, Any]:
    meta = source.builder.info.metadata
    shape = [None if s is None else int(s) for s in config.model.window_shape]
    return {'window_shape': shape,
            'feature_mean': np.asarray(meta['feature_mean'], np.float32).tolist(),
            'feature_std': np.asarray(meta['feature_std'], np.float32).tolist()}

  @staticmethod
  def describe_inputs(spec) -> str:
    return (f"windows {_fmt_shape(spec['window_shape'])} [time, sensors, features] float, in "
            'original units')

  @staticmethod
  def batch(inputs: Any, spec: dict[str, Any]) -> dict[str, np.ndarray]:
    """N windows [t, S, F] -> {'window': float32 [N, T, S, F]} (+ 'length' int32 [N] if variable)."""
    want = tuple(spec['window_shape'])
    if isinstance(inputs, np.ndarray) and inputs.ndim == len(want):
      raise InputError(f'Got one array of shape {inputs.shape}; this model takes a batch of '
                       f'{Sensor.describe_inputs(spec)}: pass window[None] for a single window.')
    windows = _examples(inputs, 'windows')
    # The training pipeline's normalisation (targets are not used here).
    normalize = pipeline.SensorExample(spec['feature_mean'], spec['feature_std'], 0.0, 1.0)
    rows = []
    for i, window in enumerate(windows):
      window = _numeric(window, i, 'window')
      if window.ndim != len(want) or any(w is not None and w != s
                                         for w, s in zip(want, window.shape)) or not len(window):
        raise InputError(f'Window {i} has shape {window.shape}; this model takes '
                         f'{Sensor.describe_inputs(spec)}.')
      rows.append(normalize({'window': window, 'target': np.float32(0)})['window'])
    if want[0] is not None:
      return {'window': np.stack(rows)}
    lengths = np.array([len(r) for r in rows], np.int32)
    time = 2 ** math.ceil(math.log2(lengths.max()))
    padded = np.zeros((len(rows), time, *want[1:]), np.float32)
    for i, r in enumerate(rows):
      padded[i, :len(r)] = r
    return {'window': padded, 'length': lengths}


KINDS = {'text': Text, 'video': Video, 'sensor': Sensor}


def kind(task: str):
  """The input kind of `task`; unknown kinds come from a newer hybrid_jax."""
  if task not in KINDS:
    raise InputError(f'Unknown input kind {task!r}: this hybrid_jax knows {sorted(KINDS)}.')
  return KINDS[task]


def pad_rows(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  """Pads every array's first axis from n <= size to `size` rows by repeating row 0."""
  def pad(x):
    extra = size - len(x)
    return x if not extra else np.concatenate([x, np.repeat(x[:1], extra, axis=0)])
  return {k: pad(np.asarray(v)) for k, v in batch.items()}


def take_rows(batch: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
  return {k: v[start:stop] for k, v in batch.items()}


def num_rows(batch: dict[str, Sequence[Any]]) -> int:
  return len(next(iter(batch.values())))
