"""Raw inputs -> model batches for prediction, through the task registry's own decoders.

What a run needs to decode raw inputs without its dataset is stored in its inference.json:

  spec_input = describe(source)            # {'tokenizer', 'metadata', 'resample'}: JSON-able
  decode = RawInputs(task, config, spec_input)
  batch = decode.batch(inputs)             # N raw inputs -> model batch of N rows (numpy)

The decoding is `input_kinds.INPUT_KINDS[task].decoder(...).inputs(raw)`, the same function the input
pipeline applies to stored records, so predicting tokenizes, normalizes and casts like training
did. Raw inputs are checked first (shape, dtype, finite values): a bad one raises `InputError` with
one line naming the input, what it was and what the model takes.
"""

from typing import Any, Sequence

import ml_collections
import numpy as np

from hybrid_jax import input_kinds
from hybrid_jax.data import decoders
from hybrid_jax.errors import InputError

# Changes whenever `text_vocab.tokenize` would split some text differently: a run tokenized by
# another version cannot be predicted with this one.
TOKENIZER = 'hybrid_jax.text_vocab.tokenize/1'


def describe(source) -> dict[str, Any]:
  """What decoding raw inputs needs from a resolved dataset (`datasets.Source`), JSON-able."""
  kind = input_kinds.input_kind(source.config)
  return {
    'tokenizer': TOKENIZER,
    'metadata': kind.saved_metadata(source.config, source.metadata),
    # Catalog runs resampled clips to the config.
    'resample': source.adapter is not None,
  }


class RawInputs:
  """Raw inputs of one run -> model batches (see the module docstring)."""

  def __init__(self, task: str, config: ml_collections.ConfigDict, spec_input: dict[str, Any]):
    if spec_input.get('tokenizer') != TOKENIZER:
      raise InputError(
        f"This run was tokenized by {spec_input.get('tokenizer')!r}, this hybrid_jax "
        f'tokenizes with {TOKENIZER!r}: use the hybrid_jax version that trained it.'
      )
    self.kind = input_kinds.input_kind(task)
    self.config = config
    self.decoder = self.kind.decoder(config, spec_input['metadata'])
    shape = self.kind.raw_shape(config)
    if shape is not None and spec_input.get('resample'):  # Any clip: resampled like training.
      shape = (None,) * (len(shape) - 1) + (None,)
    self.shape = None if shape is None else tuple(None if s is None else int(s) for s in shape)

  @property
  def description(self) -> str:
    """What one raw input is, in words."""
    return self.kind.raw_description(self.config)

  def batch(self, inputs: Any) -> dict[str, np.ndarray]:
    """N raw inputs (a list, or an array whose first axis is the inputs) -> model batch [N, ...]."""
    if self.shape is not None and isinstance(inputs, np.ndarray) and inputs.ndim == len(self.shape):
      raise InputError(
        f'Got one array of shape {inputs.shape}; this model takes a batch of '
        f'{self.description}: pass x[None] for a single input.'
      )
    rows = []
    for i, raw in enumerate(_examples(inputs, self.description)):
      raw = self._check(i, raw)
      try:
        rows.append(self.decoder.inputs(raw))
      except InputError as e:
        raise InputError(f'Input {i}: {e}') from None
    return decoders.collate(rows)

  def _check(self, i: int, raw: Any) -> Any:
    if self.shape is None:  # Text.
      if isinstance(raw, bytes):
        raw = raw.decode('utf-8', 'replace')
      if not isinstance(raw, (str, np.str_)):
        raise InputError(
          f'Input {i} is a {type(raw).__name__}, not a string: this model takes {self.description}.'
        )
      return str(raw)
    x = _numeric(raw, i)
    if (
      x.ndim != len(self.shape)
      or 0 in x.shape
      or any(want is not None and want != got for want, got in zip(self.shape, x.shape))
    ):
      raise InputError(f'Input {i} has shape {x.shape}; this model takes {self.description}.')
    self.kind.check_raw(i, x)
    return x


def _examples(inputs: Any, what: str) -> list[Any]:
  """The N examples of `inputs` (a list, tuple or array whose first axis is the examples)."""
  if isinstance(inputs, (str, bytes)):
    raise InputError(f'Got a single string; pass a list of inputs ({what}), e.g. [text].')
  if isinstance(inputs, np.ndarray):
    examples = list(inputs) if inputs.ndim else []
  elif isinstance(inputs, (list, tuple)):
    examples = list(inputs)
  else:
    raise InputError(f'Got {type(inputs).__name__}; pass a list of inputs ({what}).')
  if not examples:
    raise InputError(f'No inputs: pass a non-empty list of inputs ({what}).')
  return examples


def _numeric(x: Any, i: int) -> np.ndarray:
  """x as a real-number array, or a one-line InputError (strings, objects, NaN/inf)."""
  try:
    x = np.asarray(x)
  except ValueError:  # Ragged nested lists.
    raise InputError(f'Input {i} is not a rectangular array.') from None
  if x.dtype == bool or not (
    np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
  ):
    raise InputError(f'Input {i} has dtype {x.dtype}; inputs must hold real numbers.')
  if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
    raise InputError(f'Input {i} contains NaN or inf; inputs must be finite.')
  return x


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
