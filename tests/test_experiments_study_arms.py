"""The study's capacity-control arms: branch copies, widened branches, matched fusions (param counts)."""

import jax
import numpy as np
import pytest

from configs import sensor, text, video
from experiments.study import arms
from hybrid_jax import config_validation
from hybrid_jax import input_kinds

# Hand counts at the sensor defaults (window 24 x 3 stations x 5 features, Conv1D64-k3, LSTM(32)):
CONV = 15 * 3 * 64 + 64  # 2,944: Conv1D over 15 input channels.
LSTM = 4 * 32 * (15 + 32 + 1)  # 6,144.
FLAT = 12 * 64  # 768 CNN features after MaxPool2 of 24 steps.


def test_branch_copies_have_exact_parameter_counts():
  config = sensor.get_config()

  def count(**fields):
    return arms.count_params(arms.with_model(config, **fields))

  assert count(branches='cnn') == CONV + FLAT + 1
  assert count(branches='both') == CONV + LSTM + FLAT + 32 + 1
  assert count(branches='cnn+cnn') == 2 * CONV + 2 * FLAT + 1
  assert count(branches='lstm+lstm') == 2 * LSTM + 2 * 32 + 1


def test_copies_are_initialised_independently_and_both_feed_the_head():
  config = arms.with_model(sensor.get_config(), branches='lstm+lstm')
  model = input_kinds.create_model(config)
  params = model.init(jax.random.key(0), input_kinds.dummy_batch(config, 2))['params']
  assert set(params) == {'lstm', 'lstm_copy', 'head'}
  a, b = params['lstm']['input_kernel']['kernel'], params['lstm_copy']['input_kernel']['kernel']
  assert not np.allclose(a, b)
  assert params['head']['output']['kernel'].shape == (64, 1)


def test_video_copies_share_the_frame_cnn_under_two_lstms_and_not_for_two_cnns():
  config = video.get_config()
  config.model.update(frame_shape=(16, 16, 1), num_frames=3)
  lstms = arms.with_model(config, branches='lstm+lstm')
  params = jax.eval_shape(
    input_kinds.create_model(lstms).init, jax.random.key(0), input_kinds.dummy_batch(lstms, 1)
  )['params']
  assert set(params) == {'frame_cnn', 'lstm', 'lstm_copy', 'head'}
  cnns = arms.with_model(config, branches='cnn+cnn')
  params = jax.eval_shape(
    input_kinds.create_model(cnns).init, jax.random.key(0), input_kinds.dummy_batch(cnns, 1)
  )['params']
  assert set(params) == {'frame_cnn', 'cnn_copy', 'head'}
  flat = 4 * 4 * 64
  assert params['head']['output']['kernel'].shape == (2 * flat, 20)


def test_unknown_branches_value_is_refused():
  config = arms.with_model(sensor.get_config(), branches='cnn+lstm')
  with pytest.raises(ValueError, match='branches'):
    config_validation.validate(config)


@pytest.mark.parametrize('get_config', [sensor.get_config, text.get_config])
def test_matched_arms_come_closest_to_concat(get_config):
  config = get_config()
  sizes = arms.match_sizes(config)
  target = sizes['target']
  assert target == arms.count_params(arms.with_model(config, branches='both', fusion='concat'))
  cnn_count = lambda w: arms.count_params(
    arms.with_model(  # pylint: disable=g-long-lambda
      config,
      branches='cnn',
      conv_features=arms.widened_conv_features(tuple(config.model.conv_features), w),
    )
  )
  lstm_count = lambda u: arms.count_params(arms.with_model(config, branches='lstm', lstm_units=u))
  for count, size in ((cnn_count, sizes['cnn_width']), (lstm_count, sizes['lstm_units'])):
    best = abs(count(size) - target)
    assert best <= abs(count(size - 1) - target) and best <= abs(count(size + 1) - target)
    assert best <= 0.03 * target  # One unit of width moves sensor's count by ~4%.
  for fusion in ('gated', 'projected_sum'):
    dim = sizes[f'{fusion}_dim']
    count = lambda d, f=fusion: arms.count_params(
      arms.with_model(  # pylint: disable=g-long-lambda
        config, branches='both', fusion=f, fusion_dim=d
      )
    )
    best = abs(count(dim) - target)
    assert all(best <= abs(count(d) - target) for d in (dim - 1, dim + 1) if d >= 1)
  for name, arm in arms.ARMS.items():
    if arm.matched:
      params = arms.count_params(arm.configure(config, sizes))
      assert abs(params - target) <= arms.MATCH_TOLERANCE * target, (name, params, target)


def test_sensor_matched_sizes_by_hand():
  sizes = arms.match_sizes(sensor.get_config())
  assert sizes['target'] == 9_889
  # projected_sum at width d: branches + 768d + d + 32d + d + (d + 1): d = 1 gives 9,892.
  assert sizes['projected_sum_dim'] == 1
  # gated adds a gate Dense(800 -> d): even d = 1 is 10,693, 8% over (within the tolerance).
  assert sizes['gated_dim'] == 1
  assert (
    arms.count_params(arms.ARMS['gated_matched'].configure(sensor.get_config(), sizes)) == 10_693
  )


def test_widened_conv_features_keep_the_shape():
  assert arms.widened_conv_features((32, 64), 128) == (64, 128)
  assert arms.widened_conv_features((128, 128), 100) == (100, 100)
  assert arms.widened_conv_features((32, 64), 1) == (1, 1)
