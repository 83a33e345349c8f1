"""Nothing lost, nothing silent: verified checkpoints, refused runs write nothing, NaN never saved.

In process on the tiny sensor data (4 fake CPU devices from conftest.py): a bit-flipped array file
is detected and the previous step used (same numbers as an uninterrupted run); a refused run leaves
every file of the workdir as it was; a changed seed, model or batch size refuses naming the field;
a divergence at step 1 saves nothing; each manifest is written inside its step's commit;
metrics.jsonl has one record per (step, split) after a preempted + resumed run; every numeric/enum
config field is validated up front.
"""

import hashlib
import json
import os

import jax
import numpy as np
import pytest

from configs import sensor
from configs import text
from configs import video
from hybrid_jax import checkpoint_verification
from hybrid_jax import checkpoints
from hybrid_jax import config_validation
from hybrid_jax import train
from hybrid_jax.errors import CheckpointError
from hybrid_jax.errors import ConfigError
from hybrid_jax.errors import TrainingError


def _config(data_dir, **overrides):
  config = sensor.get_config('smoke')
  config.dataset.name = 'weather_stations/tiny'
  config.dataset.data_dir = data_dir
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split('.')
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  return config


def _tree_hash(root) -> dict[str, str]:
  """sha256 of every file below `root`, and every directory: what a refused run must keep."""
  out = {}
  for dirpath, dirnames, names in os.walk(root):
    for d in dirnames:
      out[os.path.relpath(os.path.join(dirpath, d), root) + '/'] = 'dir'
    for name in names:
      path = os.path.join(dirpath, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return out


def _steps(workdir) -> list[int]:
  return sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')) if s.isdigit())


def _params(workdir, step, data_dir) -> list[np.ndarray]:
  manager = checkpoints.create_manager(str(workdir), 1, 'mae', read_only=True)
  try:
    run = train.Run(_config(data_dir), None)
    state = checkpoints.restore(manager, step, run.abstract_state).state
  finally:
    manager.close()
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state.params))]


def _array_files(step_dir) -> list[str]:
  """The files holding array data in a step's `state` item (orbax/ocdbt data blobs)."""
  found = []
  for dirpath, _, names in os.walk(os.path.join(step_dir, 'state')):
    if os.path.basename(dirpath) == 'd':
      found += [os.path.join(dirpath, n) for n in names]
  return sorted(found)


def _flip_bit(path):
  with open(path, 'r+b') as f:
    data = bytearray(f.read())
    data[len(data) // 2] ^= 0x10
    f.seek(0)
    f.write(data)


def test_bit_flip_is_detected_and_the_previous_step_used(tiny_data_dir, tmp_path):
  straight = _config(tiny_data_dir, num_train_steps=6)
  train.train_and_evaluate(straight, str(tmp_path / 'straight'))

  workdir = str(tmp_path / 'flipped')
  train.train_and_evaluate(_config(tiny_data_dir), workdir)  # Saves steps 2 and 4.
  assert _steps(workdir) == [2, 4]
  step_4 = os.path.join(workdir, 'checkpoints', '4')
  assert os.path.exists(os.path.join(step_4, checkpoint_verification.MANIFEST))
  for path in _array_files(step_4):  # Every array blob: the one holding the params is among them.
    _flip_bit(path)
  with pytest.raises(CheckpointError, match=r'checkpoints/4 is damaged: file .*/4/state/'):
    train.evaluate(_config(tiny_data_dir), workdir, checkpoint='4')
  assert train.evaluate(_config(tiny_data_dir), workdir)['step'] == 2  # 'latest' falls back.

  resumed = train.train_and_evaluate(_config(tiny_data_dir, num_train_steps=6), workdir)
  assert os.path.isdir(os.path.join(workdir, 'damaged_checkpoints', '4'))  # Moved, not deleted.
  assert _steps(workdir) == [2, 4, 6]
  for a, b in zip(
    _params(workdir, 6, tiny_data_dir), _params(tmp_path / 'straight', 6, tiny_data_dir)
  ):
    np.testing.assert_array_equal(a, b)  # Replayed from step 2: the uninterrupted run's numbers.
  assert resumed['mae'] == pytest.approx(
    [
      r
      for r in map(
        json.loads, open(os.path.join(tmp_path, 'straight', 'metrics.jsonl'), encoding='utf-8')
      )
    ][-1]['mae']
  )


def test_the_manifest_is_written_inside_the_commit(tiny_data_dir, tmp_path, monkeypatch):
  """Each step's manifest goes into orbax's temporary directory before the rename that commits the
  step, so a committed step always has one (the kills: tests/test_train_process_kills.py)."""
  written = []
  real = checkpoint_verification.write_manifest

  def recording(path, step, fingerprint):
    committed = os.path.exists(os.path.join(os.path.dirname(path), str(step)))
    written.append((os.path.basename(path), committed))
    real(path, step, fingerprint)

  monkeypatch.setattr(checkpoint_verification, 'write_manifest', recording)
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(_config(tiny_data_dir), workdir)  # Saves steps 2 and 4.
  assert written == [(f'2{checkpoints.TMP_SUFFIX}', False), (f'4{checkpoints.TMP_SUFFIX}', False)]
  for step in (2, 4):
    path = os.path.join(workdir, 'checkpoints', str(step))
    manifest, problem = checkpoint_verification.read_manifest(path)
    assert problem is None and checkpoint_verification.verify_files(path, manifest) is None


def test_refused_runs_change_no_file_and_name_the_fields(tiny_data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(_config(tiny_data_dir), workdir)
  before = _tree_hash(workdir)
  cases = [
    ({'seed': 1}, r'seed: 0 -> 1'),
    ({'model.lstm_units': 8}, r'model.lstm_units: 32 -> 8'),
    ({'model.conv_features': (16,)}, r'model.conv_features: \[64\] -> \[16\]'),
    ({'model.fusion': 'gated'}, r"model.fusion: 'concat' -> 'gated'"),
    ({'batch_size': 16}, r'batch_size: 8 -> 16'),
  ]
  for overrides, named in cases:
    with pytest.raises(CheckpointError, match=named) as error:
      train.train_and_evaluate(_config(tiny_data_dir, num_train_steps=8, **overrides), workdir)
    assert 'new --workdir' in str(error.value) and 'delete' not in str(error.value)
    assert _tree_hash(workdir) == before, overrides
  with pytest.raises(ConfigError, match='num_train_steps'):  # Invalid config: refused up front.
    train.train_and_evaluate(_config(tiny_data_dir, num_train_steps=-1), workdir)
  assert _tree_hash(workdir) == before

  # Every step damaged: the run stops, naming them, and still writes nothing.
  for step in (2, 4):
    manifest = os.path.join(workdir, 'checkpoints', str(step), checkpoint_verification.MANIFEST)
    with open(manifest, 'r+b') as f:
      f.truncate(40)
  before = _tree_hash(workdir)
  with pytest.raises(CheckpointError, match=r'No intact checkpoint .*\[4, 2\]'):
    train.train_and_evaluate(_config(tiny_data_dir, num_train_steps=8), workdir)
  assert _tree_hash(workdir) == before

  # Changing only what may change on resume is accepted.
  other = _config(tiny_data_dir, num_train_steps=6, eval_batch_size=8, log_every_steps=1)
  assert set(config_validation.fingerprint(other)) == set(
    config_validation.fingerprint(_config(tiny_data_dir))
  )
  assert not config_validation.fingerprint_diff(
    config_validation.fingerprint(_config(tiny_data_dir)), other
  )


def test_init_checkpoint_from_another_model_names_the_difference(tiny_data_dir, tmp_path):
  source = str(tmp_path / 'source')
  train.train_and_evaluate(_config(tiny_data_dir, num_train_steps=2), source)
  config = _config(tiny_data_dir, num_train_steps=2, init_checkpoint=source)
  config.model.lstm_units = 8
  with pytest.raises(CheckpointError, match=r'init_checkpoint: .* holds another model .*lstm'):
    train.train_and_evaluate(config, str(tmp_path / 'finetune'))
  assert not os.path.exists(tmp_path / 'finetune')  # Refused before anything was written.


def test_divergence_at_step_1_saves_nothing(tiny_data_dir, tmp_path):
  # Step 1's loss and gradient are finite (computed before the update), the update is not:
  # AdamW multiplies learning_rate * weight_decay = 1e76 -> inf into the parameters.
  config = _config(
    tiny_data_dir,
    learning_rate=1e38,
    weight_decay=1e38,
    checkpoint_every_steps=1,
    eval_every_steps=1,
    log_every_steps=1,
  )
  workdir = tmp_path / 'nan'
  with pytest.raises(TrainingError, match=r'at step 1; stopped without saving \(no checkpoint'):
    train.train_and_evaluate(config, str(workdir))
  steps = os.listdir(workdir / 'checkpoints') if os.path.exists(workdir / 'checkpoints') else []
  assert not [s for s in steps if s.isdigit()]


class _Preempted(Exception):
  pass


def _tensorboard_events(workdir) -> list:
  """Every Event of the run's TensorBoard files (TFRecord framing: length, crc, data, crc)."""
  import struct  # pylint: disable=g-import-not-at-top
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top

  events = []
  root = os.path.join(workdir, 'tensorboard')
  for name in sorted(os.listdir(root)):
    with open(os.path.join(root, name), 'rb') as f:
      data = f.read()
    offset = 0
    while offset + 12 <= len(data):
      (length,) = struct.unpack('<Q', data[offset : offset + 8])
      event = event_pb2.Event()
      event.ParseFromString(data[offset + 12 : offset + 12 + length])
      events.append(event)
      offset += 12 + length + 4
  return events


def test_metrics_have_one_record_per_step_and_split_after_resume(
  tiny_data_dir, tmp_path, monkeypatch
):
  config = _config(
    tiny_data_dir,
    num_train_steps=6,
    checkpoint_every_steps=3,
    eval_every_steps=3,
    log_every_steps=1,
  )
  real_iterator = train.pipeline.create_train_iterator

  def preempted_after_5_batches(*args, **kwargs):
    it = real_iterator(*args, **kwargs)
    base = type(it)

    class Interrupting(base):  # Dies fetching the 6th batch: steps 4 and 5 were logged, not saved.
      fetched = 0

      def __next__(self):
        type(self).fetched += 1
        if type(self).fetched > 5:
          raise _Preempted()
        return base.__next__(self)

    it.__class__ = Interrupting
    return it

  workdir = str(tmp_path / 'resumed')
  monkeypatch.setattr(train.pipeline, 'create_train_iterator', preempted_after_5_batches)
  with pytest.raises(_Preempted):
    train.train_and_evaluate(config, workdir)
  monkeypatch.setattr(train.pipeline, 'create_train_iterator', real_iterator)
  assert _steps(workdir) == [3]
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    assert max(json.loads(line)['step'] for line in f) == 5  # Logged past the checkpoint.
  train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    keys = [(r['step'], r['split']) for r in map(json.loads, f)]
  assert len(keys) == len(set(keys))
  assert sorted(keys) == sorted([(s, 'train') for s in range(1, 7)] + [(3, 'eval'), (6, 'eval')])
  # TensorBoard: the resumed writer starts with a purge of every event after step 3 (SessionLog
  # START at step 4), which is how TensorBoard drops the interrupted run's steps 4 and 5.
  events = _tensorboard_events(workdir)
  starts = [e.step for e in events if e.HasField('session_log') and e.session_log.status == 1]
  assert starts == [4]


_BAD = [
  ('eval_every_steps', 0),
  ('checkpoint_every_steps', 0),
  ('log_every_steps', 0),
  ('num_train_steps', -5),
  ('batch_size', 0),
  ('eval_batch_size', -8),
  ('keep_checkpoints', 0),
  ('learning_rate', float('inf')),
  ('learning_rate', float('nan')),
  ('learning_rate', -1.0),
  ('weight_decay', -0.1),
  ('grad_clip_norm', float('nan')),
  ('warmup_steps', -1),
  ('seed', -1),
  ('top_k', -2),
  ('lr_schedule', 'cosine'),
  ('model.dropout_rate', 1.5),
  ('model.dropout_rate', -0.1),
  ('model.fusion', 'sum'),
  ('model.branches', 'all'),
  ('model.dtype', 'float16'),
  ('model.lstm_units', 0),
  ('model.kernel_size', 0),
  ('model.fusion_dim', 0),
  ('model.conv_features', ('abc',)),
  ('model.conv_features', ()),
  ('model.window_shape', (24, 0, 5)),
  ('dataset.num_workers', -1),
]


@pytest.mark.parametrize('field,value', _BAD)
def test_validation_rejects_bad_fields_in_one_line(field, value):
  config = _config(None)
  with config.unlocked():
    *parents, leaf = field.split('.')
    target = config
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  with pytest.raises(ConfigError, match=rf'config\.{field}=') as error:
    config_validation.validate(config)
  assert '\n' not in str(error.value) and f'--config.{field}' in str(error.value)


def test_validation_accepts_the_shipped_configs_and_checks_warmup():
  for module in (video, text, sensor):
    for variant in ('', 'smoke'):
      config_validation.validate(module.get_config(variant))
  config = sensor.get_config('smoke')
  config.lr_schedule, config.warmup_steps = 'warmup_cosine', 4
  with pytest.raises(ConfigError, match='warmup_steps=4 must be < num_train_steps=4'):
    config_validation.validate(config)
  video_config = video.get_config()
  video_config.model.key_frame_index = 99
  with pytest.raises(ConfigError, match='key_frame_index=99'):
    config_validation.validate(video_config)


def test_every_config_field_either_defines_the_run_or_may_change_on_resume():
  """A new config field must be put in one list (config_validation.py), so resume stays safe."""
  may_change = set(config_validation.MAY_CHANGE_ON_RESUME)
  for module in (video, text, sensor):
    fields = config_validation.flatten(module.get_config())
    defining = set(config_validation.fingerprint(module.get_config()))
    for name in fields:
      assert (name in defining) != (name in may_change), name
  assert 'seed' in defining and 'model.lstm_units' in defining and 'task' in defining
  assert 'dataset.name' in defining and 'learning_rate' in defining


def test_metrics_have_one_record_per_step_and_split_after_kill_9(tiny_data_dir, tmp_path):
  """A real SIGKILL at whatever point the run has reached, then a resume through the CLI."""
  import signal  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top

  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  workdir = str(tmp_path / 'killed')
  args = [
    sys.executable,
    '-m',
    'hybrid_jax.main',
    '--config=configs/sensor.py:smoke',
    '--config.dataset.name=weather_stations/tiny',
    f'--config.dataset.data_dir={tiny_data_dir}',
    f'--workdir={workdir}',
    '--config.num_train_steps=300',
    '--config.log_every_steps=1',
    '--config.checkpoint_every_steps=7',
    '--config.eval_every_steps=50',
  ]
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=4')
  proc = subprocess.Popen(
    args, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  metrics = os.path.join(workdir, 'metrics.jsonl')
  deadline = time.time() + 300
  try:
    while proc.poll() is None and time.time() < deadline:  # Kill once step 10 is logged.
      if os.path.exists(metrics) and sum(1 for _ in open(metrics, encoding='utf-8')) >= 10:
        break
      time.sleep(0.05)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert proc.returncode == -signal.SIGKILL  # Killed mid-run (10 of 300 steps logged).
  resumed = subprocess.run(
    args, cwd=repo, env=env, capture_output=True, text=True, timeout=300, check=False
  )
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  with open(metrics, encoding='utf-8') as f:
    keys = [(r['step'], r['split']) for r in map(json.loads, f)]
  assert len(keys) == len(set(keys))
  assert sorted(keys) == sorted(
    [(s, 'train') for s in range(1, 301)] + [(s, 'eval') for s in range(50, 301, 50)]
  )
