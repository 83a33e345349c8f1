"""controls: synthetic series whose answer to "does concat help?" is known before any training.

The study asks whether concatenating the LSTM's features to the CNN's helps. An instrument that has
never said "helps" cannot support "never": these controls are built so that each variant's verdict
follows from the construction, for the sensor model with `pooling='global_max'` (one Conv1D layer,
k = 3, ReLU, MaxPool2, then a max over time ∥ an LSTM; configs/controls.py).

Construction (numpy, from a seed; no files). A series has T steps and two channels, Gaussian noise
of std σ everywhere, and two cues:
  - local cue a ∈ {0, 1}, channel 0: one motif of 3 steps (the CNN's kernel), m₀ = (-1, 0, +1) for
    a = 0 or m₁ = reversed m₀ = (+1, 0, -1) for a = 1 (the same values, only their order differs),
    at a random position, among D distractor motifs (each one of the 4 other orderings of the same
    values, drawn uniformly) at other random positions. A kernel matched to m_a answers 2 on m_a
    and at most 1 (plus noise) on any other window, wherever the motif is.
  - order cue b ∈ {0, 1}, channel 1: a +B and a -B spike (B = 2) at positions p < q, q - p >= T/4
    (far beyond the CNN's receptive field of 3 steps); b = 0 when +B comes first, b = 1 when -B
    does. The two spike windows x[p-2 : p+3] and x[q-2 : q+3] (both channels) carry one shared
    noise draw, so they differ only in the spike's sign.
Events (the motif, the distractors, the two spike windows) keep 2 noise steps between each other
and from the series' ends, so no 3-step window spans two events and 'SAME' padding touches none.
A motif value 0 next to background noise never forms m₀ or m₁ across two events (that would need
±1 within 2 steps of each other outside one event).

Why the CNN cannot read b (tested in tests/test_data_controls.py). With one conv layer and a global
max, the CNN's feature k is max over t of ReLU(w_k · x[t-1 : t+2] + c_k): a function of the
multiset of 3-step windows (MaxPool2 then a max over time is the max over all steps). Exchange x[p]
and x[q] (both channels). The only windows that change are the three through p and the three through
q; since x[p-2 : p+3] and x[q-2 : q+3] agree except at their centres, the windows through p become
exactly those that went through q and vice versa. So the multiset, and the CNN's output, is
unchanged (bit for bit), while the exchange turns the example with b into the example with 1 - b,
the same noise and positions: the generator draws b independently of everything else, so both are
equally likely and, given a, the CNN's output has the same distribution for b = 0 and b = 1. No
training can beat 50% on b from those features. (For the reference CNN of configs/controls.py; a
deeper CNN would need wider shared windows and an even q - p, because MaxPool2 between conv layers
breaks odd shifts.)

Knobs (`ControlsConfig`): T = 384 steps, σ = 0.12, D = 16 distractors, seed 0; 4,096 / 1,024 /
2,048 series. Chosen with experiments/controls_calibration.py (its table:
experiments/results/controls_calibration.md) so that, at the study's settings, the CNN alone reads a
nearly perfectly and b at chance (the proof above), and the LSTM alone reads b nearly perfectly and
a at chance: one 3-step motif among distractors and noise, anywhere in a long series, is more than
it latches in 1,000 steps. Less noise, fewer distractors or shorter series let the LSTM find the
motif now and then (at the highest learning rates first); more noise or more distractors slow the
CNN down.

Variants (builder configs; `<variant>_tiny`: a small build of each, for tests). The verdict each variant is designed to give for
"concat - best single branch", in the study's words (`DESIGNED_VERDICTS`), and why:
  - `local`,     y = a (2 classes). Redundant: the CNN alone is at the ceiling and the LSTM's
    features add nothing it lacks. Late ensemble ≈ the CNN. (Concat below the CNN would be a
    training failure: the LSTM's uninformative block disturbing the head.)
  - `order`,     y = b (2 classes). Redundant: the mirror image; the CNN's features carry nothing
    about the label (provably), the LSTM alone carries it. Late ensemble ≈ the LSTM.
  - `both`,      y = 2a + b (4 classes). Helps, by about 50 points: the CNN alone is capped at 50%
    (it knows a, not b), the LSTM alone at 50% (it knows b, not a), concat reaches about the
    CNN's a accuracy x the LSTM's b accuracy, because a linear head can add class scores from the
    two blocks: s(2a + b) = α(a) + β(b). The positive control. The late ensemble (averaged
    probabilities) can reach it too where each member spreads its mass evenly over the two classes
    it allows; whether it does is measured, not designed (concat − late ensemble in
    experiments/results/study_controls_both.md).
  - `redundant`, a = b, y = a (2 classes). Redundant: either branch reads the label alone, both
    near the ceiling; concat matches the best single branch.
  - `xor`,       y = a ⊕ b (2 classes). Redundant, all arms at chance, although concat holds both
    cues: the head is linear on [CNN features, LSTM features], so its logit difference is
    G(a) + H(b) when the CNN knows only a and the LSTM only b. a ⊕ b is orthogonal to every such
    additive function on the balanced (a, b) cells, so the cross-entropy optimum is the constant
    1/2 (chance); a rule like "a or b" would get 3 cells of 4 (75%) but at a higher loss, which
    training does not seek. The late ensemble is capped at chance (each member alone sees a cue
    that says nothing about a ⊕ b), and so is a head on the frozen branches' features (the
    study's probe). Concat can beat chance only where the LSTM computes a ⊕ b itself, i.e. reads
    a, which it does not at these knobs: complementary features are not enough for a linear
    fusion.

Splits: train / validation / test, each its own seed stream (SeedSequence([seed, split index])), so
changing the seed changes every example; the variants other than `redundant` share their series
(only the labels differ). Stored values are the raw series; the train split's per-channel mean and
std are in the metadata (the pipeline normalises with them: one affine map per channel, applied at
every step, which keeps the spike windows' equality and so the CNN's blindness).
"""

import itertools

import numpy as np
import tensorflow_datasets as tfds

from hybrid_jax.data.builders import common
from hybrid_jax.errors import DataError

CHANNELS = 2
MOTIF = (-1.0, 0.0, 1.0)  # m₀ (a = 0); m₁ = reversed (a = 1).
# The other orderings of MOTIF's values: the distractors.
DISTRACTORS = tuple(
  p for p in itertools.permutations(MOTIF) if p not in (MOTIF, tuple(reversed(MOTIF)))
)
SPIKE = 2.0  # B: the spikes are +B and -B in channel 1.
SPIKE_HALF_WIDTH = 2  # A spike window is x[p-2 : p+3]: every 3-step window through p.
GAP = 2  # Noise steps kept between two events and between an event and a series' end.
SPLITS = ('train', 'validation', 'test')
CLASS_NAMES = {
  'local': ('motif_up', 'motif_down'),
  'order': ('plus_first', 'minus_first'),
  'both': ('up_plus_first', 'up_minus_first', 'down_plus_first', 'down_minus_first'),
  'redundant': ('up_plus_first', 'down_minus_first'),
  'xor': ('same', 'different'),
}
VARIANTS = tuple(CLASS_NAMES)
# The verdict each variant is designed to give for "concat - best single branch" (the study's
# decision rule), with the reason in one line; the module docstring has the argument.
DESIGNED_VERDICTS = {
  'local': ('redundant', 'the CNN alone reads the label; the LSTM adds nothing'),
  'order': ('redundant', 'the LSTM alone reads the label; the CNN is provably blind to it'),
  'both': ('helps', 'each branch reads one of two cues (each alone: 50%); a linear head adds them'),
  'redundant': ('redundant', 'either branch alone reads the label'),
  'xor': (
    'redundant',
    'a linear head cannot combine a from the CNN with b from the LSTM into a ⊕ b',
  ),
}


def label_of(variant: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """The label of each example from its cues a (local) and b (order): int64 [n]."""
  a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
  if variant == 'local':
    return a
  if variant == 'order':
    return b
  if variant == 'both':
    return 2 * a + b
  if variant == 'redundant':
    if np.any(a != b):
      raise DataError('controls/redundant needs a == b in every example.')
    return a
  if variant == 'xor':
    return a ^ b
  raise DataError(f'Unknown controls variant {variant!r}: use one of {VARIANTS}.')


def min_length(distractors: int) -> int:
  """The shortest series in which every placement order leaves room for every event.

  A motif may start at s in [GAP, length - 3 - GAP] (length - 2 - 2 * GAP starts) where
  x[s - GAP : s + 3 + GAP] is free; a placed event of w steps rules out at most w + 2 + 2 * GAP
  starts. The two spike windows (w = 5) and D motifs placed, one start must remain.
  """
  spike, motif = 2 * SPIKE_HALF_WIDTH + 1, len(MOTIF)
  starts_needed = 1 + 2 * (spike + motif - 1 + 2 * GAP) + distractors * (2 * motif - 1 + 2 * GAP)
  return starts_needed + motif - 1 + 2 * GAP


def generate(
  variant: str,
  num_examples: int,
  *,
  length: int,
  sigma: float,
  distractors: int,
  seed: int,
  split: int = 0,
) -> dict[str, np.ndarray]:
  """Examples of one split, and the generator's record of what it put where.

  Returns:
    'window': float32 [n, length, 2]; 'label': int64 [n]; 'a', 'b': int64 [n] (the cues);
    'motif_start': int64 [n] (the motif is x[s : s+3, 0]); 'spikes': int64 [n, 2] (p < q: the
    spike centres); 'distractor_start': int64 [n, D]; 'distractor_kind': int64 [n, D] (indices
    into DISTRACTORS).
  """
  if variant not in VARIANTS:
    raise DataError(f'Unknown controls variant {variant!r}: use one of {VARIANTS}.')
  rng = np.random.default_rng(np.random.SeedSequence([seed, split]))
  n, width = num_examples, 2 * SPIKE_HALF_WIDTH + 1
  if length < min_length(distractors):
    raise DataError(
      f'controls: length={length} cannot always fit {distractors} distractors, the motif and the '
      f'two spike windows: use length >= {min_length(distractors)} or fewer distractors.'
    )
  min_separation = length // 4
  a = rng.integers(0, 2, n)
  b = a.copy() if variant == 'redundant' else rng.integers(0, 2, n)
  window = rng.normal(0.0, sigma, (n, length, CHANNELS))
  shared = rng.normal(0.0, sigma, (n, width, CHANNELS))  # The spike windows' one noise draw.
  kinds = rng.integers(0, len(DISTRACTORS), (n, distractors))
  motifs = np.array([MOTIF, MOTIF[::-1]])
  spikes = np.zeros((n, 2), np.int64)
  motif_start = np.zeros(n, np.int64)
  distractor_start = np.zeros((n, distractors), np.int64)
  for i in range(n):
    taken = np.zeros(length, bool)  # The steps events occupy.
    while True:
      p, q = np.sort(rng.integers(SPIKE_HALF_WIDTH + GAP, length - SPIKE_HALF_WIDTH - GAP, 2))
      if q - p >= min_separation:
        break
    for c in (p, q):
      taken[c - SPIKE_HALF_WIDTH : c + SPIKE_HALF_WIDTH + 1] = True
      window[i, c - SPIKE_HALF_WIDTH : c + SPIKE_HALF_WIDTH + 1] = shared[i]
    window[i, p, 1] += SPIKE if b[i] == 0 else -SPIKE
    window[i, q, 1] += -SPIKE if b[i] == 0 else SPIKE
    spikes[i] = p, q
    starts = []
    for _ in range(distractors + 1):
      # Starts s with x[s - GAP : s + 3 + GAP] free (so s >= GAP and s + 3 + GAP <= length).
      free = np.flatnonzero(
        ~np.lib.stride_tricks.sliding_window_view(taken, len(MOTIF) + 2 * GAP).any(-1)
      )
      s = int(rng.choice(free)) + GAP
      taken[s : s + len(MOTIF)] = True
      starts.append(s)
    motif_start[i], distractor_start[i] = starts[0], starts[1:]
    window[i, starts[0] : starts[0] + len(MOTIF), 0] += motifs[a[i]]
    for s, k in zip(starts[1:], kinds[i]):
      window[i, s : s + len(MOTIF), 0] += DISTRACTORS[k]
  return {
    'window': window.astype(np.float32),
    'label': label_of(variant, a, b),
    'a': a,
    'b': b,
    'motif_start': motif_start,
    'spikes': spikes,
    'distractor_start': distractor_start,
    'distractor_kind': kinds,
  }


class ControlsConfig(tfds.core.BuilderConfig):
  """One variant with its knobs: `length` T, `sigma` σ, `distractors` D, `seed`, split sizes."""

  def __init__(
    self,
    *,
    variant: str,
    length: int = 384,
    sigma: float = 0.12,
    distractors: int = 16,
    seed: int = 0,
    sizes: tuple[int, int, int] = (4096, 1024, 2048),
    **kwargs,
  ):
    super().__init__(**kwargs)
    self.variant, self.length, self.sigma = variant, length, sigma
    self.distractors, self.seed, self.sizes = distractors, seed, sizes


def _configs() -> list[ControlsConfig]:
  configs = []
  for variant in VARIANTS:
    configs.append(
      ControlsConfig(name=variant, variant=variant, description=f'The {variant!r} control.')
    )
  for variant in VARIANTS:
    configs.append(
      ControlsConfig(
        name=f'{variant}_tiny',
        variant=variant,
        sizes=(64, 16, 16),
        description=f'The {variant!r} control, 64 / 16 / 16 series, for tests.',
      )
    )
  return configs


class Controls(tfds.core.GeneratorBasedBuilder):
  __doc__ = __doc__
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release: local, order, both, redundant, xor.'}
  BUILDER_CONFIGS = _configs()
  DEFAULT_BUILDER_CONFIG_NAME = 'both'

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    return self.dataset_info_from_configs(
      description=__doc__,
      features=tfds.features.FeaturesDict(
        {
          'window': tfds.features.Tensor(
            shape=(config.length, CHANNELS),
            dtype=np.float32,
            doc='[time, 2]: channel 0 the motifs, channel 1 the spikes, both with noise',
          ),
          'label': tfds.features.ClassLabel(names=CLASS_NAMES[config.variant]),
          'length': common.scalar_int('Steps in the series (all: T).'),
        }
      ),
      supervised_keys=('window', 'label'),
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Generated from the seed.
    config = self.builder_config
    splits = {
      name: generate(
        config.variant,
        size,
        length=config.length,
        sigma=config.sigma,
        distractors=config.distractors,
        seed=config.seed,
        split=index,
      )
      for index, (name, size) in enumerate(zip(SPLITS, config.sizes))
    }
    train_steps = splits['train']['window'].reshape(-1, CHANNELS)
    num_classes = len(CLASS_NAMES[config.variant])
    majority = np.bincount(splits['train']['label'], minlength=num_classes).argmax()
    self.info.metadata.update(
      {
        'window_shape': [config.length, CHANNELS],
        'feature_mean': train_steps.mean(axis=0).tolist(),
        'feature_std': train_steps.std(axis=0).tolist(),
        'baselines': {
          name: {
            'chance_accuracy': 1 / num_classes,
            'majority_class_accuracy': float(np.mean(split['label'] == majority)),
          }
          for name, split in splits.items()
        },
        'knobs': {
          'variant': config.variant,
          'length': config.length,
          'sigma': config.sigma,
          'distractors': config.distractors,
          'seed': config.seed,
          'spike': SPIKE,
          'motif': list(MOTIF),
        },
      }
    )
    return {name: self._generate_examples(split) for name, split in splits.items()}

  def _generate_examples(self, split):
    for i, (x, y) in enumerate(zip(split['window'], split['label'])):
      yield i, {'window': x, 'label': int(y), 'length': len(x)}
