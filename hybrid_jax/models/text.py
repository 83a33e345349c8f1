"""The text model: one embedding read by a 1-D CNN branch and an LSTM branch."""

from typing import Mapping, Sequence

import flax.linen as nn
import jax

from hybrid_jax.models import conv, fusion, lstm

Array = jax.Array


class TextModel(fusion.HybridModel):
  """Embedding -> [TextCNN, LSTM] -> fusion -> Dense softmax logits.

  Padding never changes an example's output: the CNN masks positions past the length out of its
  convolutions and max, and the LSTM returns its hidden state at the last valid step.

  Batch keys read:
    'tokens': int [batch, length] token ids (PAD=0).
    'length': optional int [batch] valid tokens per example (None: all positions are valid).
  Returns logits float32 [batch, num_outputs] (or [batch] with `regression`).
  """

  vocab_size: int = 10_000
  # Tokens per example the pipeline pads or cuts to (the shape of 'tokens').
  max_length: int = 50
  embed_dim: int = 100
  conv_features: Sequence[int] = (128, 128)

  @nn.compact
  def __call__(self, batch: Mapping[str, Array], *, train: bool = False) -> Array:
    tokens_BL = batch['tokens']
    lengths_B = batch.get('length')
    embedded_BLD = nn.Embed(
      self.vocab_size, self.embed_dim, dtype=self.compute_dtype, name='embed'
    )(tokens_BL)
    features = []
    for name in self.copies('cnn'):
      features.append(
        conv.TextCNN(self.conv_features, self.kernel_size, self.compute_dtype, name=name)(
          embedded_BLD, lengths_B
        )
      )
    for name in self.copies('lstm'):
      features.append(
        lstm.LSTM(self.lstm_units, self.compute_dtype, projection=self.lstm_projection, name=name)(
          embedded_BLD, lengths_B
        )
      )
    return fusion.FusionHead(**self.head_kwargs(), name='head')(features, train=train)
