"""Speed benchmarks at the reference shapes; results in experiments/results/benchmark_*.md.

  python -m experiments.benchmarks.train_step       # hybrid_jax's train step (default or reference)
  python -m experiments.benchmarks.peers            # against Keras 3 (TensorFlow or JAX backend)
  python -m experiments.benchmarks.input_pipeline   # the input pipeline beside the train step

reference_shapes.py and tables.py are pure Python, so that the peer benchmark can import them from
another framework's virtualenv.
"""
