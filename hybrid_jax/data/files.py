"""Your files as a dataset: which files (`config.dataset.files`) and one reader per file format.

  paths = split_paths('data/JapaneseVowels_TRAIN.ts')   # {'train': ..., 'test': .../_TEST.ts}
  rows = read(path, options)                             # Rows: examples, labels or targets, where

`config.dataset.files` is one of
  * `train=PATH,test=PATH[,validation=PATH]`: one file per split;
  * `NAME_TRAIN.<ext>` or the folder holding it: `NAME_TEST.<ext>` beside it is the test split
    (the UEA/UCR archive's layout; `NAME_VALIDATION.<ext>` too when present);
  * any other single file: its split column ('train' / 'validation' / 'test') when it has one,
    else it is carved into all three (`file_splits.py`).

Readers are keyed by file format, not by input kind; what they return decides the kind
(`file_dataset.py`): texts (str), series (float [time, channels]) or clips ([time, H, W, C]).
  .ts            UEA/UCR series: multivariate, variable length, class labels (@classLabel) or
                 numeric targets (@targetLabel); '?' is a missing value (see fill_missing)
  .csv, .jsonl   texts: a text column and a label (or target) column, names set in config.dataset
  .npz           arrays: x [N, T, C] series (optional `lengths` [N]) or [N, T, H, W, C] clips
                 (uint8, or floats in [0, 1]), y [N] (integers or strings: labels; floats:
                 targets), optional `split` [N]
  .npy           x alone; y from `<stem>_y.npy` beside it

Every problem is a one-line DataError naming the file, the line (or row) and what to do.
"""

import csv
import dataclasses
import json
import os
from typing import Any

import numpy as np

from hybrid_jax.errors import ConfigError
from hybrid_jax.errors import DataError

SPLITS = ('train', 'validation', 'test')
FORMATS = ('.ts', '.csv', '.jsonl', '.npz', '.npy')


@dataclasses.dataclass
class Options:
  """The reading options of config.dataset (column names, missing values)."""

  text_column: str = 'text'
  label_column: str = 'label'
  target_column: str = 'target'
  split_column: str = 'split'
  # '' : a missing value (NaN, '?') is an error; 'forward': the last value before it (else 0).
  fill_missing: str = ''

  @classmethod
  def of(cls, dataset_config) -> 'Options':
    options = cls(**{f.name: dataset_config[f.name] for f in dataclasses.fields(cls)})
    if options.fill_missing not in ('', 'forward'):
      raise ConfigError(
        f'config.dataset.fill_missing={options.fill_missing!r}: use forward, or nothing.'
      )
    return options


@dataclasses.dataclass
class Rows:
  """One file's examples.

  Attributes:
    examples: per example: a str (text) or an array ([time, channels] series, [T, H, W, C] clip).
    labels: class label names (str) per example, or None for targets.
    targets: float64 [n] targets, or None for labels.
    where: 'path:line' (or 'path row i') per example, for errors.
    splits: the split column's value per example, or None.
    label_order: the label names in the file's declared order (.ts @classLabel), else ().
  """

  examples: list[Any]
  labels: list[str] | None
  targets: np.ndarray | None
  where: list[str]
  splits: list[str] | None = None
  label_order: tuple[str, ...] = ()


def split_paths(spec: str) -> dict[str, str]:
  """config.dataset.files -> {split: path} ({'all': path} for one file to split by column/carve)."""
  spec = spec.strip()
  if '=' in spec:
    paths = {}
    for item in spec.split(','):
      split, _, path = item.partition('=')
      split = split.strip()
      if split not in SPLITS or not path.strip():
        raise DataError(
          f'config.dataset.files entry {item!r} is not split=PATH with split one of {SPLITS}: '
          "write e.g. --config.dataset.files='train=a.csv,test=b.csv'."
        )
      paths[split] = _existing(path.strip())
    if 'train' not in paths:
      raise DataError(f'config.dataset.files={spec!r} names no train file: add train=PATH.')
    return paths
  path = _existing(spec)
  if os.path.isdir(path):
    found = sorted(f for f in os.listdir(path) if os.path.splitext(f)[0].upper().endswith('_TRAIN'))
    if len(found) != 1:
      raise DataError(
        f'{path} holds {len(found)} NAME_TRAIN files ({", ".join(found) or "none"}): give the '
        "file itself, or --config.dataset.files='train=PATH,test=PATH'."
      )
    path = os.path.join(path, found[0])
  stem, ext = os.path.splitext(path)
  if not stem.upper().endswith('_TRAIN'):
    return {'all': path}
  paths = {'train': path}
  for split in ('test', 'validation'):
    other = stem[: -len('_TRAIN')] + '_' + _same_case(split, stem[-5:]) + ext
    if os.path.isfile(other):
      paths[split] = other
  if 'test' not in paths:
    raise DataError(
      f'{path} has no {os.path.basename(stem[:-6])}_TEST{ext} beside it: put it there, or give '
      f"--config.dataset.files='train={path},test=PATH'."
    )
  return paths


def _same_case(word: str, like: str) -> str:
  return word.upper() if like.isupper() else word


def _existing(path: str) -> str:
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.exists(path):
    raise DataError(f'{path} does not exist: fix config.dataset.files.')
  return path


def read(path: str, options: Options) -> Rows:
  """Reads one file with the reader of its format (one-line DataError when it cannot)."""
  ext = os.path.splitext(path)[1].lower()
  readers = {'.ts': _read_ts, '.csv': _read_csv, '.jsonl': _read_jsonl}
  readers.update({'.npz': _read_arrays, '.npy': _read_arrays})
  if ext not in readers:
    raise DataError(f'{path}: unknown format {ext!r}: use one of {", ".join(FORMATS)}.')
  try:
    rows = readers[ext](path, options)
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f'{path} cannot be read ({e}): check the file.') from None
  if not rows.examples:
    raise DataError(f'{path} holds no examples: add some, or drop the file.')
  return rows


def parse_ts(text: str, path: str = '<text>', fill_missing: str = '') -> Rows:
  """A UEA/UCR `.ts` file's text -> Rows of float32 series [time, channels]."""
  header: dict[str, str] = {}
  examples, labels, targets, where = [], [], [], []
  in_data = False
  for number, line in enumerate(text.splitlines(), 1):
    line = line.strip()
    if not line or line.startswith('#'):
      continue
    at = f'{path}:{number}'
    if not in_data:
      if not line.startswith('@'):
        raise DataError(f'{at}: expected a @header line or @data before the series: fix the file.')
      key, _, value = line[1:].partition(' ')
      key = key.lower()
      in_data = key == 'data'
      header[key] = value.strip()
      continue
    classes = _is_true(header.get('classlabel', 'false'))
    numeric = _is_true(header.get('targetlabel', 'false'))
    if not (classes or numeric):
      raise DataError(
        f'{at}: the header declares neither @classLabel true nor @targetLabel true: '
        'a dataset needs a label or a target on every line.'
      )
    if _is_true(header.get('timestamps', 'false')):
      raise DataError(f'{path}: @timeStamps true is not supported: write plain values.')
    *dims, label = line.split(':')
    if not dims:
      raise DataError(f'{at}: no series before the label: write dim1:dim2:...:label.')
    expected = header.get('dimensions')
    if expected and expected.isdigit() and int(expected) != len(dims):
      raise DataError(f'{at}: {len(dims)} dimensions but @dimensions {expected}: fix the line.')
    try:
      values = [[_ts_value(v) for v in dim.split(',')] for dim in dims]
    except ValueError as e:
      raise DataError(f'{at}: {e}: fix the value.') from None
    if len({len(v) for v in values}) != 1:
      raise DataError(
        f'{at}: dimensions of different lengths {sorted({len(v) for v in values})}: every '
        'dimension of a series must have one value per time step.'
      )
    series = np.array(values, np.float32).T
    examples.append(fill(series, fill_missing, at, '? or NaN'))
    where.append(at)
    label = label.strip()
    if numeric:
      try:
        targets.append(float(label))
      except ValueError:
        raise DataError(f'{at}: target {label!r} is not a number: fix the line.') from None
    else:
      declared = header['classlabel'].split()[1:]
      if declared and label not in declared:
        raise DataError(
          f'{at}: label {label!r} is not among @classLabel {" ".join(declared)}: fix the line '
          'or the header.'
        )
      labels.append(label)
  if not in_data:
    raise DataError(f'{path} has no @data line: is it a UEA/UCR .ts file?')
  numeric = _is_true(header.get('targetlabel', 'false'))
  return Rows(
    examples=examples,
    labels=None if numeric else labels,
    targets=np.array(targets, np.float64) if numeric else None,
    where=where,
    label_order=tuple(header.get('classlabel', '').split()[1:]),
  )


def _is_true(value: str) -> bool:
  return value.split()[0].lower() == 'true' if value.split() else False


def _ts_value(value: str) -> float:
  value = value.strip()
  if value in ('?', 'NaN', 'nan'):
    return float('nan')
  try:
    return float(value)
  except ValueError:
    raise ValueError(f'{value!r} is not a number') from None


def fill(series: np.ndarray, how: str, at: str, what: str = 'NaN') -> np.ndarray:
  """A series with NaN: filled forward (config.dataset.fill_missing='forward') or an error."""
  missing = np.isnan(series)
  if not missing.any():
    return series
  if how != 'forward':
    raise DataError(
      f'{at}: the series has missing values ({what}): fix them, or set '
      "--config.dataset.fill_missing=forward to carry the last value forward."
    )
  series = series.copy()
  for t in range(len(series)):
    gap = np.isnan(series[t])
    series[t, gap] = series[t - 1, gap] if t else 0.0
  return series


def _read_ts(path: str, options: Options) -> Rows:
  with open(path, encoding='utf-8') as f:
    return parse_ts(f.read(), path, options.fill_missing)


def text_rows(records, path: str, options: Options) -> Rows:
  """(line, dict) records -> Rows of texts with a label or a target column."""
  examples, values, where, splits = [], [], [], []
  numeric = None
  for number, record in records:
    at = f'{path}:{number}'
    if numeric is None:
      numeric = options.label_column not in record and options.target_column in record
      has = options.target_column if numeric else options.label_column
      if options.text_column not in record or has not in record:
        missing = options.text_column if options.text_column not in record else has
        raise DataError(
          f'{at}: no {missing!r} column (found {", ".join(map(repr, record)) or "none"}): set '
          f'--config.dataset.{"text" if missing == options.text_column else "label"}_column.'
        )
    column = options.target_column if numeric else options.label_column
    text, value = record.get(options.text_column), record.get(column)
    if text is None or value is None or str(value).strip() == '':
      raise DataError(
        f'{at}: empty {options.text_column!r} or {column!r}: fill it or drop the row.'
      )
    if numeric:
      try:
        value = float(value)
      except (TypeError, ValueError):
        raise DataError(f'{at}: target {value!r} is not a number: fix the row.') from None
    examples.append(str(text))
    values.append(value if numeric else str(value).strip())
    where.append(at)
    splits.append(str(record.get(options.split_column, '')).strip())
  return Rows(
    examples=examples,
    labels=None if numeric else values,
    targets=np.array(values, np.float64) if numeric else None,
    where=where,
    splits=splits if any(splits) else None,
  )


def _read_csv(path: str, options: Options) -> Rows:
  with open(path, encoding='utf-8-sig', newline='') as f:
    reader = csv.DictReader(f)
    try:
      records = [(reader.line_num, row) for row in reader]
    except csv.Error as e:
      raise DataError(f'{path}:{reader.line_num}: malformed CSV ({e}): fix the line.') from None
  for number, row in records:
    if None in row or None in row.values():
      raise DataError(
        f'{path}:{number}: {len(row) - (None in row)} fields where the header has '
        f'{len(reader.fieldnames or ())}: quote texts that hold commas.'
      )
  return text_rows(records, path, options)


def _read_jsonl(path: str, options: Options) -> Rows:
  records = []
  with open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f'{path}:{number}: not JSON ({e.msg}): one object per line.') from None
      if not isinstance(record, dict):
        raise DataError(f'{path}:{number}: not a JSON object: write one {{...}} per line.')
      records.append((number, record))
  return text_rows(records, path, options)


def _read_arrays(path: str, options: Options) -> Rows:
  """x [N, T, C] series or [N, T, H, W, C] clips; y labels or targets; optional lengths, split."""
  try:
    if path.endswith('.npy'):
      arrays = {'x': np.load(path, allow_pickle=False)}
      y_path = path[: -len('.npy')] + '_y.npy'
      if not os.path.isfile(y_path):
        raise DataError(f'{path}: no labels: put y [N] in {y_path} (or use one .npz with x, y).')
      arrays['y'] = np.load(y_path, allow_pickle=False)
    else:
      with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
  except ValueError as e:
    raise DataError(f'{path} cannot be read as NumPy arrays ({e}): save plain arrays.') from None
  if 'x' not in arrays or 'y' not in arrays:
    raise DataError(f'{path} holds {sorted(arrays)}: it needs x (the examples) and y (labels).')
  x, y = arrays['x'], np.asarray(arrays['y'])
  if x.ndim not in (3, 5) or y.shape != (len(x),):
    raise DataError(
      f'{path}: x {x.shape} and y {y.shape}: x must be [N, T, C] series or [N, T, H, W, C] '
      'clips and y [N].'
    )
  where = [f'{path} row {i}' for i in range(len(x))]
  if x.ndim == 3:
    x = x.astype(np.float32)
    lengths = arrays.get('lengths')
    if lengths is not None and (
      lengths.shape != (len(x),) or (lengths < 1).any() or (lengths > x.shape[1]).any()
    ):
      raise DataError(f'{path}: lengths must be [N] integers in 1..{x.shape[1]}.')
    examples = [
      fill(s[: int(n)], options.fill_missing, at)
      for s, n, at in zip(x, lengths if lengths is not None else [x.shape[1]] * len(x), where)
    ]
  else:
    examples = list(x)
  numeric = np.issubdtype(y.dtype, np.floating)
  split = arrays.get('split')
  return Rows(
    examples=examples,
    labels=None if numeric else [str(v) for v in y.tolist()],
    targets=y.astype(np.float64) if numeric else None,
    where=where,
    splits=None if split is None else [str(s) for s in split.tolist()],
  )
