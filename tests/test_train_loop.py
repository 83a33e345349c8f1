"""Properties of the train loop, in process on the tiny data (4 fake CPU devices from conftest.py).

pmap over 4 devices == 1 device; an interrupted + resumed run == an uninterrupted one; the same
seed gives the same numbers; a 4-device checkpoint restores on 1 device; the best checkpoint is
kept and found; NaN stops the run naming the step with nothing broken saved; corrupt checkpoints
and finished runs are handled without losing anything.
"""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from configs import sensor
from configs import text
from hybrid_jax import checkpoints
from hybrid_jax import train
import adam_rounding


def _config(data_dir, module=text, name='bbc_news/tiny', **overrides):
  config = module.get_config('smoke')
  config.dataset.name = name
  config.dataset.data_dir = data_dir
  for key, value in overrides.items():
    config[key] = value
  return config


def _saved(workdir, step=None, devices=None):
  """(train state restored onto `devices`, saved steps) of a run directory."""
  config = _saved.configs[workdir]
  run = train.Run(config, devices)
  manager = checkpoints.create_manager(workdir, 1, run.best_metric, read_only=True)
  try:
    step = checkpoints.resolve_step(manager, 'latest' if step is None else step)
    return checkpoints.restore(manager, step, run.abstract_state).state, sorted(manager.all_steps())
  finally:
    manager.close()


_saved.configs = {}


def _train(config, workdir, devices=None):
  _saved.configs[str(workdir)] = config
  return train.train_and_evaluate(config, str(workdir), devices)


def _params(state):
  return jax.tree.map(np.asarray, jax.device_get(state.params))


def _jsonl(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [json.loads(line) for line in f]


# orbax leaves un-awaited read tasks behind when a restore fails (the corrupt-checkpoint test);
# they surface as warnings in whichever test runs next. Harmless noise, not ours to fix.
pytestmark = [
  pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning'),
  pytest.mark.filterwarnings('ignore:coroutine .* was never awaited:RuntimeWarning'),
]


# A config that exercises every source of run-to-run variation: schedule, clipping, decay, dropout.
RESUME = dict(
  num_train_steps=6,
  lr_schedule='warmup_cosine',
  warmup_steps=2,
  grad_clip_norm=1.0,
  weight_decay=1e-4,
  checkpoint_every_steps=3,
  eval_every_steps=3,
  log_every_steps=1,
)


class _Preempted(Exception):
  pass


def test_pmap_four_devices_equals_one_device(tiny_data_dir, tmp_path):
  config = _config(
    tiny_data_dir,
    sensor,
    'weather_stations/tiny',
    num_train_steps=3,
    eval_every_steps=3,
    checkpoint_every_steps=3,
  )
  four = _train(config, tmp_path / 'four', jax.devices()[:4])
  one = _train(config, tmp_path / 'one', jax.devices()[:1])
  p4, p1 = _params(_saved(str(tmp_path / 'four'))[0]), _params(_saved(str(tmp_path / 'one'))[0])
  start = _params(
    jax.jit(train.Run(config, None).init_fn)(jax.random.split(jax.random.key(config.seed))[0])
  )
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), p4, start))
  assert max(moved) > 1e-4  # The steps did update the parameters ...
  # ... equally on 1 and 4 devices, up to rounding (the batch is summed in another order).
  adam_rounding.assert_close(p4, p1, config.learning_rate)
  assert four['loss'] == pytest.approx(one['loss'], rel=1e-5)


def test_resume_equals_uninterrupted_and_is_deterministic(tiny_data_dir, tmp_path, monkeypatch):
  config = _config(tiny_data_dir, **RESUME)
  config.model.dropout_rate = 0.3
  straight = _train(config, tmp_path / 'straight')
  again = _train(config, tmp_path / 'again')
  assert straight == again  # Same config and seed: identical eval metrics ...
  log = [
    {k: v for k, v in r.items() if not k.endswith('_per_sec')}
    for r in _jsonl(str(tmp_path / 'straight'))
  ]
  assert log == [
    {k: v for k, v in r.items() if not k.endswith('_per_sec')}
    for r in _jsonl(str(tmp_path / 'again'))
  ]  # ... and identical train curves.

  real_iterator = train.pipeline.create_train_iterator

  def preempted_after_4_batches(*args, **kwargs):
    it = real_iterator(*args, **kwargs)
    base = type(it)

    class Interrupting(base):  # Same class for orbax/grain, but dies fetching the 5th batch.
      fetched = 0

      def __next__(self):
        type(self).fetched += 1
        if type(self).fetched > 4:
          raise _Preempted()
        return base.__next__(self)

    it.__class__ = Interrupting
    return it

  monkeypatch.setattr(train.pipeline, 'create_train_iterator', preempted_after_4_batches)
  with pytest.raises(_Preempted):
    _train(config, tmp_path / 'resumed')
  assert _saved(str(tmp_path / 'resumed'))[1] == [3]  # Killed during step 5: last save is step 3.
  monkeypatch.setattr(train.pipeline, 'create_train_iterator', real_iterator)
  resumed = _train(config, tmp_path / 'resumed')

  state, steps = _saved(str(tmp_path / 'resumed'))
  reference, _ = _saved(str(tmp_path / 'straight'))
  assert steps == [3, 6] and int(state.step) == 6
  jax.tree.map(np.testing.assert_array_equal, _params(state), _params(reference))
  jax.tree.map(
    np.testing.assert_array_equal,
    jax.device_get(state.opt_state),
    jax.device_get(reference.opt_state),
  )
  assert resumed == straight

  # Restore on 1 device what 4 devices saved: same parameters; metrics equal to float tolerance.
  one_state, _ = _saved(str(tmp_path / 'straight'), devices=jax.devices()[:1])
  for leaf in jax.tree.leaves(one_state):
    assert leaf.sharding.device_set == {jax.devices()[0]}
  jax.tree.map(np.testing.assert_array_equal, _params(one_state), _params(reference))
  on_one = train.evaluate(config, str(tmp_path / 'straight'), devices=jax.devices()[:1])
  for name in ('loss', 'accuracy'):
    assert on_one[name] == pytest.approx(straight[name], rel=1e-5, abs=1e-6)
  assert on_one['confusion'] == straight['confusion']

  # Re-running a finished run changes nothing that was saved.
  before = {
    p: os.path.getmtime(os.path.join(tmp_path, 'straight', 'checkpoints', p))
    for p in os.listdir(tmp_path / 'straight' / 'checkpoints')
  }
  assert _train(config, tmp_path / 'straight') == straight
  after = {
    p: os.path.getmtime(os.path.join(tmp_path, 'straight', 'checkpoints', p))
    for p in os.listdir(tmp_path / 'straight' / 'checkpoints')
  }
  assert before == after


def test_best_checkpoint_is_kept_and_restored(tiny_data_dir, tmp_path):
  config = _config(tiny_data_dir, **RESUME)
  config.keep_checkpoints = 1
  config.best_metric = 'loss'
  workdir = str(tmp_path / 'best')
  _train(config, workdir)
  evals = [r for r in _jsonl(workdir) if r['split'] == 'eval']
  best = min(evals, key=lambda r: r['loss'])['step']
  steps = _saved(workdir)[1]
  assert steps == sorted({best, 6})  # The latest, plus the best when it is another step.
  restored = train.evaluate(config, workdir, checkpoint='best')
  assert restored['step'] == best
  assert restored['loss'] == min(r['loss'] for r in evals)
  with pytest.raises(checkpoints.CheckpointError, match='saved steps are'):
    train.evaluate(config, workdir, checkpoint='1')


def test_nan_stops_at_its_step_and_saves_nothing_after(tiny_data_dir, tmp_path):
  config = _config(
    tiny_data_dir, sensor, 'weather_stations/tiny', learning_rate=1e38, checkpoint_every_steps=1
  )
  with pytest.raises(FloatingPointError, match=r'at step 2; stopped without saving') as error:
    _train(config, tmp_path / 'nan')
  assert 'the last checkpoint is step 1' in str(error.value)
  assert _saved(str(tmp_path / 'nan'))[1] == [1]


def test_corrupt_checkpoint_is_named_and_skipped_and_nothing_is_deleted(tiny_data_dir, tmp_path):
  config = _config(tiny_data_dir, sensor, 'weather_stations/tiny')
  workdir = str(tmp_path / 'corrupt')
  _train(config, workdir)
  other = _config(tiny_data_dir, sensor, 'weather_stations/tiny')
  other.model.lstm_units = 8  # Another model: restoring must say so, not "corrupt".
  with pytest.raises(checkpoints.CheckpointError, match='holds another model') as error:
    train.evaluate(other, workdir)
  assert 'delete' not in str(error.value) and 'damaged' not in str(error.value)
  state_dir = os.path.join(workdir, 'checkpoints', '4', 'state')
  for name in os.listdir(state_dir):  # Lose the array data of the latest checkpoint.
    if name.startswith('ocdbt') or name == 'd':
      shutil.rmtree(os.path.join(state_dir, name))
  with pytest.raises(
    checkpoints.CheckpointError,
    match=r'checkpoints/4 is damaged: file .* is '
    'missing',
  ):
    train.evaluate(config, workdir, checkpoint='4')
  assert train.evaluate(config, workdir)['step'] == 2  # 'latest': the newest intact step.
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4']  # Nothing deleted.
  # A garbage metrics file in one step: that step is damaged, the others still work.
  os.makedirs(os.path.join(workdir, 'checkpoints', '2', 'metrics'), exist_ok=True)
  with open(
    os.path.join(workdir, 'checkpoints', '2', 'metrics', 'metrics'), 'w', encoding='utf-8'
  ) as f:
    f.write('{not json')
  with pytest.raises(checkpoints.CheckpointError, match=r'No intact checkpoint .*\[4, 2\]'):
    train.evaluate(config, workdir)


def test_bad_batch_size_names_the_numbers(tiny_data_dir, tmp_path):
  config = _config(tiny_data_dir, sensor, 'weather_stations/tiny', batch_size=6)
  with pytest.raises(
    ValueError, match=r'batch_size=6 must be a positive multiple of the 4 devices'
  ):
    _train(config, tmp_path / 'bad')
  assert not os.path.exists(tmp_path / 'bad' / 'checkpoints')


def test_init_checkpoint_gives_the_initial_parameters(tiny_data_dir, tmp_path):
  source = _config(tiny_data_dir, sensor, 'weather_stations/tiny')
  _train(source, tmp_path / 'source')
  # learning_rate=0: Adam leaves the parameters where they started, i.e. at the source's.
  config = _config(
    tiny_data_dir,
    sensor,
    'weather_stations/tiny',
    learning_rate=0.0,
    num_train_steps=2,
    init_checkpoint=str(tmp_path / 'source'),
  )
  _train(config, tmp_path / 'finetune')
  jax.tree.map(
    np.testing.assert_array_equal,
    _params(_saved(str(tmp_path / 'finetune'))[0]),
    _params(_saved(str(tmp_path / 'source'))[0]),
  )
  config.init_checkpoint = str(tmp_path / 'nowhere')
  with pytest.raises(checkpoints.CheckpointError, match='init_checkpoint=.*does not exist'):
    _train(config, tmp_path / 'other')
