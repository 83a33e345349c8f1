"""The synthetic controls: a deterministic generator, labels that follow the cues, a CNN blind to order.

The proof that the CNN with global max pooling cannot read the order cue is in
hybrid_jax/data/builders/controls.py; here it is checked on generated series, bit for bit, and
shown to fail for a CNN that keeps positions (pooling='flatten').
"""

import itertools
import math

import jax
import numpy as np
import pytest

from configs import controls as controls_config
from hybrid_jax import train
from hybrid_jax.data import datasets
from hybrid_jax.data import pipeline
from hybrid_jax.data import shipped
from hybrid_jax.data.builders import controls
from hybrid_jax.models import conv

KNOBS = {'length': 384, 'sigma': 0.12, 'distractors': 16}  # The builder's defaults.
M0, M1 = np.array(controls.MOTIF), np.array(controls.MOTIF[::-1])
H = controls.SPIKE_HALF_WIDTH
# Each variant's label from the cues, written out apart from controls.label_of.
EXPECTED_LABEL = {
  'local': lambda a, b: a,
  'order': lambda a, b: b,
  'both': lambda a, b: 2 * a + b,
  'redundant': lambda a, b: a,
  'xor': lambda a, b: (a + b) % 2,
}


def test_defaults_are_the_knobs_tested_here():
  config = controls.Controls.builder_configs['both']
  assert (config.length, config.sigma, config.distractors) == tuple(KNOBS.values())
  assert set(EXPECTED_LABEL) == set(controls.VARIANTS)


def test_generator_is_deterministic():
  first = controls.generate('both', 32, seed=0, **KNOBS)
  again = controls.generate('both', 32, seed=0, **KNOBS)
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  for other in (
    controls.generate('both', 32, seed=1, **KNOBS),
    controls.generate('both', 32, seed=0, split=1, **KNOBS),
  ):
    assert not np.array_equal(first['window'], other['window'])
    assert not np.array_equal(first['spikes'], other['spikes'])


def _cues_read_from_series(example):
  """(a, b) read off each series at the generator's recorded positions, without its a and b."""
  window, n = example['window'], len(example['label'])
  rows = np.arange(n)
  motif = window[rows[:, None], example['motif_start'][:, None] + np.arange(3), 0]
  a = (np.abs(motif - M1).sum(1) < np.abs(motif - M0).sum(1)).astype(np.int64)
  p, q = example['spikes'].T
  b = (window[rows, p, 1] < window[rows, q, 1]).astype(np.int64)
  return a, b


@pytest.mark.parametrize('variant', controls.VARIANTS)
def test_labels_follow_the_cues(variant):
  example = controls.generate(variant, 200, seed=3, **KNOBS)
  a, b = _cues_read_from_series(example)
  np.testing.assert_array_equal(a, example['a'])
  np.testing.assert_array_equal(b, example['b'])
  np.testing.assert_array_equal(example['label'], EXPECTED_LABEL[variant](a, b))
  if variant == 'redundant':
    np.testing.assert_array_equal(a, b)
  else:  # Both cues vary, independently enough to fill every (a, b) cell.
    assert len(set(zip(a, b))) == 4
  # The spike windows share their noise: they differ only at the spike, by exactly 2B.
  window, length = example['window'], KNOBS['length']
  for i, (p, q) in enumerate(example['spikes']):
    assert q - p >= length // 4
    wp, wq = window[i, p - H : p + H + 1].copy(), window[i, q - H : q + H + 1].copy()
    assert abs(abs(wp[H, 1] - wq[H, 1]) - 2 * controls.SPIKE) < 1e-5
    wp[H], wq[H] = 0, 0
    np.testing.assert_array_equal(wp, wq)
    # Events keep GAP steps from each other and from the ends.
    spans = [(p - H, p + H + 1), (q - H, q + H + 1)] + [
      (s, s + 3) for s in (example['motif_start'][i], *example['distractor_start'][i])
    ]
    spans.sort()
    assert spans[0][0] >= controls.GAP and spans[-1][1] <= length - controls.GAP
    assert all(b[0] - a[1] >= controls.GAP for a, b in itertools.pairwise(spans))


def test_distractors_are_the_other_orderings_of_the_motif():
  assert len(controls.DISTRACTORS) == 4
  for d in controls.DISTRACTORS:
    assert sorted(d) == sorted(controls.MOTIF) and tuple(d) not in (tuple(M0), tuple(M1))


def _swap_spike_windows(window_NTC, spikes_N2):
  swapped = window_NTC.copy()
  for i, (p, q) in enumerate(spikes_N2):
    swapped[i, p - H : p + H + 1] = window_NTC[i, q - H : q + H + 1]
    swapped[i, q - H : q + H + 1] = window_NTC[i, p - H : p + H + 1]
  return swapped


@pytest.mark.parametrize('pooling, blind', [('global_max', True), ('flatten', False)])
def test_the_cnn_with_global_max_cannot_see_the_order(pooling, blind):
  """Swapping the two spike windows flips b; global max: bit-identical features, flatten: not."""
  example = controls.generate('order', 16, seed=5, **KNOBS)
  flat = example['window'].reshape(-1, 2)
  normalized = (example['window'] - flat.mean(0)) / flat.std(0)  # As the pipeline does.
  swapped = _swap_spike_windows(normalized, example['spikes'])
  # The swap is the same series with only the two spikes exchanged: the example with b flipped.
  rows, (p, q) = np.arange(16), example['spikes'].T
  centres_exchanged = normalized.copy()
  centres_exchanged[rows, p], centres_exchanged[rows, q] = normalized[rows, q], normalized[rows, p]
  np.testing.assert_array_equal(swapped, centres_exchanged)
  _, b_swapped = _cues_read_from_series(dict(example, window=swapped))
  np.testing.assert_array_equal(b_swapped, 1 - example['b'])
  no_spikes = normalized.copy()
  no_spikes[rows, p, 1] = no_spikes[rows, q, 1] = no_spikes[rows, p - 1, 1]

  cnn = conv.SensorCNN((64,), 3, pooling=pooling)
  lengths = np.full(len(normalized), KNOBS['length'], np.int32)
  params = cnn.init(jax.random.key(0), normalized[:1], lengths[:1])
  features = np.asarray(cnn.apply(params, normalized, lengths))
  features_swapped = np.asarray(cnn.apply(params, swapped, lengths))
  assert features.shape == (16, 64 if blind else 64 * KNOBS['length'] // 2)
  # The CNN sees the spikes (blind to their order, not to them).
  assert not np.array_equal(np.asarray(cnn.apply(params, no_spikes, lengths)), features)
  if blind:
    np.testing.assert_array_equal(features_swapped, features)
  else:
    assert not np.allclose(features_swapped, features)


def _config(name, data_dir, variant='smoke'):
  config = controls_config.get_config(variant)
  config.dataset.name = name
  config.dataset.data_dir = data_dir
  return config


def test_the_shipped_table_names_the_tiny_build():
  assert shipped.SHIPPED['controls'].tiny == 'both_tiny'
  names = {c.name for c in controls.Controls.BUILDER_CONFIGS}
  assert names == {v for v in controls.VARIANTS} | {f'{v}_tiny' for v in controls.VARIANTS}


@pytest.mark.parametrize('variant', controls.VARIANTS)
def test_tiny_builds_resolve_and_batch(tiny_data_dir, variant):
  source = datasets.resolve(_config(f'controls/{variant}_tiny', tiny_data_dir))
  num_classes = 4 if variant == 'both' else 2
  assert tuple(source.config.model.window_shape) == (KNOBS['length'], 2)
  assert source.config.model.num_classes == num_classes
  assert source.config.head == 'classification'
  assert source.info.baselines['chance_accuracy'] == 1 / num_classes
  metadata = source.metadata
  assert len(metadata['feature_mean']) == len(metadata['feature_std']) == 2
  batch = next(pipeline.create_train_iterator(source, process_index=0, process_count=1))
  assert batch['window'].shape == (8, KNOBS['length'], 2) and batch['window'].dtype == np.float32
  assert batch['length'].tolist() == [KNOBS['length']] * 8
  assert batch['label'].shape == (8,) and set(batch['label'].tolist()) <= set(range(num_classes))
  # Normalized with the train statistics: about zero mean, unit std per channel.
  assert np.all(np.abs(batch['window'].mean((0, 1))) < 0.5)


def test_smoke_training_on_a_tiny_build(tiny_data_dir, tmp_path):
  config = _config('controls/both_tiny', tiny_data_dir)
  assert config.num_train_steps == 4
  metrics = train.train_and_evaluate(config, str(tmp_path))
  assert math.isfinite(metrics['loss']) and 0 <= metrics['accuracy'] <= 1
