"""End to end through the command line, per config: train -> checkpoint -> --mode=eval.

`python -m hybrid_jax.main --config=configs/<task>.py:smoke` on the tiny data (4 fake CPU devices,
inherited from conftest.py), then `--mode=eval` in a fresh process must reproduce the in-training
eval metrics exactly; the sensor checkpoint is also evaluated by a process that has 1 device.
"""

import json
import os
import subprocess
import sys

import pytest
import cli_runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {
  'video': 'moving_digits/tiny',
  'text': 'bbc_news/tiny',
  'sensor': 'weather_stations/tiny',
  'japanese_vowels': 'japanese_vowels/tiny',
}


def _main(args: list[str], devices: int = 4) -> subprocess.CompletedProcess:
  return cli_runner.run(['-m', 'hybrid_jax.main', *args], devices=devices)


def _flags(task: str, data_dir: str, workdir: str) -> list[str]:
  return [
    f'--config=configs/{task}.py:smoke',
    f'--config.dataset.name={TINY[task]}',
    f'--config.dataset.data_dir={data_dir}',
    f'--workdir={workdir}',
  ]


def _eval_lines(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [r for r in map(json.loads, f) if r['split'] == 'eval']


@pytest.mark.parametrize('task', ['video', 'text', 'sensor', 'japanese_vowels'])
def test_train_then_eval_reproduces_metrics(task, tiny_data_dir, tmp_path):
  workdir = str(tmp_path / task)
  trained = _main(_flags(task, tiny_data_dir, workdir))
  assert trained.returncode == 0, trained.stderr[-3000:]
  assert '[train] step 4/4' in trained.stdout and 'steps/s' in trained.stdout
  assert 'ETA' in trained.stdout and '[final eval] step 4' in trained.stdout
  final = _eval_lines(workdir)[-1]
  assert final['step'] == 4
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')) if s.isdigit())
  assert steps == [2, 4]  # checkpoint_every_steps=2 in the smoke variant.
  assert os.listdir(os.path.join(workdir, 'tensorboard'))

  evaluated = _main(_flags(task, tiny_data_dir, workdir) + ['--mode=eval'])
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  with open(os.path.join(workdir, 'eval_validation_step_4.json'), encoding='utf-8') as f:
    restored = json.load(f)  # Training evaluates the validation split.
  for name, value in final.items():
    if name not in ('split', 'step'):
      assert restored[name] == value, name  # Bit-for-bit: same state, batches and devices.
  if task == 'sensor':
    assert {'mse', 'mae', 'mae_original_units'} <= set(restored)
  else:
    assert len(restored['confusion']) == restored['confusion'][0].__len__()
    assert sum(map(sum, restored['confusion'])) == restored['num_examples']
    if task == 'video':  # 20 classes > top_k=5.
      assert restored['top_5_accuracy'] >= restored['accuracy']

  if task == 'sensor':  # Saved with 4 devices, restored by a process that only has 1.
    one = _main(_flags(task, tiny_data_dir, workdir) + ['--mode=eval', '--checkpoint=2'], devices=1)
    assert one.returncode == 0, one.stderr[-3000:]
    assert '1 device(s)' in one.stdout
    with open(os.path.join(workdir, 'eval_validation_step_2.json'), encoding='utf-8') as f:
      at_2 = json.load(f)
    assert at_2['step'] == 2 and at_2['num_examples'] == final['num_examples']

  if task == 'japanese_vowels':  # Sensor classification: test is reported once, on request.
    assert restored['num_examples'] == 9 and len(restored['confusion']) == 9  # 1 per speaker.
    tested = _main(
      _flags(task, tiny_data_dir, workdir) + ['--mode=eval', '--checkpoint=best', '--split=test']
    )
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert '[eval] test split' in tested.stdout
    steps = [
      int(n.split('_')[-1][:-5]) for n in os.listdir(workdir) if n.startswith('eval_test_step_')
    ]
    assert len(steps) == 1 and steps[0] in (2, 4)
    refused = _main(_flags(task, tiny_data_dir, workdir) + ['--split=test'])
    assert refused.returncode != 0 and 'Traceback' not in refused.stderr
    assert (
      refused.stderr.strip().splitlines()[-1].startswith('error: --split applies to --mode=eval')
    )


def test_cli_errors_are_one_line(tiny_data_dir, tmp_path):
  """Bad batch size and a missing checkpoint end with one line that names the numbers / the fix."""
  workdir = str(tmp_path / 'none')
  bad = _main(_flags('sensor', tiny_data_dir, workdir) + ['--config.batch_size=6'])
  assert bad.returncode != 0
  last = bad.stderr.strip().splitlines()[-1]
  assert last.startswith('error:') and 'batch_size=6' in last and '4 devices' in last, last
  assert 'Traceback' not in bad.stderr

  missing = _main(_flags('sensor', tiny_data_dir, workdir) + ['--mode=eval'])
  assert missing.returncode != 0
  last = missing.stderr.strip().splitlines()[-1]
  assert last.startswith('error:') and 'train first' in last, last
  assert 'Traceback' not in missing.stderr


def test_two_processes_train_and_one_process_evaluates(tiny_data_dir, tmp_path):
  """Multi-host for real: 2 processes x 2 CPU devices over gloo, then 1 process x 4 devices.

  Every eval batch of the 2-process run is a cross-process collective (eval_batch_size=4: one
  example per device); before eval steps were run one at a time this hung in about half the runs.
  """
  import socket  # pylint: disable=g-import-not-at-top

  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  workdir = str(tmp_path / 'multi')
  procs = []
  for process_id in range(2):
    env = dict(
      os.environ,
      JAX_PLATFORMS='cpu',
      XLA_FLAGS='--xla_force_host_platform_device_count=2',
      JAX_COORDINATOR_ADDRESS=f'localhost:{port}',
      JAX_NUM_PROCESSES='2',
      JAX_PROCESS_ID=str(process_id),
    )
    procs.append(
      subprocess.Popen(
        [
          sys.executable,
          '-m',
          'hybrid_jax.main',
          *_flags('sensor', tiny_data_dir, workdir),
          '--config.eval_batch_size=4',
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
      )
    )
  try:
    outs = [p.communicate(timeout=400) for p in procs]
  finally:
    for p in procs:  # A hang fails the test instead of leaving processes behind.
      p.kill()
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert '4 device(s)' in outs[0][0] and '2 process(es)' in outs[0][0]
  assert '[final eval]' in outs[0][0] and '[train]' not in outs[1][0]  # Only process 0 reports.
  data_dir = os.path.join(workdir, 'checkpoints', '4', 'data')
  assert sorted(f for f in os.listdir(data_dir) if f.endswith('.json')) == [
    'process_0-of-2.json',
    'process_1-of-2.json',
  ]  # Each process's iterator position.
  final = _eval_lines(workdir)[-1]
  one = _main(_flags('sensor', tiny_data_dir, workdir) + ['--mode=eval'], devices=4)
  assert one.returncode == 0, one.stderr[-3000:]
  assert '4 device(s)' in one.stdout and '1 process(es)' in one.stdout
  with open(os.path.join(workdir, 'eval_validation_step_4.json'), encoding='utf-8') as f:
    restored = json.load(f)  # Training evaluates the validation split.
  assert restored['num_examples'] == final['num_examples']
  assert restored['mae'] == pytest.approx(final['mae'], rel=1e-5)  # 2x2 and 1x4: same numbers.
  # Training on needs each process's data position: another process count is refused, in one line.
  resumed = _main(_flags('sensor', tiny_data_dir, workdir) + ['--config.num_train_steps=6'])
  assert resumed.returncode != 0
  assert resumed.stderr.strip().splitlines()[-1].startswith('error:')
  assert 'saved by 2 process(es)' in resumed.stderr and 'Traceback' not in resumed.stderr
