"""Train or evaluate a hybrid CNN+LSTM model.

python -m hybrid_jax.main --config=configs/video.py                      # train (resumes)
python -m hybrid_jax.main --config=configs/video.py:smoke                # seconds-long run
python -m hybrid_jax.main --config=configs/text.py --config.num_train_steps=500
python -m hybrid_jax.main --config=configs/video.py --mode=eval          # latest checkpoint
python -m hybrid_jax.main --config=configs/video.py --mode=eval --checkpoint=best
python -m hybrid_jax.main --config=configs/video.py --mode=eval --checkpoint=best --split=test
python -m hybrid_jax.main --config=configs/sensor.py --config.population.seeds=0,1,2 \
  --config.population.learning_rates=3e-4,1e-3                 # a population of 6 runs
python -m hybrid_jax.main --config=configs/sensor.py --config.population.seeds=0,1,2 \
  --config.population.learning_rates=3e-4,1e-3 --mode=eval --member=4   # seed 2, rate 3e-4
"""

import os

from hybrid_jax import platforms

platforms.choose_platform()  # Before JAX starts: the CPU, quietly, where CUDA has no driver.

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging
from ml_collections import config_flags

from hybrid_jax import cli
from hybrid_jax.errors import ConfigError
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  'config',
  None,
  'Config file, e.g. configs/video.py or configs/video.py:smoke; override any '
  'field with --config.<field>=<value>.',
  lock_config=True,
)
flags.DEFINE_string(
  'workdir',
  None,
  'Checkpoints, metrics.jsonl and TensorBoard events go here '
  '(default: workdirs/<config name>[_<variant>]).',
)
flags.DEFINE_enum(
  'mode',
  'train',
  ['train', 'eval'],
  'train: train (resuming from the workdir) and evaluate; eval: evaluate a '
  'checkpoint of the workdir on the eval split.',
)
flags.DEFINE_string('checkpoint', 'latest', "--mode=eval: 'latest', 'best' or a step number.")
flags.DEFINE_string(
  'split',
  None,
  '--mode=eval: the split to evaluate, e.g. test (default: '
  'config.dataset.eval_split, the validation split that training evaluates).',
)
flags.DEFINE_integer(
  'member',
  None,
  '--mode=eval of a population (config.population): member k only (default: every member).',
)
flags.mark_flag_as_required('config')


def default_workdir(config_arg: str) -> str:
  """'configs/video.py:smoke' -> 'workdirs/video_smoke'."""
  path, _, variant = config_arg.partition(':')
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join('workdirs', f'{name}_{variant}' if variant else name)


def main(argv):
  if len(argv) > 1:
    raise ConfigError(
      f'unexpected argument(s) {argv[1:]}: give settings as '
      '--config.<field>=<value> (run with --helpfull for the flags).'
    )
  config = FLAGS.config
  # Progress lines and tables are printed; library INFO is noise.
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  # Process setup comes before anything touches JAX devices (parallel.py is device-free).
  from hybrid_jax import parallel  # pylint: disable=g-import-not-at-top

  parallel.initialize_distributed(config.distributed)
  import jax  # pylint: disable=g-import-not-at-top
  from hybrid_jax import population  # pylint: disable=g-import-not-at-top
  from hybrid_jax import population_train  # pylint: disable=g-import-not-at-top
  from hybrid_jax import train  # pylint: disable=g-import-not-at-top

  if jax.process_index() != 0:  # Only process 0 logs (and writes metrics, see reporting.py).
    logging.set_verbosity(logging.ERROR)
  config_arg = config_flags.get_config_filename(FLAGS['config'])
  workdir = FLAGS.workdir or default_workdir(config_arg)
  if jax.process_index() == 0:
    print(
      f'hybrid_jax {FLAGS.mode}: config {config_arg}, '
      f'workdir {os.path.abspath(workdir)}, {jax.device_count()} device(s) '
      f'({jax.devices()[0].platform}), {jax.process_count()} process(es).',
      flush=True,
    )
  logging.info('Config:\n%s', config)
  members = population.members(config)
  if FLAGS.member is not None and not (FLAGS.mode == 'eval' and members):
    raise ConfigError(
      '--member applies to --mode=eval of a population (--config.population.seeds / '
      'learning_rates); drop it.'
    )
  if FLAGS.member is not None and not 0 <= FLAGS.member < len(members):
    raise ConfigError(f'--member={FLAGS.member}: the population has members 0..{len(members) - 1}.')
  if FLAGS.mode == 'train':
    if FLAGS.split:
      raise ConfigError(
        '--split applies to --mode=eval; training evaluates '
        'config.dataset.eval_split (set --config.dataset.eval_split instead).'
      )
    if members:
      population_train.train_population(config, workdir)
    else:
      train.train_and_evaluate(config, workdir)
  else:
    if FLAGS.split:
      config.dataset.eval_split = FLAGS.split
    if FLAGS.member is not None:
      member = members[FLAGS.member]
      train.evaluate(
        population.member_config(config, member),
        population.member_dir(workdir, member.index),
        FLAGS.checkpoint,
      )
    elif members:
      population_train.evaluate_population(config, workdir, FLAGS.checkpoint)
    else:
      train.evaluate(config, workdir, FLAGS.checkpoint)


if __name__ == '__main__':
  cli.run(main)
