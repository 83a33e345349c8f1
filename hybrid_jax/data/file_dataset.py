"""Files (or in-memory arrays) -> a prepared TFDS dataset, cached by content, like the shipped ones.

  builder, note = prepare_files(config.dataset)    # --config.dataset.files=...; resolve() calls it
  name = from_arrays('my_set', train=(x, y), test=(x, y))   # then --config.dataset.name=my_set

The rows are read (`files.py`), split and checked (`file_splits.py`) before anything is written;
then a TFDS builder generated for them prepares array_record files into
`<data_dir>/hybrid_jax_files/<name>/` under a file lock. A files dataset's name ends with the
sha256 of the files and the reading options, so an edited file is prepared again, never read
stale; `from_arrays` keeps the name it is given and re-prepares when the arrays' sha256 changes.

The examples' form decides the input kind and the head (`file_forms.py`).
"""

import hashlib
import json
import os
import pathlib
import re
import shutil
import sys

import numpy as np
import tensorflow_datasets as tfds

from hybrid_jax import fileio
from hybrid_jax.data import file_forms
from hybrid_jax.data import file_splits
from hybrid_jax.data import files
from hybrid_jax.data.builders import common
from hybrid_jax.errors import DataError

# Bump when the prepared layout changes (part of every cache key).
FORMAT_VERSION = '1.0.0'
FOLDER = 'hybrid_jax_files'


class FilesConfig(tfds.core.BuilderConfig):
  """One files dataset; `spec` (the rows, features and metadata) is set only to prepare it."""

  def __init__(self, *, spec=None, **kwargs):
    super().__init__(**kwargs)
    self.spec = spec


class HybridJaxFiles(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A dataset read from your files (or arrays); see hybrid_jax/data/file_dataset.py."""

  VERSION = tfds.core.Version(FORMAT_VERSION)

  def _info(self) -> tfds.core.DatasetInfo:
    spec = self.builder_config.spec
    return self.dataset_info_from_configs(
      description=self.__doc__,
      features=tfds.features.FeaturesDict(spec['features']),
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything was read before.
    spec = self.builder_config.spec
    self.info.metadata.update(spec['metadata'])
    return {split: self._generate_examples(rows) for split, rows in spec['splits'].items()}

  def _generate_examples(self, rows):
    spec = self.builder_config.spec
    encode, label = spec['encode'], spec['label']
    for i, x in enumerate(rows.examples):
      yield i, {**encode(x), **label(rows, i)}


def _root(data_dir: str | None) -> str:
  return os.path.join(os.path.expanduser(data_dir or tfds.core.constants.DATA_DIR), FOLDER)


def prepared_dir(name: str, data_dir: str | None) -> str | None:
  """The prepared dataset's directory, or None when `name` is not a prepared files dataset."""
  path = os.path.join(_root(data_dir), name, FORMAT_VERSION)
  return path if os.path.isfile(os.path.join(path, 'dataset_info.json')) else None


def open_prepared(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """The prepared files dataset `name`, opened for reading (one-line DataError if absent)."""
  path = prepared_dir(name, data_dir)
  if path is None:
    raise DataError(f'No prepared files dataset {name!r} in {_root(data_dir)}: prepare it first.')
  return tfds.builder_from_directory(path)


def _prepare(name: str, data_dir: str | None, build_spec, digest: str) -> tfds.core.DatasetBuilder:
  """Prepares (under a lock) unless prepared with the same `digest`; returns it opened."""
  path = prepared_dir(name, data_dir)
  if path and _stored_digest(path) == digest:
    return tfds.builder_from_directory(path)
  spec = build_spec()  # Reads and checks everything before anything is written.
  spec['metadata']['sha256'] = digest
  with fileio.locked(os.path.join(_root(data_dir), f'.{name}.lock')):
    path = prepared_dir(name, data_dir)
    if path and _stored_digest(path) != digest:
      shutil.rmtree(os.path.dirname(path))
    if not prepared_dir(name, data_dir):
      print(f'Preparing {name} into {_root(data_dir)}...', file=sys.stderr, flush=True)
      tfds.display_progress_bar(False)
      builder = HybridJaxFiles(
        data_dir=os.path.dirname(_root(data_dir)),
        config=FilesConfig(name=name, spec=spec),
        file_format='array_record',
      )
      builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
      )
  return open_prepared(name, data_dir)


def _stored_digest(path: str) -> str:
  try:
    with open(os.path.join(path, 'metadata.json'), encoding='utf-8') as f:
      return json.load(f).get('sha256', '')
  except (OSError, ValueError):
    return ''


def files_name(dataset_config) -> tuple[str, dict[str, str], str]:
  """(name, {split: path}, digest) of config.dataset.files: the name ends with the digest."""
  paths = files.split_paths(dataset_config.files)
  digest = hashlib.sha256()
  for split in sorted(paths):
    digest.update(f'{split}={common.sha256_of(pathlib.Path(paths[split]))};'.encode())
  options = {**_reading(dataset_config), 'format': FORMAT_VERSION}
  digest.update(json.dumps(options, sort_keys=True).encode())
  stem = os.path.splitext(os.path.basename(paths.get('train', paths.get('all'))))[0]
  stem = re.sub(r'(?i)_train$', '', stem)
  stem = re.sub(r'[^A-Za-z0-9_]', '_', stem)[:40] or 'files'
  return f'{stem}_{digest.hexdigest()[:16]}', paths, digest.hexdigest()


def _reading(dataset_config) -> dict:
  return {
    **files.Options.of(dataset_config).__dict__,
    **file_splits.CarveSettings.of(dataset_config).__dict__,
  }


def prepare_files(dataset_config) -> tuple[tfds.core.DatasetBuilder, str]:
  """config.dataset (with `files`) -> (the prepared builder, its name)."""
  name, paths, digest = files_name(dataset_config)
  options = files.Options.of(dataset_config)
  settings = file_splits.CarveSettings.of(dataset_config)

  def build_spec():
    by_file = {split: files.read(path, options) for split, path in paths.items()}
    splits, note = file_splits.make_splits(by_file, settings)
    return file_forms.build(splits, note, {'files': paths})

  return _prepare(name, dataset_config.data_dir, build_spec, digest), name


def _rows(value, what: str, options: files.Options) -> files.Rows:
  """(x, y) arrays, or a pandas DataFrame of texts -> Rows."""
  if hasattr(value, 'to_dict') and hasattr(value, 'columns'):
    records = [(i, r) for i, r in enumerate(value.to_dict('records'))]
    return files.text_rows(records, what, options)
  x, y = value
  y = np.asarray(y)
  if len(x) != len(y) or y.ndim != 1:
    raise DataError(f'{what}: {len(x)} examples but y {y.shape}: give y [N], one per example.')
  examples = [str(v) if isinstance(v, (str, np.str_)) else np.asarray(v) for v in x]
  where = [f'{what} row {i}' for i in range(len(examples))]
  for i, e in enumerate(examples):
    if not isinstance(e, str) and e.ndim == 2:
      examples[i] = files.fill(e.astype(np.float32), options.fill_missing, where[i])
  numeric = np.issubdtype(y.dtype, np.floating)
  return files.Rows(
    examples=examples,
    labels=None if numeric else [str(v) for v in y.tolist()],
    targets=y.astype(np.float64) if numeric else None,
    where=where,
  )


def from_arrays(
  name: str,
  train,
  test=None,
  validation=None,
  *,
  data_dir: str | None = None,
  validation_fraction: float = 0.2,
  test_fraction: float = 0.2,
  split_seed: int | None = None,
  time_order: bool = False,
  text_column: str = 'text',
  label_column: str = 'label',
  target_column: str = 'target',
) -> str:
  """In-memory data -> the dataset `name`, prepared in `data_dir`; returns `name`.

  Each split is (x, y): x [N, T, C] series (or a list of [T_i, C] arrays), [N, T, H, W, C]
  clips or a list of texts; y [N] labels (int/str) or float targets. Or a pandas DataFrame with
  a text and a label (or target) column. Missing validation/test splits are carved as for files.
  Train it with config.dataset.name=name and the same data_dir.
  """
  if not re.fullmatch(r'[A-Za-z][A-Za-z0-9_]*', name or ''):
    raise DataError(f'Dataset name {name!r}: use letters, digits and _ (starting with a letter).')
  options = files.Options(text_column, label_column, target_column)
  settings = file_splits.CarveSettings(validation_fraction, test_fraction, split_seed, time_order)
  given = {'train': train, 'test': test, 'validation': validation}
  by_split = {s: _rows(v, f'{name} {s}', options) for s, v in given.items() if v is not None}
  digest = hashlib.sha256(repr(sorted(settings.__dict__.items())).encode())
  for split in sorted(by_split):
    rows = by_split[split]
    digest.update(split.encode())
    for x in rows.examples:
      digest.update(x.encode() if isinstance(x, str) else np.ascontiguousarray(x).tobytes())
      digest.update(str(getattr(x, 'shape', '')).encode())
    digest.update(repr(rows.labels if rows.labels is not None else rows.targets.tolist()).encode())

  def build_spec():
    splits, note = file_splits.make_splits(by_split, settings)
    return file_forms.build(splits, note, {'files': {}})

  _prepare(name, data_dir, build_spec, digest.hexdigest())
  return name


def open_dataset(dataset_config, may_be_named: bool):
  """(builder, name) of a files dataset: config.dataset.files, else a prepared `from_arrays` name
  (when `may_be_named`: not a shipped name); None when the dataset is not one."""
  if dataset_config.get('files'):
    builder, name = prepare_files(dataset_config)
    return builder, name
  name, data_dir = dataset_config.name, dataset_config.data_dir
  if may_be_named and name and prepared_dir(name, data_dir):
    return open_prepared(name, data_dir), name
  return None


def adopt(config, builder, kind) -> None:
  """Fills a resolved copy of the config from a files dataset: the split note (printed, and kept
  in config.dataset.splits_made, so config.json records it); data-determined model fields that
  `kind` cannot adjust are taken from the data (the task config's values name its shipped data)."""
  meta = builder.info.metadata
  config.dataset.splits_made = meta['splits_made']
  print(f'Dataset {config.dataset.name}: {meta["splits_made"]}.', flush=True)
  wanted = dict(kind.data_fields(meta))
  if 'label' in builder.info.features:
    wanted['num_classes'] = builder.info.features['label'].num_classes
  for field, value in wanted.items():
    if field in config.model and field not in kind.adjustable:
      current = config.model[field]
      if current is not None and _plain(current) != _plain(value):
        print(f'config.model.{field}: {_plain(current)} -> {_plain(value)} (from the data).')
      config.model[field] = None


def _plain(value):
  return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else value
