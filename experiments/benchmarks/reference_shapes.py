"""The reference shapes of the speed comparison (issue 9), shared by the benchmarks.

Pure Python (no JAX, no Keras import), so that `peers.py` can read it from another
framework's virtualenv. The parameter counts are those of tests/test_models_shapes.py.
"""

# task -> fields of config.model (hybrid_jax) / arguments of the Keras builders (peers).
REFERENCE_MODEL = {
  'video': dict(frame_shape=(64, 64, 3), num_classes=10),
  'text': dict(vocab_size=10_000, embed_dim=100, max_length=50, num_classes=5),
  'sensor': dict(window_shape=(20, 4, 1)),
}
# case name -> (task, batch size, extra model fields).
REFERENCE_CASES = {
  'video_b32_t8': ('video', 32, dict(num_frames=8)),
  'video_b32_t16': ('video', 32, dict(num_frames=16)),
  'video_b256_t8': ('video', 256, dict(num_frames=8)),
  'text_b32': ('text', 32, {}),
  'text_b256': ('text', 256, {}),
  'sensor_b32': ('sensor', 32, {}),
  'sensor_b256': ('sensor', 256, {}),
}
# Timed steps per window, so that a window lasts a few seconds on a 2-core CPU.
STEPS_PER_WINDOW = {
  'video_b32_t8': 1,
  'video_b32_t16': 1,
  'video_b256_t8': 1,
  'text_b32': 40,
  'text_b256': 8,
  'sensor_b32': 200,
  'sensor_b256': 60,
}
