"""Word tokenizer and train-only vocabularies shared by the text builders and the pipeline.

Token ids: PAD=0, OOV=1, then words by descending train-split frequency (ties alphabetical), so the
first `vocab_size` ids of one stored vocabulary are the `vocab_size - 2` most frequent train words.
The pipeline truncates to `max_length` and maps ids >= vocab_size to OOV, so a single prepared
dataset serves every (vocab_size, max_length) in the config.
"""

import collections
import hashlib
import re
from typing import Iterable, Sequence

import numpy as np

PAD_ID = 0
OOV_ID = 1
PAD_TOKEN = '<pad>'
OOV_TOKEN = '<oov>'

_URL = re.compile(r'(?:https?://|www\.)\S+')
_USER = re.compile(r'@\w+')
# Words (letters, inner apostrophes), numbers, and the two punctuation marks that carry sentiment.
_TOKEN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*|\d+|[!?]")


def tokenize(text: str) -> list[str]:
  """Lower-cases and splits `text`; URLs become 'xxurl' and @mentions 'xxuser'."""
  text = _USER.sub(' xxuser ', _URL.sub(' xxurl ', text.lower()))
  return _TOKEN.findall(text)


def build_vocab(token_lists: Iterable[Sequence[str]]) -> list[str]:
  """[PAD, OOV, words by descending count then alphabetically] from the train split's tokens."""
  counts = collections.Counter()
  for tokens in token_lists:
    counts.update(tokens)
  words = sorted(counts, key=lambda w: (-counts[w], w))
  return [PAD_TOKEN, OOV_TOKEN] + words


def encode(tokens: Sequence[str], word_to_id: dict[str, int]) -> np.ndarray:
  """int32 [num_tokens] ids; unknown words -> OOV; an empty text becomes [OOV] (length >= 1)."""
  ids = [word_to_id.get(t, OOV_ID) for t in tokens] or [OOV_ID]
  return np.asarray(ids, np.int32)


def fit_ids(ids: np.ndarray, vocab_size: int, max_length: int) -> tuple[np.ndarray, int]:
  """Truncates ids [n] to max_length, maps ids >= vocab_size to OOV, pads with PAD.

  Returns (tokens int32 [max_length], length) with 1 <= length <= max_length.
  """
  ids = np.asarray(ids, np.int32)[:max_length]
  ids = np.where(ids >= vocab_size, OOV_ID, ids)
  length = max(len(ids), 1)
  tokens = np.full((max_length,), PAD_ID, np.int32)
  tokens[: len(ids)] = ids
  if not len(ids):
    tokens[0] = OOV_ID
  return tokens, length


def split_of(text: str, test_percent: int = 20, validation_percent: int = 10) -> str:
  """'test' for a stable `test_percent`% of texts, 'validation' for the next `validation_percent`%,
  else 'train' (md5 of the text: duplicates agree; test is the same whatever validation_percent)."""
  bucket = int(hashlib.md5(text.encode('utf-8')).hexdigest(), 16) % 100
  if bucket < test_percent:
    return 'test'
  return 'validation' if bucket < test_percent + validation_percent else 'train'
