"""Text: tweet_sentiment (3-way sentiment of tweets), the text model of configs/text.py.

python -m hybrid_jax.main --config=configs/tweet_sentiment.py
"""

import ml_collections

from configs import common
from configs import text


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  config = text.get_config()
  config.dataset.name = 'tweet_sentiment'
  config.model.num_classes = 3  # negative, neutral, positive.
  return common.apply_variant(config, variant)
