"""Hybrid CNN+LSTM models: the branches (conv.py, lstm.py), their fusion and head (fusion.py), and
one model per input kind (video.py, text.py, sensor.py).

Models import nothing from the rest of the package; `hybrid_jax.input_kinds.create_model(config)`
builds the input kind's model from `config.model`.
"""
