"""Every check of a config's own values, in one place, and the run fingerprint.

  validate(config)                  # raises ConfigError: one line naming the field and what to use
  fingerprint(config)               # {'model.lstm_units': 32, 'seed': 0, ...}: what defines a run
  fingerprint_diff(stored, config)  # ['seed: 0 -> 1', ...]: fields that differ from a stored run

`validate` runs once, before a run touches the workdir, so a bad value never leaves anything
behind: enums (task, head, schedule, and the model's switches, from `input_kinds.MODEL_CHOICES`),
numbers and their ranges, the model's fields (exactly the model class's), and the checks that
relate two fields (warmup < steps, the key frame inside the clip). Consistency with a dataset (its
shapes, the number of classes) is checked where the data is read (data/datasets.py).
"""

import math
from typing import Any, Mapping

import ml_collections

from hybrid_jax import heads
from hybrid_jax import input_kinds
from hybrid_jax import steps
from hybrid_jax.errors import ConfigError

# Fields that define a run: resuming a workdir with any of them changed is refused. A prefix ending
# in '.' covers every field below it, present or future (e.g. all of `model.`). A name missing from
# a config (an older config without a newer field) is simply not compared.
RUN_DEFINING = (
  'task',
  'head',
  'seed',
  'model.',
  'dataset.name',
  'dataset.train_split',
  'dataset.builder_module',
  # Your files (data/files.py) and how they are read and split.
  'dataset.files',
  'dataset.text_column',
  'dataset.label_column',
  'dataset.target_column',
  'dataset.split_column',
  'dataset.fill_missing',
  'dataset.validation_fraction',
  'dataset.test_fraction',
  'dataset.split_seed',
  'dataset.time_order',
  'batch_size',  # The data iterator's saved position counts batches of this size.
  'learning_rate',
  'lr_schedule',
  'warmup_steps',
  'grad_clip_norm',
  'weight_decay',
  # The members of a population (hybrid_jax/population.py).
  'population.',
)

# Fields that may change when a run is resumed (they do not change what was trained so far).
# `num_train_steps` may grow to train longer; with lr_schedule='warmup_cosine' this also stretches
# the remaining schedule, which is the user's choice.
MAY_CHANGE_ON_RESUME = (
  'num_train_steps',
  'eval_batch_size',
  'log_every_steps',
  'eval_every_steps',
  'checkpoint_every_steps',
  'keep_checkpoints',
  'best_metric',
  'top_k',
  'distributed',
  'init_checkpoint',
  'dataset.eval_split',
  'dataset.data_dir',
  'dataset.num_workers',
  # What the data resolution recorded about the splits it made (follows from the fields above).
  'dataset.splits_made',
  'profile_steps',
  'early_stopping_patience',
)

_ENUMS = {
  'task': tuple(input_kinds.INPUT_KINDS),
  'head': ('',) + tuple(heads.HEADS),
  'lr_schedule': tuple(steps.SCHEDULES),
  **input_kinds.MODEL_CHOICES,
}
# Fields the data may determine: None is valid until the dataset fills them (data.load_info).
_DATA_DETERMINED = (
  'model.num_classes',
  'model.vocab_size',
  'model.max_length',
  'model.num_frames',
  'model.window_shape',
  'model.frame_shape',
)
_POSITIVE_INTS = (
  'batch_size',
  'eval_batch_size',
  'num_train_steps',
  'log_every_steps',
  'eval_every_steps',
  'checkpoint_every_steps',
  'keep_checkpoints',
  'model.fusion_dim',
  'model.kernel_size',
  'model.lstm_units',
  'model.num_classes',
  'model.vocab_size',
  'model.max_length',
  'model.embed_dim',
  'model.num_frames',
)
_NON_NEGATIVE_INTS = (
  'seed',
  'warmup_steps',
  'top_k',
  'dataset.num_workers',
  'profile_steps',
  'early_stopping_patience',
)
_NON_NEGATIVE_FLOATS = ('learning_rate', 'grad_clip_norm', 'weight_decay', 'model.aux_loss_weight')
_POSITIVE_INT_TUPLES = ('model.conv_features', 'model.window_shape', 'model.frame_shape')


def flatten(config: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """{'model.lstm_units': 32, ...}: every leaf field of a (nested) config by dotted name."""
  out = {}
  for key, value in config.items():
    if isinstance(value, (Mapping, ml_collections.ConfigDict)):
      out.update(flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every numeric and enum field; raises ConfigError (one line) on the first bad one.

  Raises:
    ConfigError: names the field, its value and what to use instead.
  """
  fields = {
    name: value
    for name, value in flatten(config).items()
    if not (value is None and name in _DATA_DETERMINED)
  }

  def fail(name: str, what: str) -> None:
    raise ConfigError(f'config.{name}={fields[name]!r} {what}: set --config.{name}.')

  for name, allowed in _ENUMS.items():
    if name in fields and fields[name] not in allowed:
      fail(name, f'is not one of {allowed}')
  for name in _POSITIVE_INTS:
    if name in fields and not (_is_int(fields[name]) and fields[name] > 0):
      fail(name, 'must be an integer > 0')
  for name in _NON_NEGATIVE_INTS:
    if name in fields and not (_is_int(fields[name]) and fields[name] >= 0):
      fail(name, 'must be an integer >= 0')
  for name in _NON_NEGATIVE_FLOATS:
    value = fields.get(name, 0.0)
    if not (_is_number(value) and math.isfinite(value) and value >= 0):
      fail(name, 'must be a finite number >= 0')
  for name in _POSITIVE_INT_TUPLES:
    if name in fields:
      value = fields[name]
      if not (
        isinstance(value, (tuple, list)) and value and all(_is_int(v) and v > 0 for v in value)
      ):
        fail(name, 'must be a non-empty tuple of integers > 0, e.g. (64,)')
  for name in ('model.dropout_rate', 'model.branch_dropout'):
    if name in fields and not (_is_number(fields[name]) and 0 <= fields[name] < 1):
      fail(name, 'must be a number in [0, 1)')
  if (
    fields.get('lr_schedule') == 'warmup_cosine'
    and _is_int(fields.get('warmup_steps'))
    and fields['warmup_steps'] >= fields['num_train_steps']
  ):
    fail('warmup_steps', f'must be < num_train_steps={fields["num_train_steps"]}')
  _check_model_fields(config)
  if 'model.key_frame_index' in fields and _is_int(fields.get('model.num_frames')):
    index, frames = fields['model.key_frame_index'], fields['model.num_frames']
    if not (_is_int(index) and -frames <= index < frames):
      fail('model.key_frame_index', f'is outside a clip of {frames} frames (use 0..{frames - 1})')


def _check_model_fields(config: ml_collections.ConfigDict) -> None:
  """config.model holds exactly fields of the input kind's model class (create_model passes all)."""
  if 'model' not in config or config.get('task') not in input_kinds.INPUT_KINDS:
    return
  kind = input_kinds.input_kind(config)
  allowed = kind.model_fields()
  unknown = sorted(set(config.model.keys()) - set(allowed))
  if unknown:
    raise ConfigError(
      f'config.model.{unknown[0]} is not a field of {kind.model.__name__}: remove it from the '
      f'config (its fields: {", ".join(sorted(allowed))}).'
    )


def _defines_run(name: str) -> bool:
  return any(name == f or (f.endswith('.') and name.startswith(f)) for f in RUN_DEFINING)


def fingerprint(config: Mapping[str, Any]) -> dict[str, Any]:
  """The run-defining fields of `config` (see RUN_DEFINING), JSON-ready (tuples as lists)."""
  return {
    name: list(value) if isinstance(value, tuple) else value
    for name, value in sorted(flatten(config).items())
    if _defines_run(name)
  }


def fingerprint_diff(stored: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
  """['model.lstm_units: 32 -> 8', ...] for run-defining fields that differ (stored -> current).

  A field present on one side only (a config from an older version) is not compared.
  """
  return field_diff(stored, fingerprint(config))


def field_diff(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
  """['name: old -> new', ...] for the flat fields both hold that differ (a field on one side only
  is not compared; a stored tuple is compared as a list)."""
  diffs = []
  for name in sorted(set(stored) & set(current)):
    old, new = stored[name], current[name]
    if isinstance(old, (list, tuple)):
      old = list(old)
    if old != new:
      diffs.append(f'{name}: {old!r} -> {new!r}')
  return diffs
