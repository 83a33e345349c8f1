"""The shipped TFDS builders, one module each; hybrid_jax/data/shipped.py lists and registers them."""
