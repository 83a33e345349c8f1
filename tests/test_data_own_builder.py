"""A user's own dataset plugs in by writing one builder module and naming it in the config.

The README's own-builder commands and builders run verbatim through the real command line (with a
stand-in `read_my_files` and a few-step run appended).
"""

import os
import re
import shlex
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from configs import video
from hybrid_jax.data import datasets
from hybrid_jax.data import pipeline
from hybrid_jax import input_kinds
from hybrid_jax.errors import DataError
import cli_runner

# The builder a user writes (as in the README), with random clips standing in for their files.
OWN_BUILDER = textwrap.dedent('''
    import numpy as np
    import tensorflow_datasets as tfds

    class MyClips(tfds.core.GeneratorBasedBuilder):
      VERSION = tfds.core.Version('1.0.0')

      def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                'clip': tfds.features.Tensor(shape=(6, 16, 16, 1), dtype=np.uint8),
                'label': tfds.features.ClassLabel(names=['a', 'b', 'c'])}),
            metadata=tfds.core.MetadataDict())

      def _split_generators(self, dl_manager):
        self.info.metadata.update(num_frames=6, frame_shape=[16, 16, 1])
        return {'train': self._generate_examples(0, 24), 'validation': self._generate_examples(1, 7),
                'test': self._generate_examples(2, 5)}

      def _generate_examples(self, seed, n):
        rng = np.random.default_rng(seed)
        for i in range(n):
          yield i, {'clip': rng.integers(0, 256, (6, 16, 16, 1), dtype=np.uint8), 'label': i % 3}
''')


@pytest.fixture(scope='module')
def own_builder_module(tmp_path_factory):
  """The user's package on sys.path (imported once: TFDS registers a builder name only once)."""
  root = tmp_path_factory.mktemp('user_code')
  package = root / 'my_datasets'  # TFDS builders must live in a package.
  package.mkdir()
  (package / '__init__.py').write_text('')
  (package / 'my_clips.py').write_text(OWN_BUILDER)
  sys.path.insert(0, str(root))
  yield 'my_datasets.my_clips'
  sys.path.remove(str(root))


def own_config(tmp_path, module):
  config = video.get_config('smoke')
  config.dataset.update(name='my_clips', builder_module=module, data_dir=str(tmp_path / 'data'))
  config.model.update(frame_shape=None, num_frames=None, num_classes=None)
  return config


def test_own_builder_is_prepared_and_feeds_the_model(tmp_path, own_builder_module):
  source = datasets.resolve(own_config(tmp_path, own_builder_module))
  config, info = source.config, source.info
  assert (info.num_train_examples, info.num_eval_examples, info.num_classes) == (24, 7, 3)
  assert (tuple(config.model.frame_shape), config.model.num_frames) == ((16, 16, 1), 6)
  batch = next(
    pipeline.create_train_iterator(datasets.resolve(config), process_index=0, process_count=1)
  )
  assert batch['clip'].shape == (8, 6, 16, 16, 1) and batch['label'].shape == (8,)
  model = input_kinds.create_model(config)
  logits = model.apply(model.init(jax.random.key(0), batch), batch)
  assert logits.shape == (8, 3) and np.all(np.isfinite(logits))
  eval_rows = sum(
    int(b['mask'].sum())
    for b in pipeline.create_eval_batches(
      datasets.resolve(config), process_index=0, process_count=1
    )
  )
  assert eval_rows == 7


def test_own_builder_errors_are_one_line(tmp_path, own_builder_module):
  config = own_config(tmp_path, 'no_such_module_here')
  with pytest.raises(DataError, match='builder_module') as error:
    datasets.resolve(config)
  assert '\n' not in str(error.value)
  config = own_config(tmp_path, own_builder_module)
  config.dataset.name = 'my_clipz'
  with pytest.raises(DataError, match='defines no dataset') as error:
    datasets.resolve(config)
  assert '\n' not in str(error.value)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Stand-ins for the user's file reading that the README's builders call.
READ_MY_FILES = {
  'my_clips': """
def read_my_files(split):
  rng = np.random.default_rng(len(split))
  for i in range(12 if split == 'train' else 4):
    yield rng.integers(0, 256, (10, 64, 64, 1), dtype=np.uint8), i % 3
""",
  'my_series': """
def read_my_files(split):
  rng = np.random.default_rng(len(split))
  for i in range(24 if split == 'train' else 6):
    yield (rng.normal(size=(int(rng.integers(5, 40)), 6)) + i % 3).astype(np.float32), i % 3
""",
  'my_reviews': """
def read_my_files():
  words = ['good', 'bad', 'fine', 'awful', 'great', 'meh', 'film', 'plot']
  for i in range(80):
    yield ' '.join(words[(i * 7 + k) % 8] for k in range(3 + i % 5)) + f' {i}', ('negative', 'positive')[i % 2]
""",
}


def readme_own_builders() -> list[tuple[str, str, str]]:
  """(module name, bash command, python builder) of each example in the README's own-dataset section."""
  with open(os.path.join(REPO, 'docs/data.md'), encoding='utf-8') as f:
    readme = f.read()
  section = readme.split('### Your own dataset', 1)[1].split('\n### ', 1)[0]
  commands = re.findall(r'```bash\n(.*?)```', section, re.S)
  builders = re.findall(r'```python\n(.*?)```', section, re.S)
  assert len(commands) == len(builders) == 3
  return [
    (re.search(r'builder_module=my_datasets\.(\w+)', c).group(1), c, b)
    for c, b in zip(commands, builders)
  ]


@pytest.mark.parametrize('example', range(3))
def test_readme_own_builder_commands_run_verbatim(tmp_path, example):
  module, command, builder = readme_own_builders()[example]
  package = tmp_path / 'my_code' / 'my_datasets'
  package.mkdir(parents=True)
  (package / '__init__.py').write_text('')
  header, _, body = builder.partition('\n')  # The imports line first, then the stand-in reader.
  (package / f'{module}.py').write_text(
    header + '\nimport numpy as np\n' + READ_MY_FILES[module] + body
  )
  argv = shlex.split(command.replace('\\\n', ' '))
  assert argv[0] == 'PYTHONPATH=/path/to/my_code' and argv[1:3] == ['python', '-m']
  env = dict(os.environ, PYTHONPATH=str(tmp_path / 'my_code'))
  fast = [
    '--config.num_train_steps=2',
    '--config.batch_size=4',
    '--config.eval_batch_size=4',
    '--config.log_every_steps=1',
    '--config.eval_every_steps=2',
    '--config.checkpoint_every_steps=2',
    f'--config.dataset.data_dir={tmp_path / "data"}',
    f'--workdir={tmp_path / "run"}',
  ]
  result = cli_runner.run([*argv[2:], *fast], devices=1, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert '[final eval] step 2' in result.stdout and 'accuracy' in result.stdout
  tested = cli_runner.run([*argv[2:], *fast, '--mode=eval', '--split=test'], devices=1, env=env)
  assert tested.returncode == 0, tested.stderr[-3000:]
  assert '[eval] test split, step 2' in tested.stdout


@pytest.mark.parametrize(
  'missing,body,message',
  [
    (
      'label_names',
      "  def _load(self):\n    return [('0', 'some text', 'a')]\n",
      'sets no LABEL_NAMES',
    ),
    ('load', "  LABEL_NAMES = ('a', 'b')\n", 'does not implement _load()'),
  ],
)
def test_text_subclass_missing_a_part_is_a_one_line_error(tmp_path, missing, body, message):
  package = tmp_path / 'code' / 'bad_texts'
  package.mkdir(parents=True)
  (package / '__init__.py').write_text('')
  (package / f'no_{missing}.py').write_text(
    'import tensorflow_datasets as tfds\n'
    'from hybrid_jax.data.builders import text_builder\n\n'
    f'class No{missing.title().replace("_", "")}(text_builder.TextClassificationBuilder):\n'
    "  VERSION = tfds.core.Version('1.0.0')\n" + body
  )
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(tmp_path / 'code'))
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'hybrid_jax.main',
      '--config=configs/text.py:smoke',
      f'--config.dataset.builder_module=bad_texts.no_{missing}',
      f'--config.dataset.name=no_{missing}',
      f'--config.dataset.data_dir={tmp_path / "data"}',
      f'--workdir={tmp_path / "run"}',
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: No') and message in last, last
