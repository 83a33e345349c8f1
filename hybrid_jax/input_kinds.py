"""The input-kind table: every kind of input a model reads, declared once.

  INPUT_KINDS   'video'  clips [time, height, width, channels]  -> models.video.VideoModel
                'text'   token ids [length] (+ length)          -> models.text.TextModel
                'sensor' multivariate series [time, *channels]  -> models.sensor.SensorModel
                         (+ length: variable-length series are padded and masked)

`config.task` names the input kind, `config.head` the head (heads.py); input kinds and heads are
independent. `config.model` holds exactly the model class's fields: `create_model` passes them
all, so every field is reachable from the command line and part of the run fingerprint.

  model = create_model(config)                   # the kind's model with config.model's fields
  batch = dummy_batch(config, 2)                 # zeros shaped like a batch of model inputs
  decode = input_kind(config).decoder(config, metadata)   # data/decoders.py

Code elsewhere asks this table instead of branching on a kind's name. Adding an input kind = one
`InputKind` entry here, one model file and one decoder.
"""

import dataclasses
from typing import Any, Callable, Mapping

import ml_collections
import numpy as np

from hybrid_jax import heads
from hybrid_jax.data import decoders
from hybrid_jax.errors import ConfigError
from hybrid_jax.errors import InputError
from hybrid_jax.models import conv
from hybrid_jax.models import fusion
from hybrid_jax.models import lstm
from hybrid_jax.models import sensor
from hybrid_jax.models import text
from hybrid_jax.models import video

Metadata = Mapping[str, Any]
metadata_value = decoders.metadata_value


@dataclasses.dataclass(frozen=True)
class InputKind:
  """Everything the code needs to know about one kind of input.

  Attributes:
    name: the value of config.task.
    config_file: the shipped config for this kind (named in errors).
    batch_keys: model-input batch keys -> dtype ('length' optional where listed).
    model: the Flax module class; its fields are `config.model`'s (see `create_model`).
    dummy_inputs: (model config, batch size) -> zeros shaped like a batch's inputs.
    decoder: (config, dataset metadata) -> a picklable decoder (data/decoders.py) with
      `__call__(record)` and `inputs(raw)`; its `key` attribute names the record feature it reads.
    data_fields: model config fields the data determines: (dataset metadata) -> {field: value}.
    adjustable: data fields a config may set differently (the pipeline adapts), with their minimum.
    default_head: the head when config.head='' and no data has been read (model summaries).
    catalog_feature: the tfds feature class name that marks a TFDS catalog dataset of this kind.
    saved_metadata: (config, dataset metadata) -> the JSON-able part of the metadata its decoder
      reads, which a run stores (inference.json) to decode raw inputs without the dataset.
    raw_shape: (config) -> the shape one raw input must have for prediction (None entries: any
      size), or None when raw inputs are strings (text).
    raw_description: (config) -> what one raw input is, in words (messages, the predict CLI).
    check_raw: (index, array) -> None; raises InputError for values the kind cannot take.
    example_ndim: dimensions of one example in an array file (None: a text file, one per line).
  """

  name: str
  config_file: str
  batch_keys: dict[str, Any]
  model: type
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
  check_raw: Callable[[int, np.ndarray], None] = lambda index, array: None
  example_ndim: int | None = None

  @property
  def input_keys(self) -> tuple[str, ...]:
    return tuple(self.batch_keys)

  def model_fields(self) -> tuple[str, ...]:
    """The fields `config.model` may hold: the model class's, less those other settings give."""
    return tuple(f.name for f in dataclasses.fields(self.model) if f.name not in _NOT_MODEL_FIELDS)


# Module fields that do not come from config.model: the head (config.head) and Flax's own.
_NOT_MODEL_FIELDS = ('regression', 'parent', 'name')


def _check_clip_values(index: int, x: np.ndarray) -> None:
  low, high = float(x.min()), float(x.max())
  if np.issubdtype(x.dtype, np.floating) and (low < 0 or high > 1):
    raise InputError(
      f'Input {index} is a float clip with values in [{low:g}, {high:g}]; float '
      'clips are intensities in [0, 1]: pass uint8 pixels instead.'
    )
  if np.issubdtype(x.dtype, np.integer) and (low < 0 or high > 255):
    raise InputError(f'Input {index} has pixel values in [{low:g}, {high:g}]; pass pixels 0..255.')


def _text_fields(metadata: Metadata) -> dict[str, Any]:
  vocab = metadata_value(metadata, 'vocab', 'the train vocabulary, PAD=0, OOV=1')
  lengths = metadata_value(
    metadata, 'train_length_percentiles', "train token counts, e.g. {'95': 120}"
  )
  return {'vocab_size': len(vocab), 'max_length': int(lengths['95'])}


def _sensor_decoder(config, metadata):
  metadata = metadata or {}
  return decoders.SensorDecoder(
    config.model.window_shape, metadata.get('feature_mean'), metadata.get('feature_std')
  )


def _sensor_raw_shape(config) -> tuple:
  """Fixed windows (pooling='flatten') take exactly window_shape; others any time >= 1."""
  time, *channels = config.model.window_shape
  return (time if config.model.pooling == 'flatten' else None, *channels)


def _shape_str(shape) -> str:
  return '(' + ', '.join('any' if s is None else str(s) for s in shape) + ')'


INPUT_KINDS = {
  'video': InputKind(
    name='video',
    config_file='configs/video.py',
    batch_keys={'clip': np.uint8},
    model=video.VideoModel,
    dummy_inputs=lambda m, b: {'clip': np.zeros((b, m.num_frames, *m.frame_shape), np.uint8)},
    decoder=lambda config, metadata: decoders.VideoDecoder(
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
    check_raw=_check_clip_values,
    example_ndim=4,
  ),
  'text': InputKind(
    name='text',
    config_file='configs/text.py',
    batch_keys={'tokens': np.int32, 'length': np.int32},
    model=text.TextModel,
    dummy_inputs=lambda m, b: {
      'tokens': np.zeros((b, m.max_length), np.int32),
      'length': np.full((b,), m.max_length, np.int32),
    },
    decoder=lambda config, metadata: decoders.TextDecoder(
      config.model.vocab_size, config.model.max_length, (metadata or {}).get('vocab')
    ),
    data_fields=_text_fields,
    # PAD, OOV, >= 1 word; >= 1 token.
    adjustable={'vocab_size': 3, 'max_length': 1},
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
    model=sensor.SensorModel,
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
    example_ndim=3,
  ),
}


def input_kind(config_or_name) -> InputKind:
  """The InputKind of `config.task` (or of a kind name)."""
  name = config_or_name if isinstance(config_or_name, str) else config_or_name.task
  if name not in INPUT_KINDS:
    raise ConfigError(f'Unknown config.task={name!r}: use one of {tuple(INPUT_KINDS)}.')
  return INPUT_KINDS[name]


def head(config: ml_collections.ConfigDict) -> heads.Head:
  """The Head of `config.head`; '' before the data is read: the input kind's default head."""
  return heads.head(config.get('head', ''), default=input_kind(config).default_head)


def is_regression(config: ml_collections.ConfigDict) -> bool:
  """Whether `config`'s head is a Dense(1) regression (trained with MSE)."""
  return head(config).regression


def _hashable(value: Any) -> Any:
  """Config values as Flax module fields: lists (from JSON or the command line) become tuples."""
  return tuple(value) if isinstance(value, list) else value


def create_model(config: ml_collections.ConfigDict):
  """The input kind's model, built from every field of `config.model` (and the head).

  `config_validation.validate` checks first that `config.model` holds only the class's fields.
  """
  fields = {k: _hashable(v) for k, v in config.model.items()}
  return input_kind(config).model(**fields, regression=head(config).regression)


def dummy_batch(config: ml_collections.ConfigDict, batch_size: int = 2) -> dict[str, np.ndarray]:
  """Zeros shaped like a batch of model inputs of `config`, for init, shapes and summaries."""
  return input_kind(config).dummy_inputs(config.model, batch_size)


# The model-field choices that configs may name, by config field (config_validation checks them).
MODEL_CHOICES = {
  'model.branches': fusion.BRANCHES,
  'model.fusion': fusion.FUSIONS,
  'model.dtype': tuple(fusion.DTYPES),
  'model.lstm_projection': lstm.PROJECTIONS,
  'model.pooling': conv.SENSOR_POOLINGS,
  'model.frame_cnn_formulation': conv.FRAME_CNN_FORMULATIONS,
  'model.frame_cnn_batching': video.FRAME_CNN_BATCHINGS,
}
