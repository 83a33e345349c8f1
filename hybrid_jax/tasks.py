"""The task registry: every input kind and every head, each declared once.

A task is an *input kind* (what the model reads) times a *head* (what it predicts):

  INPUT_KINDS   'video'  clips [time, height, width, channels]  -> models.video.VideoModel
                'text'   token ids [length] (+ length)          -> models.text.TextModel
                'sensor' multivariate series [time, *channels]  -> models.sensor.SensorModel
                         (+ length: variable-length series are padded and masked)
  HEADS         'classification'  softmax over num_classes; label = a ClassLabel 'label' feature
                'regression'      Dense(1), MSE on the normalized 'target'; MAE in original units

`config.task` names the input kind; `config.head` the head ('' = decided by the data: a 'label'
feature -> classification, a 'target' feature -> regression). Code elsewhere asks this module
instead of branching on names. Adding an input kind = one `InputKind` entry here + one model file.

Turning inputs into model examples (the pipeline and prediction share it):

  kind = tasks.input_kind(config)
  decode = kind.decoder(config, builder.info.metadata)   # picklable, built once per dataset
  example = decode.inputs(raw)        # one raw user input -> model inputs, e.g. {'window', 'length'}
  example = decode(record)            # one stored record -> model inputs (+ nothing else)
  batch = tasks.collate([example, ...])   # stacks (inputs of one kind always share a shape)
"""

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hybrid_jax import metrics as metrics_lib
from hybrid_jax.errors import ConfigError
from hybrid_jax.errors import DataError
from hybrid_jax.errors import InputError

Metadata = Mapping[str, Any]


# ---------------------------------------------------------------------------------------------
# Heads.


@dataclasses.dataclass(frozen=True)
class Head:
  """What a head predicts and how it is scored.

  Attributes:
    name: 'classification' | 'regression'.
    label_key: the batch (and dataset feature) key of the supervision: 'label' or 'target'.
    label_dtype: its batch dtype.
    loss: (model output, labels) -> scalar mean loss (traced inside the train step).
    train_metrics: (output, labels) -> {name: scalar} shown on the progress line besides the loss.
    sums: (output, labels, mask, top_k, with_confusion) -> exact per-batch metric sums (metrics.py).
    best_metric: the eval metric that picks the kept "best" checkpoint when config.best_metric=''.
    eval_metrics: (top_k) -> names of the scalar eval metrics it reports.
  """

  name: str
  label_key: str
  label_dtype: Any
  loss: Callable[..., jax.Array]
  train_metrics: Callable[..., dict[str, jax.Array]]
  sums: Callable[..., dict[str, jax.Array]]
  best_metric: str
  eval_metrics: Callable[[int], list[str]]

  @property
  def regression(self) -> bool:
    return self.name == 'regression'

  def num_outputs(self, model_config: ml_collections.ConfigDict) -> int:
    """Width of the last Dense layer."""
    return 1 if self.regression else int(model_config.num_classes)


def _accuracy(logits_BC, labels_B):
  return {'accuracy': jnp.mean(jnp.argmax(logits_BC, -1) == labels_B).astype(jnp.float32)}


def _mae(prediction_B, target_B):
  return {'mae': jnp.mean(jnp.abs(prediction_B.astype(jnp.float32) - target_B))}


HEADS = {
  'classification': Head(
    name='classification',
    label_key='label',
    label_dtype=np.int32,
    loss=metrics_lib.classification_loss,
    train_metrics=_accuracy,
    sums=metrics_lib.classification_sums,
    best_metric='accuracy',
    eval_metrics=lambda top_k: ['loss', 'accuracy'] + ([f'top_{top_k}_accuracy'] if top_k else []),
  ),
  'regression': Head(
    name='regression',
    label_key='target',
    label_dtype=np.float32,
    loss=metrics_lib.regression_loss,
    train_metrics=_mae,
    sums=lambda out, target, mask, top_k, with_confusion: metrics_lib.regression_sums(
      out, target, mask
    ),
    best_metric='mae',
    eval_metrics=lambda top_k: [
      'loss',
      'mse',
      'mae',
      'rmse',
      'mae_original_units',
      'rmse_original_units',
    ],
  ),
}


# ---------------------------------------------------------------------------------------------
# Input kinds.


@dataclasses.dataclass(frozen=True)
class InputKind:
  """Everything the code needs to know about one kind of input.

  Attributes:
    name: the value of config.task.
    config_file: the shipped config for this kind (named in errors).
    batch_keys: model-input batch keys -> dtype ('length' optional where listed).
    model: (config) -> the Flax module (imported lazily: models import nothing from here).
    dummy_inputs: (model config, batch size) -> zeros shaped like a batch's inputs.
    decoder: (config, dataset metadata) -> a picklable decoder with `__call__(record)` and
      `inputs(raw)`, both returning model inputs for one example (see the module docstring); its
      `key` attribute names the record feature it reads (catalog datasets set their own).
    data_fields: model config fields the data determines: (dataset metadata) -> {field: value}.
    adjustable: data fields a config may set differently (the pipeline adapts), with their minimum.
    default_head: the head when config.head='' and no data has been read (model summaries).
    catalog_feature: the tfds feature class name that marks a TFDS catalog dataset of this kind.
    saved_metadata: (config, dataset metadata) -> the JSON-able part of the metadata its decoder
      reads, which a run stores (inference.json) to decode raw inputs without the dataset.
    raw_shape: (config) -> the shape one raw input must have for prediction (None entries: any
      size), or None when raw inputs are not arrays (text).
    raw_description: (config) -> what one raw input is, in words (messages, the predict CLI).
  """

  name: str
  config_file: str
  batch_keys: dict[str, Any]
  model: Callable[[ml_collections.ConfigDict], Any]
  dummy_inputs: Callable[[ml_collections.ConfigDict, int], dict[str, np.ndarray]]
  decoder: Callable[[ml_collections.ConfigDict, Metadata], Any]
  data_fields: Callable[[Metadata], dict[str, Any]]
  adjustable: dict[str, int] = dataclasses.field(default_factory=dict)
  default_head: str = 'classification'
  catalog_feature: str | None = None
  saved_metadata: Callable[[ml_collections.ConfigDict, Metadata], dict[str, Any]] = (
    lambda config, metadata: {}
  )
  raw_shape: Callable[[ml_collections.ConfigDict], tuple | None] = lambda config: None
  raw_description: Callable[[ml_collections.ConfigDict], str] = lambda config: ''

  @property
  def input_keys(self) -> tuple[str, ...]:
    return tuple(self.batch_keys)


def metadata_value(metadata: Metadata, key: str, what: str):
  """metadata[key], or a one-line DataError naming the key the builder must store."""
  if not metadata or key not in metadata:
    raise DataError(
      f"The dataset's metadata has no {key!r} ({what}): store it in "
      f'self.info.metadata in the builder\'s _split_generators.'
    )
  return metadata[key]


# Video ---------------------------------------------------------------------------------------


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


def _video_model(config):
  from hybrid_jax.models import video  # pylint: disable=g-import-not-at-top

  m = config.model
  if not -m.num_frames <= m.key_frame_index < m.num_frames:
    raise ConfigError(
      f'config.model.key_frame_index={m.key_frame_index} is outside a clip of '
      f'{m.num_frames} frames: use 0..{m.num_frames - 1} (or negative from the end).'
    )
  return video.VideoModel(
    frame_shape=tuple(m.frame_shape),
    key_frame_index=m.key_frame_index,
    **_shared_model_fields(config),
  )


# Text ----------------------------------------------------------------------------------------


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
    from hybrid_jax.data import text_vocab  # pylint: disable=g-import-not-at-top

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


def _text_model(config):
  from hybrid_jax.models import text  # pylint: disable=g-import-not-at-top

  m = config.model
  return text.TextModel(
    vocab_size=m.vocab_size, embed_dim=m.embed_dim, **_shared_model_fields(config)
  )


def _text_fields(metadata: Metadata) -> dict[str, Any]:
  vocab = metadata_value(metadata, 'vocab', 'the train vocabulary, PAD=0, OOV=1')
  lengths = metadata_value(
    metadata, 'train_length_percentiles', "train token counts, e.g. {'95': 120}"
  )
  return {'vocab_size': len(vocab), 'max_length': int(lengths['95'])}


# Sensor --------------------------------------------------------------------------------------


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


def _sensor_model(config):
  from hybrid_jax.models import sensor  # pylint: disable=g-import-not-at-top

  m = config.model
  return sensor.SensorModel(
    window_shape=tuple(m.window_shape),
    pooling=m.get('pooling', 'flatten'),
    **_shared_model_fields(config),
  )


def _sensor_decoder(config, metadata):
  metadata = metadata or {}
  return SensorDecoder(
    config.model.window_shape, metadata.get('feature_mean'), metadata.get('feature_std')
  )


def _sensor_raw_shape(config) -> tuple:
  """Fixed windows (pooling='flatten') take exactly window_shape; others any time >= 1."""
  time, *channels = config.model.window_shape
  return (time if config.model.get('pooling', 'flatten') == 'flatten' else None, *channels)


def _shape_str(shape) -> str:
  return '(' + ', '.join('any' if s is None else str(s) for s in shape) + ')'


INPUT_KINDS = {
  'video': InputKind(
    name='video',
    config_file='configs/video.py',
    batch_keys={'clip': np.uint8},
    model=_video_model,
    dummy_inputs=lambda m, b: {'clip': np.zeros((b, m.num_frames, *m.frame_shape), np.uint8)},
    decoder=lambda config, metadata: VideoDecoder(
      config.model.num_frames, config.model.frame_shape
    ),
    data_fields=lambda meta: {
      'frame_shape': tuple(metadata_value(meta, 'frame_shape', '[height, width, channels]')),
      'num_frames': int(metadata_value(meta, 'num_frames', 'frames per clip')),
    },
    catalog_feature='Video',
    raw_shape=lambda config: (config.model.num_frames, *config.model.frame_shape),
    raw_description=lambda config: (
      f'clips {_shape_str((config.model.num_frames, *config.model.frame_shape))} '
      '[time, height, width, channels]: uint8 pixels, or floats in [0, 1]'
    ),
  ),
  'text': InputKind(
    name='text',
    config_file='configs/text.py',
    batch_keys={'tokens': np.int32, 'length': np.int32},
    model=_text_model,
    dummy_inputs=lambda m, b: {
      'tokens': np.zeros((b, m.max_length), np.int32),
      'length': np.full((b,), m.max_length, np.int32),
    },
    decoder=lambda config, metadata: TextDecoder(
      config.model.vocab_size, config.model.max_length, (metadata or {}).get('vocab')
    ),
    data_fields=_text_fields,
    adjustable={'vocab_size': 3, 'max_length': 1},  # PAD, OOV, >= 1 word; >= 1 token.
    catalog_feature='Text',
    # Ids >= vocab_size become OOV anyway: only the first vocab_size words are needed.
    saved_metadata=lambda config, meta: {
      'vocab': list(
        metadata_value(meta, 'vocab', 'the train vocabulary')[: config.model.vocab_size]
      )
    },
    raw_description=lambda config: (
      f'texts (str; tokenized, cut at {config.model.max_length} tokens, vocabulary of '
      f'{config.model.vocab_size})'
    ),
  ),
  'sensor': InputKind(
    name='sensor',
    config_file='configs/sensor.py',
    batch_keys={'window': np.float32, 'length': np.int32},
    model=_sensor_model,
    dummy_inputs=lambda m, b: {
      'window': np.zeros((b, *m.window_shape), np.float32),
      'length': np.full((b,), m.window_shape[0], np.int32),
    },
    decoder=_sensor_decoder,
    data_fields=lambda meta: {
      'window_shape': tuple(metadata_value(meta, 'window_shape', '[max time steps, *channels]'))
    },
    default_head='regression',
    saved_metadata=lambda config, meta: {
      k: np.asarray(meta[k], np.float32).tolist()
      for k in ('feature_mean', 'feature_std')
      if meta and meta.get(k) is not None
    },
    raw_shape=_sensor_raw_shape,
    raw_description=lambda config: (
      f'series {_shape_str(_sensor_raw_shape(config))} [time, *channels] in original units'
    ),
  ),
}


# ---------------------------------------------------------------------------------------------
# Lookups.


def input_kind(config_or_name) -> InputKind:
  """The InputKind of `config.task` (or of a kind name)."""
  name = config_or_name if isinstance(config_or_name, str) else config_or_name.task
  if name not in INPUT_KINDS:
    raise ConfigError(f'Unknown config.task={name!r}: use one of {tuple(INPUT_KINDS)}.')
  return INPUT_KINDS[name]


def head(config_or_name) -> Head:
  """The Head of `config.head` ('' before the data is read: the input kind's default head)."""
  if isinstance(config_or_name, str):
    name = config_or_name
  else:
    name = config_or_name.get('head') or input_kind(config_or_name).default_head
  if name not in HEADS:
    raise ConfigError(
      f"Unknown config.head={name!r}: use one of {tuple(HEADS)} or '' (from the data)."
    )
  return HEADS[name]


def head_of_features(features: Mapping[str, Any], forced: str, dataset: str) -> Head:
  """The head a dataset's features call for; `forced` (config.head) must agree with them.

  Args:
    features: the builder's top-level features (name -> tfds feature).
    forced: config.head ('' lets the data decide).
    dataset: name shown in errors.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  features = dict(features.items())
  has = {
    'classification': isinstance(features.get('label'), tfds.features.ClassLabel),
    'regression': 'target' in features,
  }
  if forced:
    found = head(forced)
    if not has[found.name]:
      raise DataError(
        f"{dataset} has no {found.label_key!r} feature for config.head={forced!r}: set "
        f"--config.head='' (from the data) or use a dataset with a {found.label_key!r}."
      )
    return found
  available = [name for name, ok in has.items() if ok]
  if len(available) != 1:
    what = (
      'both a ClassLabel label and a target'
      if available
      else 'neither a ClassLabel label nor a target'
    )
    raise DataError(
      f'{dataset} has {what} feature: set --config.head to one of {tuple(HEADS)}'
      if available
      else f'{dataset} has {what} feature: a builder must store one of them.'
    )
  return HEADS[available[0]]


def is_regression(config: ml_collections.ConfigDict) -> bool:
  """Whether `config`'s head is a Dense(1) regression (trained with MSE)."""
  return head(config).regression


def _shared_model_fields(config) -> dict[str, Any]:
  from hybrid_jax.models import fusion  # pylint: disable=g-import-not-at-top

  m = config.model
  fusion.check_switches(m.branches, m.fusion)
  the_head = head(config)
  if not the_head.regression and m.get('num_classes') is None:
    raise ConfigError(
      'config.model.num_classes is None: set it, or let the data fill it (train/eval).'
    )
  dtypes = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
  if m.dtype not in dtypes:
    raise ConfigError(f'Unknown config.model.dtype={m.dtype!r}: use one of {tuple(dtypes)}.')
  return dict(
    num_outputs=the_head.num_outputs(m),
    regression=the_head.regression,
    branches=m.branches,
    fusion=m.fusion,
    fusion_dim=m.fusion_dim,
    dropout_rate=m.dropout_rate,
    dtype=dtypes[m.dtype],
    conv_features=tuple(m.conv_features),
    kernel_size=m.kernel_size,
    lstm_units=m.lstm_units,
  )


def create_model(config: ml_collections.ConfigDict):
  """The input kind's model with `config.model`'s sizes and the head's output width."""
  return input_kind(config).model(config)


def dummy_batch(config: ml_collections.ConfigDict, batch_size: int = 2) -> dict[str, np.ndarray]:
  """Zeros shaped like a batch of model inputs of `config`, for init, shapes and summaries."""
  return input_kind(config).dummy_inputs(config.model, batch_size)


class Example:
  """Stored record -> model inputs + the head's label, for the pipeline (picklable).

  Regression targets are normalized: (target - metadata['target_mean']) / metadata['target_std'].
  """

  def __init__(self, decode, the_head: Head, metadata: Metadata, label_key: str | None = None):
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
