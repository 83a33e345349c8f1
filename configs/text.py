"""Text: topic / sentiment classification (shipped datasets: bbc_news, tweet_sentiment).

Embedding -> CNN branch (Conv1D128-k3 -> MaxPool2 -> Conv1D128-k3 -> GlobalMaxPool) and an LSTM(64)
branch read the same embeddings -> concat -> Dense softmax. Padding positions are masked out of the
CNN's max and the LSTM returns the last valid hidden state.

  python -m hybrid_jax.main --config=configs/text.py
  python -m hybrid_jax.main --config=configs/tweet_sentiment.py   # the tweet_sentiment variant
"""

import ml_collections

from configs import common


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  config = common.get_config()
  config.task = 'text'
  config.dataset.name = 'bbc_news'

  config.model.vocab_size = 10_000  # Token ids >= vocab_size map to the OOV id (PAD=0, OOV=1).
  config.model.max_length = 50  # Tokens kept per example (longer texts are truncated).
  config.model.embed_dim = 100  # Embedding width.
  config.model.conv_features = (128, 128)  # Filters of the two Conv1D layers (MaxPool2 between).
  config.model.kernel_size = 3  # Conv1D kernel size.
  config.model.lstm_units = 64  # LSTM hidden size.
  config.model.num_classes = 5  # Classes of the softmax head.

  return common.apply_variant(config, variant)
