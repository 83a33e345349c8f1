"""Train / validation / test from your files: given, from a split column, or carved, then checked.

  splits, note = make_splits(rows_by_file, settings)     # {'train': Rows, ...}, 'how they were made'

A missing validation split is carved from train, a missing test split too (a single file with no
split column): a deterministic *stratified* carve, `carve()`:
  * per class label (regression: per target rank), `round(n * fraction)` rows of each class go;
  * which rows: evenly spaced in file order (the last of every n/k rows; no randomness, the same on
    every machine), or with `split_seed` an int, a seeded shuffle within each class (NumPy PCG64);
  * `time_order=True` (rows in time order): the *last* rows of each class instead, a contiguous
    block, so validation never precedes the train rows it is compared with.
Then every split is checked: none empty, no validation/test label that train never saw, the same
labels-or-targets everywhere. Errors are one line naming the file and line.
"""

import dataclasses

import numpy as np

from hybrid_jax.data import files
from hybrid_jax.errors import ConfigError
from hybrid_jax.errors import DataError


@dataclasses.dataclass(frozen=True)
class CarveSettings:
  """The carve's fields of config.dataset."""

  validation_fraction: float = 0.2
  test_fraction: float = 0.2
  split_seed: int | None = None
  time_order: bool = False

  @classmethod
  def of(cls, dataset_config) -> 'CarveSettings':
    settings = cls(**{f.name: dataset_config[f.name] for f in dataclasses.fields(cls)})
    for field in ('validation_fraction', 'test_fraction'):
      if not 0 < getattr(settings, field) < 1:
        raise ConfigError(
          f'config.dataset.{field}={getattr(settings, field)}: use a share in (0, 1), e.g. 0.2.'
        )
    return settings


def carve(labels, fraction: float, seed: int | None = None, time_order: bool = False) -> np.ndarray:
  """Indices (sorted) of the rows carved out: stratified by label, deterministic.

  Args:
    labels: [n] class labels (str or int), or float targets (stratified by rank).
    fraction: share of each class carved out (rounded per class; at least one row in all).
  """
  labels = np.asarray(labels)
  if np.issubdtype(labels.dtype, np.floating):
    order = np.argsort(labels, kind='stable')
    groups = [np.arange(len(labels)) if time_order else order]
  else:
    groups = [np.flatnonzero(labels == v) for v in sorted(set(labels.tolist()), key=str)]
  counts = [int(np.floor(len(g) * fraction + 0.5)) for g in groups]
  if sum(counts) == 0 and len(labels) > 1 and fraction > 0:
    counts[int(np.argmax([len(g) for g in groups]))] = 1
  rng = None if seed is None else np.random.default_rng(seed)
  picked = []
  for group, k in zip(groups, counts):
    n = len(group)
    k = min(k, n - 1) if n > 1 else 0
    if not k:
      continue
    if time_order:
      picked.append(group[n - k :])
    elif rng is None:
      picked.append(group[(np.arange(1, k + 1) * n) // k - 1])
    else:
      picked.append(group[np.sort(rng.permutation(n)[:k])])
  return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def _take(rows: files.Rows, idx) -> files.Rows:
  idx = [int(i) for i in idx]
  return files.Rows(
    examples=[rows.examples[i] for i in idx],
    labels=None if rows.labels is None else [rows.labels[i] for i in idx],
    targets=None if rows.targets is None else rows.targets[idx],
    where=[rows.where[i] for i in idx],
    label_order=rows.label_order,
  )


def _split_off(rows: files.Rows, fraction, settings) -> tuple[files.Rows, files.Rows]:
  """(rest, carved) of `rows`."""
  values = rows.labels if rows.labels is not None else rows.targets
  out = carve(values, fraction, settings.split_seed, settings.time_order)
  keep = np.setdiff1d(np.arange(len(rows.examples)), out)
  return _take(rows, keep), _take(rows, out)


def make_splits(
  by_file: dict[str, files.Rows], settings: CarveSettings
) -> tuple[dict[str, files.Rows], str]:
  """{'train'|'validation'|'test'|'all': Rows} -> the three splits and a line saying how."""
  splits = dict(by_file)
  made = []
  if 'all' in splits:
    rows = splits.pop('all')
    if rows.splits is not None:
      unknown = sorted(set(rows.splits) - set(files.SPLITS))
      if unknown:
        first = rows.where[rows.splits.index(unknown[0])]
        raise DataError(
          f'{first}: split {unknown[0]!r} is not one of {files.SPLITS}: fix the split column.'
        )
      for split in files.SPLITS:
        idx = [i for i, s in enumerate(rows.splits) if s == split]
        if idx:
          splits[split] = _take(rows, idx)
      if 'train' not in splits:
        raise DataError(f'{rows.where[0].split(":")[0]}: no row has split train: add some.')
    else:
      splits['train'], splits['test'] = _split_off(rows, settings.test_fraction, settings)
      made.append(f'test carved from the file ({settings.test_fraction:g})')
  if 'test' not in splits:
    splits['train'], splits['test'] = _split_off(splits['train'], settings.test_fraction, settings)
    made.append(f'test carved from train ({settings.test_fraction:g})')
  if 'validation' not in splits:
    splits['train'], splits['validation'] = _split_off(
      splits['train'], settings.validation_fraction, settings
    )
    made.append(f'validation carved from train ({settings.validation_fraction:g})')
  check(splits)
  how = (
    'last rows of each class (time_order)'
    if settings.time_order
    else 'evenly spaced in file order'
    if settings.split_seed is None
    else f'shuffled within each class, split_seed={settings.split_seed}'
  )
  sizes = ' / '.join(f'{s} {len(splits[s].examples)}' for s in files.SPLITS)
  note = sizes + (f'; {", ".join(made)}, stratified by label, {how}' if made else '')
  return {s: splits[s] for s in files.SPLITS}, note


def check(splits: dict[str, files.Rows]) -> None:
  """One-line DataError for an empty split, a label train never saw, labels mixed with targets."""
  for split in files.SPLITS:
    if not splits[split].examples:
      raise DataError(
        f'The {split} split is empty: give it rows (or a larger file to carve it from).'
      )
  train = splits['train']
  for split in ('validation', 'test'):
    rows = splits[split]
    if (rows.labels is None) != (train.labels is None):
      raise DataError(
        f'{rows.where[0]}: {split} has {"targets" if rows.labels is None else "labels"} but '
        'train has not: give every split the same label or target column.'
      )
    if rows.labels is None:
      continue
    seen = set(train.labels)
    for label, at in zip(rows.labels, rows.where):
      if label not in seen:
        raise DataError(
          f'{at}: label {label!r} of the {split} split never occurs in train: add train '
          'examples of it or drop the row.'
        )
