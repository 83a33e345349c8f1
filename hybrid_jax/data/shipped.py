"""The one table of shipped datasets: each name, its input kind, its TFDS builder and study margin.

Importing this module registers the builders with TFDS (prepared offline on first use, see
datasets.py). The builders' registration, the dataset catalog's messages, the tests and the study
all read this table.

  SHIPPED['weather_stations'].input_kind     # 'sensor'
  SHIPPED['weather_stations'].config         # 'sensor': configs/sensor.py trains it
  SHIPPED['weather_stations'].margin         # 0.05: the study's equivalence margin (°F of MAE)
  SHIPPED['controls'].tiny                   # 'both_tiny': tests prepare 'controls/both_tiny'
  study_names()                              # ('controls/local', ..., 'moving_digits', ...)
  designed_verdict('controls/both')          # ('helps', 'each branch reads one of two cues ...')
"""

import dataclasses

import tensorflow_datasets as tfds

from hybrid_jax.data.builders import bbc_news
from hybrid_jax.data.builders import controls
from hybrid_jax.data.builders import japanese_vowels
from hybrid_jax.data.builders import moving_digits
from hybrid_jax.data.builders import tweet_sentiment
from hybrid_jax.data.builders import weather_stations


@dataclasses.dataclass(frozen=True)
class ShippedDataset:
  """One shipped dataset.

  Attributes:
    name: the TFDS name (`config.dataset.name`; add '/<tiny>' for the test build).
    input_kind: the input kind it feeds (input_kinds.py).
    builder: its TFDS builder class (registered by importing this module).
    config: the config in configs/ that trains it (configs/<config>.py).
    margin: the study's equivalence margin, in its primary metric's units (accuracy, or °F of MAE).
    tiny: its small builder config for tests (`<name>/<tiny>`, prepared by tests/conftest.py).
  """

  name: str
  input_kind: str
  builder: type[tfds.core.DatasetBuilder]
  config: str
  margin: float
  tiny: str = 'tiny'
  # Where test examples overlap, the study's test-set bootstrap resamples blocks of them:
  # (feature holding an integer position, what a block is in words, positions per block).
  test_block: tuple[str, str, int] | None = None
  # A family of variants (builder configs '<name>/<variant>'), each its own study dataset, with
  # the verdict each is designed to give (variant -> (verdict, reason)); () for one dataset.
  variants: tuple[str, ...] = ()
  designed_verdicts: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)


SHIPPED = {
  d.name: d
  for d in (
    ShippedDataset('moving_digits', 'video', moving_digits.MovingDigits, 'video', 0.01),
    ShippedDataset('bbc_news', 'text', bbc_news.BbcNews, 'text', 0.01),
    ShippedDataset(
      'tweet_sentiment', 'text', tweet_sentiment.TweetSentiment, 'tweet_sentiment', 0.01
    ),
    ShippedDataset('weather_stations', 'sensor', weather_stations.WeatherStations, 'sensor', 0.05),
    ShippedDataset(
      'japanese_vowels', 'sensor', japanese_vowels.JapaneseVowels, 'japanese_vowels', 0.01
    ),
    # Synthetic controls with known verdicts; one builder config per variant ('controls/both', ...).
    ShippedDataset(
      'controls',
      'sensor',
      controls.Controls,
      'controls',
      0.01,
      tiny='both_tiny',
      variants=controls.VARIANTS,
      designed_verdicts=controls.DESIGNED_VERDICTS,
    ),
  )
}


def base_name(name: str) -> str:
  """'bbc_news/tiny:1.1.0' -> 'bbc_news'."""
  return name.split('/')[0].split(':')[0]


def of(name: str) -> ShippedDataset:
  """The table's entry of a shipped name: 'controls/both' -> SHIPPED['controls']."""
  return SHIPPED[base_name(name)]


def is_shipped(name: str) -> bool:
  return base_name(name) in SHIPPED


def study_names() -> tuple[str, ...]:
  """The study's shipped datasets: each variant of a family first ('controls/both'), then the rest."""
  families = [f'{d.name}/{v}' for d in SHIPPED.values() for v in d.variants]
  return tuple(families) + tuple(d.name for d in SHIPPED.values() if not d.variants)


def designed_verdict(name: str) -> tuple[str, str] | None:
  """(verdict, reason) a control variant ('controls/both') is designed to give; None otherwise."""
  variant = name.split('/')[1].split(':')[0] if '/' in name else ''
  dataset = SHIPPED.get(base_name(name))
  return dataset.designed_verdicts.get(variant) if dataset else None


def build_name(name: str, build: str = 'tiny') -> str:
  """The name of `name`'s small test build: 'bbc_news' -> 'bbc_news/tiny', a variant
  'controls/both' -> 'controls/both_tiny' (a family's variants are builder configs themselves)."""
  return f'{name}_{build}' if '/' in name else f'{name}/{build}'
