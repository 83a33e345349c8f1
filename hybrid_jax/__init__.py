"""hybrid_jax: hybrid CNN+LSTM models in JAX/Flax, and the code to train and evaluate them."""
