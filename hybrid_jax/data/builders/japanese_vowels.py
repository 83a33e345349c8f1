"""japanese_vowels: which of 9 speakers said a Japanese vowel, from variable-length 12-channel series.

Source: the UEA/UCR multivariate archive's JapaneseVowels (originally UCI; Kudo, Toyama & Shimbo
1999), files `JapaneseVowels_{TRAIN,TEST}.ts` vendored in `hybrid_jax/data/sources/` (CC BY 4.0;
provenance and sha256 in that folder's README). Nine male speakers said /ae/; each utterance is a
series of 12 LPC cepstrum coefficients (one per 10 ms frame) of 7 to 29 frames.

Splits: test = the archive's 370 test utterances, unchanged. The archive's 270 train utterances
(30 per speaker, in speaker order) are split deterministically: the 5th, 10th, ... 30th utterance of
each speaker (6 per speaker, 54 in all) is validation, the other 216 are train. Series are stored
at their own length in original units; the train split's per-coefficient mean and std are in the
metadata, and the pipeline normalizes with them, pads to the longest series (29 frames) and passes
each series' length so the model masks the padding.
"""

import numpy as np
import tensorflow_datasets as tfds

from hybrid_jax.data import files
from hybrid_jax.data.builders import common
from hybrid_jax.errors import DataError

TRAIN_TS = common.VendoredFile(
  'JapaneseVowels_TRAIN.ts',
  sha256='68a430eabd919cc77f40b1f5f3bc0dcafacc1486bca9260785aeb7d262cc78cd',
)
TEST_TS = common.VendoredFile(
  'JapaneseVowels_TEST.ts',
  sha256='b3d41d6a0ca3bcad3afb9ca7d4365382aa51341e2e58bae2a574babdda5b9462',
)
CHANNELS = 12
SPEAKERS = tuple(f'speaker_{i}' for i in range(1, 10))
VALIDATION_EVERY = 5  # Every 5th train utterance of a speaker is validation.


def read_ts(text: str) -> tuple[list[np.ndarray], np.ndarray]:
  """A multivariate .ts file's text -> (series float32 [time, channels] each, labels int64 [n] from 0).

  The one `.ts` reader of the package (`hybrid_jax.data.files.parse_ts`), with labels from 0.
  """
  rows = files.parse_ts(text, 'JapaneseVowels')
  return rows.examples, np.array([int(label) - 1 for label in rows.labels], np.int64)


class JapaneseVowelsConfig(tfds.core.BuilderConfig):
  """`per_speaker`: keep the first N train, N // 2 validation and N // 2 test utterances per speaker."""

  def __init__(self, *, per_speaker: int | None = None, **kwargs):
    super().__init__(**kwargs)
    self.per_speaker = per_speaker


def load_splits(per_speaker: int | None = None) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
  """{'train', 'validation', 'test'}: (series, labels), in file order."""
  train_x, train_y = read_ts(TRAIN_TS.read_bytes().decode('utf-8'))
  test_x, test_y = read_ts(TEST_TS.read_bytes().decode('utf-8'))
  if (len(train_x), len(test_x)) != (270, 370) or {s.shape[1] for s in train_x + test_x} != {
    CHANNELS
  }:
    raise DataError('JapaneseVowels files do not hold 270 / 370 series of 12 channels.')
  rank = np.zeros(len(train_y), np.int64)  # Position of each utterance among its speaker's.
  for speaker in range(len(SPEAKERS)):
    rank[train_y == speaker] = np.arange(np.sum(train_y == speaker))
  validation = rank % VALIDATION_EVERY == VALIDATION_EVERY - 1
  splits = {'train': np.flatnonzero(~validation), 'validation': np.flatnonzero(validation)}
  out = {name: ([train_x[i] for i in idx], train_y[idx]) for name, idx in splits.items()}
  out['test'] = (test_x, test_y)
  if per_speaker is not None:
    for name, (x, y) in out.items():
      n = per_speaker if name == 'train' else max(1, per_speaker // 2)
      keep = np.concatenate([np.flatnonzero(y == s)[:n] for s in range(len(SPEAKERS))])
      out[name] = ([x[i] for i in keep], y[keep])
  return out


class JapaneseVowels(tfds.core.GeneratorBasedBuilder):
  __doc__ = __doc__
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release: train / validation / test.'}
  BUILDER_CONFIGS = [
    JapaneseVowelsConfig(
      name='full', description='216 train / 54 validation / 370 test utterances.'
    ),
    JapaneseVowelsConfig(
      name='tiny', description='2 / 1 / 1 utterances per speaker, for tests.', per_speaker=2
    ),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'full'

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description=__doc__,
      features=tfds.features.FeaturesDict(
        {
          'window': tfds.features.Tensor(
            shape=(None, CHANNELS),
            dtype=np.float32,
            doc='[frames, 12 LPC cepstrum coefficients], original units',
          ),
          'label': tfds.features.ClassLabel(names=SPEAKERS),
          'length': common.scalar_int('Frames in the utterance (7..29).'),
        }
      ),
      supervised_keys=('window', 'label'),
      homepage='https://www.timeseriesclassification.com/description.php?Dataset=JapaneseVowels',
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The source files ship in the repository.
    splits = load_splits(self.builder_config.per_speaker)
    train_steps = np.concatenate(splits['train'][0])
    full = load_splits() if self.builder_config.per_speaker else splits
    max_length = max(len(s) for x, _ in full.values() for s in x)  # Same shapes in every config.
    majority = np.bincount(splits['train'][1], minlength=len(SPEAKERS)).argmax()
    self.info.metadata.update(
      {
        'window_shape': [max_length, CHANNELS],
        'feature_mean': train_steps.mean(axis=0).tolist(),
        'feature_std': train_steps.std(axis=0).tolist(),
        'baselines': {
          name: {
            'chance_accuracy': 1 / len(SPEAKERS),
            'majority_class_accuracy': float(np.mean(y == majority)),
          }
          for name, (_, y) in splits.items()
        },
      }
    )
    return {name: self._generate_examples(x, y) for name, (x, y) in splits.items()}

  def _generate_examples(self, series, labels):
    for i, (x, y) in enumerate(zip(series, labels)):
      yield i, {'window': x, 'label': int(y), 'length': len(x)}
