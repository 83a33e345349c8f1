"""The shipped TFDS builders; importing this package registers them with TFDS."""

from hybrid_jax.data.builders import bbc_news
from hybrid_jax.data.builders import japanese_vowels
from hybrid_jax.data.builders import moving_digits
from hybrid_jax.data.builders import tweet_sentiment
from hybrid_jax.data.builders import weather_stations
