"""The speed benchmarks time the reference models, and the peer comparison summarises honestly."""

import jax
import pytest

from experiments.benchmarks import peers
from experiments.benchmarks import train_step as bench
from hybrid_jax import input_kinds
import test_models_shapes


@pytest.mark.parametrize('case', ['video_b32_t16', 'text_b256', 'sensor_b32'])
def test_reference_cases_time_the_reference_models(case):
  """Each case's model has the parameter count of the seed article's Keras model."""
  config = bench.reference_config(case)
  task, batch_size, _ = bench.REFERENCE_CASES[case]
  model = input_kinds.create_model(config)
  batch = input_kinds.dummy_batch(config, 2)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), batch))['params']
  count = sum(x.size for x in jax.tree.leaves(params))
  assert count == test_models_shapes.REFERENCE[task][2]
  assert config.batch_size == batch_size


def test_every_benchmark_variant_sets_real_fields_of_its_task_model():
  for variant, per_task in bench.VARIANTS.items():
    for task, fields in per_task.items():
      case = next(c for c, (t, _, _) in bench.REFERENCE_CASES.items() if t == task)
      model = input_kinds.create_model(bench.reference_config(case))
      assert set(fields) <= set(model.__dataclass_fields__), (variant, task)
      if variant == 'before':  # The previous formulation differs from today's defaults.
        assert model.clone(**fields) != model, task


def test_peer_summary_is_the_median_over_rounds_and_the_ratio():
  rows = [
    ('video_b32_t8', 'hybrid_jax', 0, {'examples_per_sec': 50.0}),
    ('video_b32_t8', 'keras_tensorflow', 0, {'examples_per_sec': 100.0}),
    ('video_b32_t8', 'hybrid_jax', 1, {'examples_per_sec': 70.0}),
    ('video_b32_t8', 'keras_tensorflow', 1, {'examples_per_sec': 40.0}),
    ('video_b32_t8', 'hybrid_jax', 2, {'examples_per_sec': 60.0}),
    ('video_b32_t8', 'keras_tensorflow', 2, {'examples_per_sec': 48.0}),
  ]
  header, rule, line = peers.summarize(rows, ['keras_tensorflow'])
  assert 'hybrid_jax / keras_tensorflow' in header and rule.count('---:') == 3
  assert line == '| video_b32_t8 | 60.0 | 48.0 | 1.25 |'
