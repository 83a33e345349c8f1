"""Dataset resolution, once per run: name -> prepared TFDS builder, DataInfo and the resolved config.

  source = resolve(config)      # source.config: a copy of config with the data's facts filled in
  source.builder, source.info   # the prepared builder; sizes, classes, target statistics, baselines

`config.dataset.name` is a shipped builder (`shipped.SHIPPED`, each optionally '/tiny' or
':version') or a TFDS catalog name prepared in `data_dir` (see `catalog`). Shipped builders are
prepared on first use, offline, into `data_dir` (TFDS's default when None) under a file lock so that
concurrent processes build once. In the resolved config, model fields that were None are filled
from the data, and `config.head` is set from the data's features (a ClassLabel 'label' ->
classification, a 'target' -> regression, `heads.py`); explicit values that disagree with the data
fail here with one line naming the override to use. The caller's config is never changed: pass
`source` (or `source.config`) on instead of resolving again.
"""

import copy
import dataclasses
import importlib
import os
import sys
import time
from typing import Any

import tensorflow_datasets as tfds

import ml_collections

from hybrid_jax import fileio
from hybrid_jax import heads
from hybrid_jax import input_kinds
from hybrid_jax.data import catalog
from hybrid_jax.data import decoders
from hybrid_jax.data import file_dataset
from hybrid_jax.data import shipped
from hybrid_jax.data.shipped import base_name
from hybrid_jax.errors import DataError


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """What the model and the training loop need to know about a dataset.

  Attributes:
    name: config.dataset.name as given.
    task: the input kind: 'video' | 'text' | 'sensor'.
    head: 'classification' | 'regression' (`heads.HEADS`).
    num_train_examples, num_eval_examples: sizes of config.dataset.train_split / eval_split.
    num_classes: classification classes (None for regression).
    target_mean, target_std: regression only; batches carry (target - mean) / std, so an MAE in
      original units is the normalized MAE times target_std.
    baselines: naive scores on the eval split, e.g. {'chance_accuracy': 0.05} or
      {'persistence_mae': 4.6, 'train_mean_mae': 12.7} (regression: original units).
    label_names: class names by label id (classification).
    data_shapes: the model config fields the data determines, e.g. {'num_frames': 10, ...}.
  """

  name: str
  task: str
  head: str
  num_train_examples: int
  num_eval_examples: int
  num_classes: int | None
  target_mean: float | None
  target_std: float | None
  baselines: dict[str, float]
  label_names: tuple[str, ...] = ()
  data_shapes: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Source:
  """A resolved dataset: the resolved config, the prepared builder and how examples map to inputs.

  Attributes:
    config: a copy of the caller's config with `head` and the data-determined model fields filled.
    builder: the prepared TFDS builder.
    info: the dataset's facts (DataInfo).
    adapter: catalog.CatalogAdapter for catalog datasets, None for shipped (or own) builders.
  """

  config: ml_collections.ConfigDict
  builder: tfds.core.DatasetBuilder
  info: DataInfo
  adapter: Any

  @property
  def metadata(self) -> dict[str, Any]:
    """The dataset metadata decoders read: the builder's, or a catalog adapter's equivalent."""
    if self.adapter is not None:
      return self.adapter.metadata(self.info.task, self.config)
    return dict(self.builder.info.metadata or {})

  def records(self, split: str):
    """The random-access records of `split` (a TFDS split expression, e.g. 'train[:90%]')."""
    return self.builder.as_data_source(split=split)


def resolve(config: ml_collections.ConfigDict) -> Source:
  """Prepares (shipped, first use) and opens the dataset; checks `config` against it.

  Returns the Source, whose `config` is a resolved copy (`config` itself is not changed).
  """
  config = copy.deepcopy(config)
  name = config.dataset.name
  from_files = file_dataset.open_dataset(config.dataset, not shipped.is_shipped(name))
  if from_files:
    config.dataset.name = name = from_files[1]
  if not name:
    raise DataError(
      'config.dataset.name is empty: set --config.dataset.name to one of '
      f"{', '.join(shipped.SHIPPED)}."
    )
  data_dir = config.dataset.data_dir or None
  own_module = config.dataset.get('builder_module') or ''
  if own_module:
    _import_builder_module(own_module)
  if from_files:
    builder, adapter = from_files[0], None
  elif shipped.is_shipped(name) or _registered_by(name, own_module):
    builder = _shipped_builder(name, data_dir)
    adapter = None
  else:
    builder, adapter = catalog.open_builder(name, data_dir, DataError)
  if from_files:
    task = builder.info.metadata['input_kind']
  elif shipped.is_shipped(name):
    task = shipped.SHIPPED[base_name(name)].input_kind
  else:
    task = adapter.task if adapter else config.task
  if config.task and config.task != task:
    raise DataError(
      f"{name} is a {task} dataset but config.task={config.task!r}: use "
      f'--config={input_kinds.input_kind(task).config_file} (or pick a {config.task} dataset).'
    )
  kind = input_kinds.input_kind(task)
  if adapter is not None:
    head = heads.head_of_features(
      {'label': builder.info.features[adapter.label_key]}, config.head, name
    )
  else:
    head = heads.head_of_features(builder.info.features, config.head, name)
  config.head = head.name
  splits = builder.info.splits  # Empty only under tfds.testing.mock_data.
  for field in ('train_split', 'eval_split'):
    split = config.dataset[field]
    try:
      tfds.core.ReadInstruction.from_spec(split)
    except (ValueError, TypeError, AttributeError):
      raise DataError(
        f"config.dataset.{field}={split!r} is not a split expression: set --config.dataset.{field} "
        "to e.g. 'train', 'train[:90%]' or 'train[100:200]' (tensorflow.org/datasets/splits)."
      ) from None
    if splits and base_split(split) not in splits:
      if field == 'eval_split' and base_split(split) == 'validation':
        raise DataError(
          f"{name} has no 'validation' split: set --config.dataset.eval_split to one of "
          f'{sorted(splits)}, or give its files as --config.dataset.files=... (docs/data.md), '
          'which carves a stratified validation split from train.'
        )
      raise DataError(
        f"{name} has no split {split!r}: set --config.dataset.{field} to one of {sorted(splits)}."
      )
  if from_files:
    file_dataset.adopt(config, builder, kind)
  info = _data_info(config, builder, kind, head, adapter)
  _check_and_fill(config, info, kind, head, adjust_all=adapter is not None)
  return Source(config=config, builder=builder, info=info, adapter=adapter)


def _import_builder_module(module: str) -> None:
  """Imports the user's module that defines (and so registers) their own TFDS builder."""
  try:
    importlib.import_module(module)
  except ImportError as e:
    raise DataError(
      f'config.dataset.builder_module={module!r} cannot be imported ({e}): put its '
      'package on PYTHONPATH or fix the module path.'
    ) from None


def _registered_by(name: str, module: str) -> bool:
  """Whether dataset `name` is a builder defined in `module` (the user's own, built like ours)."""
  if not module:
    return False
  try:
    builder_module = tfds.builder_cls(base_name(name)).__module__
  except tfds.core.registered.DatasetNotFoundError:
    raise DataError(
      f'config.dataset.builder_module={module!r} defines no dataset {base_name(name)!r}: '
      'set --config.dataset.name to the snake_case name of its builder class.'
    ) from None
  return builder_module == module or builder_module.startswith(module + '.')


def base_split(split: str) -> str:
  return split.split('[')[0]


def prepare_shipped(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """Prepares a shipped builder (e.g. 'bbc_news/tiny') if needed; returns it opened for reading."""
  if not shipped.is_shipped(name):
    raise DataError(f"{name!r} is not a shipped dataset: use one of {', '.join(shipped.SHIPPED)}.")
  return _shipped_builder(name, data_dir)


def _shipped_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  try:
    builder = tfds.builder(name, data_dir=data_dir, file_format='array_record')
  except DataError:
    raise
  except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:
    raise DataError(
      f'Cannot open {name!r} ({str(e).splitlines()[0]}): configs are '
      f"{base_name(name)}, {base_name(name)}/tiny."
    ) from None
  except TypeError as e:  # importlib.resources refuses a builder module outside a package.
    raise DataError(
      f'Cannot open {name!r} ({str(e).splitlines()[0]}): a TFDS builder must live in '
      'a package (a folder with __init__.py).'
    ) from None
  if not catalog.is_prepared(builder):
    os.makedirs(builder.data_dir_root, exist_ok=True)
    with fileio.locked(os.path.join(builder.data_dir_root, f'.{base_name(name)}.lock')):
      builder = tfds.builder(name, data_dir=data_dir, file_format='array_record')
      if not catalog.is_prepared(builder):
        start = time.time()
        print(
          f'Preparing {builder.info.full_name} into {builder.data_dir_root} (first use, offline; '
          'later runs reuse it)...',
          file=sys.stderr,
          flush=True,
        )
        builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
        print(
          f'Prepared {builder.info.full_name} in {time.time() - start:.0f}s.',
          file=sys.stderr,
          flush=True,
        )
    builder = tfds.builder(name, data_dir=data_dir)
  return builder


def _data_info(config, builder, kind, head, adapter) -> DataInfo:
  num_train = len(builder.as_data_source(split=config.dataset.train_split))
  num_eval = len(builder.as_data_source(split=config.dataset.eval_split))
  if adapter is not None:
    meta = adapter.metadata(kind.name, config)
    baselines = {'chance_accuracy': 1 / len(adapter.label_names)}
  else:
    meta = builder.info.metadata or {}
    eval_base = base_split(config.dataset.eval_split)
    baselines = meta.get('baselines', {})
    # Per-split baselines, or split-independent ones.
    baselines = baselines.get(eval_base, baselines)
    baselines = {k: float(v) for k, v in baselines.items() if not isinstance(v, dict)}
  label_names, target_mean, target_std = (), None, None
  if head.regression:
    target_mean = float(decoders.metadata_value(meta, 'target_mean', "the train targets' mean"))
    target_std = float(decoders.metadata_value(meta, 'target_std', "the train targets' std"))
  else:
    label_key = adapter.label_key if adapter is not None else 'label'
    label_names = tuple(builder.info.features[label_key].names)
  return DataInfo(
    name=config.dataset.name,
    task=kind.name,
    head=head.name,
    num_train_examples=num_train,
    num_eval_examples=num_eval,
    num_classes=len(label_names) or None,
    target_mean=target_mean,
    target_std=target_std,
    baselines=baselines,
    label_names=label_names,
    data_shapes=kind.data_fields(meta),
  )


def _check_and_fill(config, info: DataInfo, kind, head, adjust_all: bool = False) -> None:
  """Fills None model fields from the data; one-line DataError when an explicit value disagrees.

  `kind.adjustable` fields (and every shape field when `adjust_all`: catalog data is resampled to
  the config) may differ from the data, above a minimum.
  """
  model = config.model
  wanted = dict(info.data_shapes)
  if not head.regression:
    wanted['num_classes'] = info.num_classes
  for field, value in wanted.items():
    if field not in model:
      raise DataError(
        f'{info.name} determines config.model.{field}, which this config lacks: use '
        f'--config={kind.config_file} or add the field to your config.'
      )
    current = model[field]
    if current is None:
      model[field] = value
    elif field in kind.adjustable or (adjust_all and field != 'num_classes'):
      if field in kind.adjustable and int(current) < kind.adjustable[field]:
        raise DataError(
          f'config.model.{field}={current} is too small: set --config.model.{field} '
          f'>= {kind.adjustable[field]}.'
        )
    elif _normalize(current) != _normalize(value):
      raise DataError(
        f'{info.name} has {field}={_fmt(value)} but config.model.{field}={_fmt(current)}: set '
        f'--config.model.{field}={_fmt(value)} (or None to take it from the data).'
      )


def _normalize(value):
  return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else int(value)


def _fmt(value) -> str:
  value = _normalize(value)
  return '(' + ','.join(str(v) for v in value) + ')' if isinstance(value, tuple) else str(value)
