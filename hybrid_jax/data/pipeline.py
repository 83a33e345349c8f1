"""grain input pipelines over a resolved dataset: endless shuffled train, exact padded eval.

  source = datasets.resolve(config)                  # once per run
  train_it = create_train_iterator(source)           # endless per-process batches; get/set_state
  for batch in create_eval_batches(source): ...      # every example once, padded last batch + 'mask'

Batches are dicts of numpy arrays holding this process's share of the global batch
(B = config.batch_size // process_count): the input kind's keys (`input_kinds.INPUT_KINDS`)
  video:  'clip' uint8 [B, time, height, width, channels]
  text:   'tokens' int32 [B, max_length], 'length' int32 [B]
  sensor: 'window' float32 [B, time, *channels] (normalized; zero-padded to window_shape[0]),
          'length' int32 [B]
plus the head's label ('label' int32 [B] or 'target' float32 [B], normalized), and eval batches add
'mask' bool [B] (False on the padding rows of the last batch).
"""

import hashlib
import math
import pickle

from absl import flags
import grain
import jax
import numpy as np

from hybrid_jax import heads
from hybrid_jax import input_kinds
from hybrid_jax.data import datasets
from hybrid_jax.data import decoders
from hybrid_jax.errors import DataError


def example_fn(source: datasets.Source) -> decoders.Example:
  """The picklable record -> model example function of a resolved dataset.

  The input kind's decoder (`input_kinds.INPUT_KINDS`) turns the record's input feature into model
  inputs; the head adds its label ('label' int32, or 'target' float32 normalized by the train
  target statistics).
  """
  meta = source.metadata
  decode = input_kinds.input_kind(source.info.task).decoder(source.config, meta)
  label_key = None
  if source.adapter is not None:  # Catalog features have their own names.
    decode.key, label_key = source.adapter.input_key, source.adapter.label_key
  return decoders.Example(decode, heads.head(source.info.head), meta, label_key)


MAX_EPOCHS = 2**24  # The train stream's length in epochs: endless for any practical run.
# Splits whose decoded examples fit are decoded once and kept in memory: 1 GiB holds moving_digits'
# train clips (14,400 x 10 x 64 x 64 uint8, 590 MB).
CACHE_BYTES = 2**30
_DECODED: dict[tuple[str, str], dict[str, np.ndarray]] = {}  # (records, decoder) -> arrays [N, ...]
_DECODED_KEPT = 2  # Splits kept decoded per process (the most recent first reads).


class _Examples:
  """The model examples of `records` (`example_fn` applied), read as batches by position.

  Decoding a record costs more than a small model's step per example (sensor, text;
  experiments/results/benchmark_input_pipeline.md), and every evaluation, every run of a study and
  every seed of a population reads the same split again: a split whose decoded examples fit in
  CACHE_BYTES is decoded once per process, kept as stacked arrays (shared by every reader of the
  same records through the same decoder), and a batch is one index per array. Larger splits (e.g.
  a long video dataset of your own) are decoded batch by batch from disk.
  """

  def __init__(self, records, example_fn):
    self.records, self.example_fn = records, example_fn
    self.key = None
    if len(records):
      first = example_fn(records[0])
      if sum(np.asarray(v).nbytes for v in first.values()) * len(records) <= CACHE_BYTES:
        decoder = hashlib.sha256(pickle.dumps(example_fn)).hexdigest()
        self.key = (repr(records), decoder)

  def batch(self, positions: np.ndarray) -> dict[str, np.ndarray]:
    """The collated examples at record positions [n]."""
    if self.key is None:
      return decoders.collate([self.example_fn(r) for r in _read(self.records, positions.tolist())])
    arrays = _DECODED.get(self.key)
    if arrays is None:
      arrays = decoders.collate(
        [self.example_fn(r) for r in _read(self.records, list(range(len(self.records))))]
      )
      while len(_DECODED) >= _DECODED_KEPT:
        del _DECODED[next(iter(_DECODED))]
      _DECODED[self.key] = arrays
    return {name: values[positions] for name, values in arrays.items()}


def _read(records, indices: list[int]) -> list:
  try:
    return records.__getitems__(indices)  # One array_record batch read.
  except TypeError:  # tfds.testing.mock_data sources read one record at a time.
    return [records[i] for i in indices]


class _TrainBatches:
  """grain data source whose record k is this process's rows of global train batch k.

  One global data order, whatever the process layout: epoch e visits the whole split in the order
  permutation(seed, e) of its N examples; global batch b of the epoch is rows [b * G, (b + 1) * G)
  of that order (G = config.batch_size; the last partial global batch dropped), and process p of P
  takes its rows [p * B, (p + 1) * B), B = G / P. Devices are ordered by process, so every device
  sees the same examples at step t with 1 process x 4 devices as with 2 x 2. A grain record is a
  whole batch because grain's per-record overhead would otherwise cap the pipeline below the small
  models' step rate (experiments/results/benchmark_input_pipeline.md).
  """

  def __init__(
    self, records, global_batch: int, process_index: int, process_count: int, seed: int, example_fn
  ):
    self.records, self.seed = records, seed
    self.examples = _Examples(records, example_fn)
    self.global_batch = global_batch
    self.batch = global_batch // process_count
    self.offset = process_index * self.batch  # This process's rows within a global batch.
    self.batches_per_epoch = len(records) // global_batch
    self._epoch, self._order = -1, None

  def __len__(self) -> int:
    return self.batches_per_epoch * MAX_EPOCHS

  def __repr__(self) -> str:  # grain checks it when restoring a state.
    # One process reads the order it read before the order was global, under the same repr, so its
    # older checkpoints resume; with several processes, this process's rows are named too.
    several = self.batch < self.global_batch
    rows = f', rows=[{self.offset}, {self.offset + self.batch})' if several else ''
    return (
      f'_TrainBatches({self.records!r}, shard=[0, {len(self.records)}), '
      f'batch={self.global_batch}, seed={self.seed}{rows})'
    )

  def __getitem__(self, k: int) -> dict[str, np.ndarray]:
    epoch, b = divmod(int(k), self.batches_per_epoch)
    if epoch != self._epoch:
      self._epoch, self._order = (
        epoch,
        np.random.default_rng([self.seed, epoch]).permutation(len(self.records)),
      )
    start = b * self.global_batch + self.offset
    return self.examples.batch(self._order[start : start + self.batch])


class _EvalBatches:
  """grain data source whose record b is eval batch b: rows [start, stop) of the split, padded."""

  def __init__(self, records, start: int, stop: int, batch: int, num_batches: int, example_fn):
    self.records, self.start, self.stop, self.batch = records, start, stop, batch
    self.num_batches, self.examples = num_batches, _Examples(records, example_fn)

  def __len__(self) -> int:
    return self.num_batches

  def __repr__(self) -> str:
    return f'_EvalBatches({self.records!r}, rows=[{self.start}, {self.stop}), batch={self.batch})'

  def __getitem__(self, b: int) -> dict[str, np.ndarray]:
    rows = self.start + np.arange(b * self.batch, (b + 1) * self.batch)
    mask = rows < self.stop
    filler = min(self.start, len(self.records) - 1)  # Padding rows repeat a real row (masked out).
    return {**self.examples.batch(np.where(mask, rows, filler)), 'mask': mask}


def _read_options(examples: _Examples) -> grain.ReadOptions:
  """Batches of decoded examples in memory are read in the calling thread: grain's prefetch threads
  cost ~0.3 ms per batch, more than indexing the arrays (and than a small model's step); batches
  decoded from disk are prefetched by grain's default threads."""
  return (
    grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
    if examples.key
    else grain.ReadOptions()
  )


def _processes(process_index, process_count) -> tuple[int, int]:
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  return int(process_index), int(process_count)


def _workers(config) -> int:
  """config.dataset.num_workers; grain's worker processes read absl flags, so make them readable."""
  workers = int(config.dataset.num_workers)
  if workers > 0 and not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # Outside absl.app (tests, notebooks): flag defaults.
  return workers


def _local_batch(global_batch: int, process_count: int, field: str) -> int:
  if global_batch <= 0 or global_batch % process_count:
    raise DataError(
      f'config.{field}={global_batch} must be a positive multiple of the '
      f'{process_count} processes: set --config.{field} accordingly.'
    )
  return global_batch // process_count


def create_train_iterator(source: datasets.Source, *, process_index=None, process_count=None):
  """Endless train batches for this process: reshuffled every epoch (seeded), remainder dropped.

  Every process draws from one global order of the whole train split and takes its rows of each
  global batch (`_TrainBatches`), so the examples of step t do not depend on the number of
  processes or devices. Returns a grain DataLoaderIterator; its get_state() / set_state() save and
  restore the position (the batch count), so a resumed run neither repeats nor skips batches.
  """
  config = source.config
  index, count = _processes(process_index, process_count)
  records = source.records(config.dataset.train_split)
  batch = _local_batch(config.batch_size, count, 'batch_size')
  if len(records) < config.batch_size:
    raise DataError(
      f'{config.dataset.name} {config.dataset.train_split} has {len(records)} examples, fewer '
      f'than config.batch_size={config.batch_size}: lower --config.batch_size.'
    )
  batches = _TrainBatches(
    records, batch * count, index, count, int(config.seed), example_fn(source)
  )
  loader = grain.DataLoader(
    data_source=batches,
    worker_count=_workers(config),
    sampler=grain.samplers.IndexSampler(num_records=len(batches), shuffle=False, num_epochs=1),
    read_options=_read_options(batches.examples),
  )
  return iter(loader)


class EvalBatches:
  """Re-iterable eval batches; `len()` is the batch count, the same on every process."""

  def __init__(self, loader, num_batches: int):
    self.loader, self.num_batches = loader, num_batches

  def __len__(self) -> int:
    return self.num_batches

  def __iter__(self):
    return iter(self.loader)


def create_eval_batches(
  source: datasets.Source, split: str | None = None, *, process_index=None, process_count=None
) -> EvalBatches:
  """Every example of `split` (default: config.dataset.eval_split) once over all processes, in order.

  The last batches are padded and carry 'mask'. Process p reads the contiguous block
  [p * n, (p + 1) * n) with n = ceil(N / process_count), so all processes yield ceil(n / B) batches
  (pmap collectives need equal counts).
  """
  config = source.config
  index, count = _processes(process_index, process_count)
  records = source.records(split or config.dataset.eval_split)
  batch = _local_batch(config.eval_batch_size, count, 'eval_batch_size')
  per_process = math.ceil(len(records) / count)
  num_batches = max(1, math.ceil(per_process / batch))
  start = min(index * per_process, len(records))
  batches = _EvalBatches(
    records,
    start,
    min(start + per_process, len(records)),
    batch,
    num_batches,
    example_fn(source),
  )
  loader = grain.DataLoader(
    data_source=batches,
    worker_count=_workers(config),
    sampler=grain.samplers.IndexSampler(num_records=num_batches, shuffle=False, num_epochs=1),
    read_options=_read_options(batches.examples),
  )
  return EvalBatches(loader, num_batches)
