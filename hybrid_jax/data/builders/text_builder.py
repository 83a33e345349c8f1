"""Base class of the shipped text-classification builders (bbc_news, tweet_sentiment) and of yours.

A subclass supplies `VERSION`, `LABEL_NAMES` and `_load()`: (key, text, label name) triples. A
complete one (registered as 'my_reviews'; configs 'full' and 'tiny' come from this base):

  class MyReviews(text_builder.TextClassificationBuilder):
    VERSION = tfds.core.Version('1.0.0')
    LABEL_NAMES = ('negative', 'positive')          # label ids follow this order

    def _load(self):
      return [(f'{i:05d}', text, label)             # unique key, raw text, one of LABEL_NAMES
              for i, (text, label) in enumerate(read_my_files())]

This base:
  * splits them train / validation / test by the md5 of the text (20% test, 10% validation, 70%
    train; duplicate texts share a split),
  * tokenizes with `text_vocab.tokenize` and builds the vocabulary from the train split only,
  * stores full-length token ids (int32 [num_tokens], PAD=0, OOV=1) and the vocabulary in the
    dataset's metadata, so train and eval tokenize identically for any vocab_size / max_length.
"""

import collections
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds

from hybrid_jax.data import text_vocab
from hybrid_jax.errors import DataError


class TextConfig(tfds.core.BuilderConfig):
  """`per_class`: keep only the first N train and N/2 validation and test texts per class (None: all)."""

  def __init__(self, *, per_class: int | None = None, **kwargs):
    super().__init__(**kwargs)
    self.per_class = per_class


TEXT_CONFIGS = [
  TextConfig(name='full', description='Every text.'),
  TextConfig(
    name='tiny',
    description='8 train / 4 validation / 4 test texts per class, for tests.',
    per_class=8,
  ),
]


class TextClassificationBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared generation logic; subclasses set VERSION, LABEL_NAMES (HOMEPAGE) and implement `_load`."""

  BUILDER_CONFIGS = TEXT_CONFIGS
  DEFAULT_BUILDER_CONFIG_NAME = 'full'
  LABEL_NAMES: Sequence[str] = ()
  HOMEPAGE = ''

  def _load(self) -> list[tuple[str, str, str]]:
    """All (key, text, label name) triples, in a machine-independent order (subclasses implement it)."""
    raise DataError(
      f'{type(self).__name__} does not implement _load(): return a list of (unique key, '
      'raw text, label name) triples from it.'
    )

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description=self.__doc__,
      features=tfds.features.FeaturesDict(
        {
          'tokens': tfds.features.Tensor(
            shape=(None,), dtype=np.int32, doc='[num_tokens] ids of the train-only vocabulary'
          ),
          'label': tfds.features.ClassLabel(names=self.LABEL_NAMES),
        }
      ),
      supervised_keys=('tokens', 'label'),
      homepage=self.HOMEPAGE,
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything comes from an installed package.
    if not self.LABEL_NAMES:
      raise DataError(
        f'{type(self).__name__} sets no LABEL_NAMES: add e.g. '
        "LABEL_NAMES = ('negative', 'positive') to the class (label ids follow its order)."
      )
    by_split = {'train': [], 'validation': [], 'test': []}
    for key, text, label in self._load():
      if label not in self.LABEL_NAMES:
        raise DataError(
          f'{type(self).__name__}._load() returned label {label!r} for {key!r}, which is '
          f'not in LABEL_NAMES={tuple(self.LABEL_NAMES)}: return one of them.'
        )
      by_split[text_vocab.split_of(text)].append((key, text_vocab.tokenize(text), label))
    per_class = getattr(self.builder_config, 'per_class', None)
    if per_class is not None:
      by_split = {
        s: _first_per_class(rows, per_class if s == 'train' else per_class // 2)
        for s, rows in by_split.items()
      }
    vocab = text_vocab.build_vocab(tokens for _, tokens, _ in by_split['train'])
    word_to_id = {w: i for i, w in enumerate(vocab)}
    lengths = np.array([max(len(t), 1) for _, t, _ in by_split['train']])
    train_labels = collections.Counter(label for _, _, label in by_split['train'])
    majority = max(self.LABEL_NAMES, key=lambda n: (train_labels[n], -self.LABEL_NAMES.index(n)))
    self.info.metadata['vocab'] = vocab
    self.info.metadata['train_length_percentiles'] = {
      str(p): int(np.percentile(lengths, p)) for p in (50, 90, 95, 100)
    }
    self.info.metadata['baselines'] = {
      s: {
        'chance_accuracy': 1 / len(self.LABEL_NAMES),
        'majority_class_accuracy': float(np.mean([l == majority for _, _, l in rows])),
      }
      for s, rows in by_split.items()
    }
    return {s: self._generate_examples(rows, word_to_id) for s, rows in by_split.items()}

  def _generate_examples(self, rows, word_to_id):
    for key, tokens, label in rows:
      yield key, {'tokens': text_vocab.encode(tokens, word_to_id), 'label': label}


def _first_per_class(rows, n):
  counts = collections.Counter()
  kept = []
  for row in sorted(rows, key=lambda r: r[0]):
    if counts[row[2]] < n:
      counts[row[2]] += 1
      kept.append(row)
  return kept
