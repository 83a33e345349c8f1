"""Two real processes x 2 CPU devices over gloo, one of them SIGKILLed at a save, then relaunched.

  workdir = train_two_processes(data_dir, workdir, kill=Kill(process=1, point='after', step=6))
  train_two_processes(data_dir, workdir)              # the relaunch: resumes and finishes
  final_params(workdir), records(workdir)              # compared with an uninterrupted run

Kill points (`Kill.point`), at the save of `Kill.step`:
  before  the process dies right before it starts the save (the state of the step is computed);
  during  process 0: inside the commit, after every process wrote its part and before orbax's
          rename; process 1: right after it started the save, its writes in flight;
  after   right after the save committed (`wait_until_finished` returned on that process).
The surviving process is SIGKILLed once the other is dead (on a cluster JAX's coordination service
aborts it; the files on disk are the same or fewer). Each process runs this file as a script, which
installs the kill and then runs `hybrid_jax.main` exactly as `python -m hybrid_jax.main` does.

python tests/two_process_kills.py <data_dir> <out_dir>   # the whole kill matrix, as a table
"""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the runs train: saves at 3, 4 (the eval), 6 and 8 (the end); train records at 4 and 8, so a
# resume from 3 or 6 must carry the open metric window; evals at 4 and 8.
FLAGS = [
  '--config=configs/sensor.py:smoke',
  '--config.dataset.name=weather_stations/tiny',
  '--config.num_train_steps=8',
  '--config.checkpoint_every_steps=3',
  '--config.log_every_steps=4',
  '--config.eval_every_steps=4',
]
POINTS = ('before', 'during', 'after')
_KILL_ENV = 'HYBRID_JAX_TEST_KILL'  # "<process>:<point>:<step>", read by this file as a script.
# Set (train_two_processes(..., late_process_1=True)): process 1 looks for checkpoints only once
# process 0 has created the run's checkpoint directory (or LATE_S seconds have passed), the order a
# loaded machine can produce. With the processes agreeing first (checkpoints.restore_latest),
# process 0 waits for process 1 and the wait always runs its LATE_S.
_LATE_ENV = 'HYBRID_JAX_TEST_LATE_PROCESS_1'
LATE_S = 10.0


@dataclasses.dataclass(frozen=True)
class Kill:
  process: int
  point: str
  step: int


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def train_two_processes(
  data_dir: str,
  workdir: str,
  kill: Optional[Kill] = None,
  timeout: float = 400,
  late_process_1: bool = False,
) -> list[Optional[int]]:
  """Runs (or resumes) the two-process run; returns the exit codes (None: killed by us)."""
  port = _free_port()
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
    env.pop(_KILL_ENV, None)
    env.pop(_LATE_ENV, None)
    if late_process_1:
      env[_LATE_ENV] = '1'
    if kill is not None:
      env[_KILL_ENV] = f'{kill.process}:{kill.point}:{kill.step}'
    log = open(f'{workdir}.{"killed" if kill else "run"}.{process_id}.log', 'a', encoding='utf-8')
    procs.append(
      subprocess.Popen(
        [
          sys.executable,
          os.path.abspath(__file__),
          *FLAGS,
          f'--config.dataset.data_dir={data_dir}',
          f'--workdir={workdir}',
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
      )
    )
  deadline = time.time() + timeout
  try:
    while time.time() < deadline and all(p.poll() is None for p in procs):
      time.sleep(0.05)
    if kill is not None:  # One is dead: the other would be aborted by the coordination service.
      for p in procs:
        if p.poll() is None:
          p.send_signal(signal.SIGKILL)
    while time.time() < deadline and any(p.poll() is None for p in procs):
      time.sleep(0.05)
  finally:
    for p in procs:  # A hang fails the caller's check instead of leaving processes behind.
      if p.poll() is None:
        p.kill()
      p.wait()
  return [p.returncode for p in procs]


def train_one_process(
  data_dir: str, workdir: str, kill: Optional[Kill] = None, devices: int = 4, timeout: float = 400
) -> Optional[int]:
  """The same run in one process on `devices` CPU devices (optionally killed); its exit code."""
  env = dict(
    os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}'
  )
  for name in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID', _KILL_ENV):
    env.pop(name, None)
  if kill is not None:
    env[_KILL_ENV] = f'{kill.process}:{kill.point}:{kill.step}'
  with open(f'{workdir}.{"killed" if kill else "run"}.0.log', 'a', encoding='utf-8') as log:
    done = subprocess.run(
      [
        sys.executable,
        os.path.abspath(__file__),
        *FLAGS,
        f'--config.dataset.data_dir={data_dir}',
        f'--workdir={workdir}',
      ],
      cwd=REPO,
      env=env,
      stdout=log,
      stderr=subprocess.STDOUT,
      timeout=timeout,
      check=False,
    )
  return done.returncode


def committed_steps(workdir: str) -> list[int]:
  root = os.path.join(workdir, 'checkpoints')
  return sorted(int(s) for s in os.listdir(root) if s.isdigit()) if os.path.isdir(root) else []


def final_params(workdir: str) -> dict[str, bytes]:
  """{parameter path: raw bytes} of the newest checkpoint's parameters, read as numpy."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  path = os.path.join(workdir, 'checkpoints', str(committed_steps(workdir)[-1]), 'state')
  with ocp.PyTreeCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(path).item_metadata.tree
    restore_args = {
      'params': _map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata['params'])
    }
    restored = checkpointer.restore(
      path,
      args=ocp.args.PyTreeRestore(
        item={'params': metadata['params']}, restore_args=restore_args, partial_restore=True
      ),
    )
  flat = {}
  _flatten(restored['params'], '', flat)
  return {k: np.asarray(v).tobytes() for k, v in flat.items()}


def _map(fn, tree):
  return {k: _map(fn, v) for k, v in tree.items()} if isinstance(tree, dict) else fn(tree)


def _flatten(tree, prefix, out):
  if isinstance(tree, dict):
    for k, v in tree.items():
      _flatten(v, f'{prefix}/{k}', out)
  else:
    out[prefix] = tree


def records(workdir: str) -> list[dict]:
  """metrics.jsonl without the timing fields (steps/s, examples/s), in file order."""
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    out = [json.loads(line) for line in f]
  for r in out:
    r.pop('steps_per_sec', None)
    r.pop('examples_per_sec', None)
  return out


def kill_and_resume(data_dir: str, workdir: str, kill: Kill) -> dict[str, object]:
  """Kills, relaunches; returns what happened (codes, steps on disk, resumed-from line)."""
  killed = train_two_processes(data_dir, workdir, kill)
  on_disk = committed_steps(workdir)
  resumed = train_two_processes(data_dir, workdir)
  with open(f'{workdir}.run.0.log', encoding='utf-8') as f:
    log = f.read()
  line = next((l for l in log.splitlines() if l.startswith('Resumed from')), 'from scratch')
  return {'killed': killed, 'steps_after_kill': on_disk, 'resumed': resumed, 'resume_line': line}


def _install_kill(spec: str) -> None:
  """In a worker process: SIGKILL this process at the given point of the given step's save."""
  import jax  # pylint: disable=g-import-not-at-top

  from hybrid_jax import checkpoint_verification  # pylint: disable=g-import-not-at-top
  from hybrid_jax import checkpoints  # pylint: disable=g-import-not-at-top

  process, point, step = spec.split(':')
  process, step = int(process), int(step)
  save, write_manifest = checkpoints.save, checkpoint_verification.write_manifest

  def die():
    os.kill(os.getpid(), signal.SIGKILL)

  def killing_save(manager, at_step, *args, **kwargs):
    mine = jax.process_index() == process and at_step == step
    if mine and point == 'before':
      die()
    started = save(manager, at_step, *args, **kwargs)
    if mine and point == 'during' and process == 1:
      die()
    if mine and point == 'after':
      manager.wait_until_finished()
      die()
    return started

  def killing_write_manifest(path, at_step, *args, **kwargs):
    if process == 0 and point == 'during' and at_step == step:
      die()
    return write_manifest(path, at_step, *args, **kwargs)

  checkpoints.save = killing_save
  checkpoint_verification.write_manifest = killing_write_manifest


def _install_late_process_1() -> None:
  """In a worker process: process 1 looks for checkpoints after process 0 created their directory."""
  import jax  # pylint: disable=g-import-not-at-top

  from hybrid_jax import checkpoints  # pylint: disable=g-import-not-at-top

  restore_latest = checkpoints.restore_latest

  def late_restore_latest(workdir, *args, **kwargs):
    deadline = time.time() + LATE_S
    if jax.process_index() == 1:
      while time.time() < deadline and not os.path.isdir(checkpoints.checkpoint_dir(workdir)):
        time.sleep(0.05)
    return restore_latest(workdir, *args, **kwargs)

  checkpoints.restore_latest = late_restore_latest


def _matrix(data_dir: str, out: str) -> None:
  import shutil  # pylint: disable=g-import-not-at-top

  shutil.rmtree(out, ignore_errors=True)
  os.makedirs(out)
  baseline = os.path.join(out, 'uninterrupted')
  train_two_processes(data_dir, baseline)
  want_params, want_records = final_params(baseline), records(baseline)
  print(
    '| killed | at the save of step | point | steps on disk after the kill | resumed from |'
    ' finished | params bit-identical | metrics.jsonl identical |'
  )
  print('|---|---|---|---|---|---|---|---|')
  for step in (3, 6):
    for process in (0, 1):
      for point in POINTS:
        workdir = os.path.join(out, f'p{process}_{point}_{step}')
        got = kill_and_resume(data_dir, workdir, Kill(process, point, step))
        same_params = final_params(workdir) == want_params if committed_steps(workdir) else False
        same_records = records(workdir) == want_records
        resumed = (
          got['resume_line'].split('(')[-1].rstrip(').')
          if 'Resumed' in got['resume_line']
          else 'scratch'
        )
        print(
          f'| process {process} | {step} | {point} | {got["steps_after_kill"]} | {resumed} | '
          f'{"yes" if got["resumed"] == [0, 0] else got["resumed"]} | '
          f'{"yes" if same_params else "NO"} | {"yes" if same_records else "NO"} |',
          flush=True,
        )


if __name__ == '__main__':
  if os.environ.get(_KILL_ENV) or sys.argv[1:2] and sys.argv[1].startswith('--'):
    # A worker: `python -m hybrid_jax.main FLAGS`, with the kill installed.
    sys.path.insert(0, REPO)
    from hybrid_jax import main  # pylint: disable=g-import-not-at-top
    from hybrid_jax import cli  # pylint: disable=g-import-not-at-top

    if os.environ.get(_KILL_ENV):
      _install_kill(os.environ[_KILL_ENV])
    if os.environ.get(_LATE_ENV):
      _install_late_process_1()
    cli.run(main.main)
  else:
    _matrix(sys.argv[1], sys.argv[2])
