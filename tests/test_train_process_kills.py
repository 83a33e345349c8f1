"""Multi-process runs that survive a lost process, and one data order for every process layout.

Two real processes x 2 CPU devices over gloo (tests/two_process_kills.py); one of them is
SIGKILLed before, during or right after a save, the other is then killed too, and both are
relaunched: the run resumes on its own (no manual move) and ends with the parameters and the
metrics.jsonl records of the uninterrupted two-process run, bit for bit. The same run in 1 process
x 4 devices trains on the same batches (one global data order). The whole kill matrix:
`python tests/two_process_kills.py <data_dir> <out_dir>`.
"""

import os

import numpy as np
import pytest

import two_process_kills as kills


@pytest.fixture(scope='module')
def uninterrupted(tiny_data_dir, tmp_path_factory):
  """The reference run, with process 1 late: it looks for checkpoints only once process 0 could
  have created their directory. Processes that read the file system at different moments must
  still agree that a fresh run has none (they used to diverge at orbax's first barrier)."""
  workdir = str(tmp_path_factory.mktemp('two_process') / 'uninterrupted')
  codes = kills.train_two_processes(tiny_data_dir, workdir, late_process_1=True)
  assert codes == [0, 0], _log(workdir, 'run')
  return workdir


def _log(workdir: str, kind: str) -> str:
  out = []
  for process in (0, 1):
    name = f'{workdir}.{kind}.{process}.log'
    if os.path.exists(name):
      with open(name, encoding='utf-8') as f:
        out.append(f.read()[-2000:])
  return '\n'.join(out)


@pytest.mark.parametrize(
  'kill,resumed_from',
  [
    # The case: process 1 dies right after the first save (step 3) committed, process 0
    # is lost too; the resume carries step 3's open metric window (records at 4 and 8).
    (kills.Kill(process=1, point='after', step=3), 3),
    # Process 0 dies inside the commit (all parts written, not renamed): step 6 never committed.
    (kills.Kill(process=0, point='during', step=6), 4),
    # Process 1 dies right after step 6 committed (the window holds steps 5 and 6).
    (kills.Kill(process=1, point='after', step=6), 6),
  ],
  ids=['p1-after-save-3', 'p0-during-commit-6', 'p1-after-save-6'],
)
def test_a_killed_process_resumes_bit_identical(
  kill, resumed_from, uninterrupted, tiny_data_dir, tmp_path
):
  workdir = str(tmp_path / 'killed')
  got = kills.kill_and_resume(tiny_data_dir, workdir, kill)
  assert -9 in got['killed'], _log(workdir, 'killed')  # Really killed, mid-run.
  assert got['resumed'] == [0, 0], _log(workdir, 'run')
  assert got['resume_line'].endswith(f'(step {resumed_from}).'), got
  assert kills.committed_steps(workdir)[-1] == 8
  assert not [n for n in os.listdir(os.path.join(workdir, 'checkpoints')) if 'tmp' in n]
  assert kills.final_params(workdir) == kills.final_params(uninterrupted)
  # Train records average the same steps as the uninterrupted run's (the window is checkpointed).
  assert kills.records(workdir) == kills.records(uninterrupted)


def test_one_process_and_two_processes_train_the_same_model(uninterrupted, tiny_data_dir, tmp_path):
  """2 processes x 2 devices and 1 process x 4 devices: the same batches on the same devices."""
  workdir = str(tmp_path / 'one_process')
  assert kills.train_one_process(tiny_data_dir, workdir, devices=4) == 0, _log(workdir, 'run')
  one, two = kills.final_params(workdir), kills.final_params(uninterrupted)
  assert one.keys() == two.keys()
  for name in one:
    a, b = (np.frombuffer(x[name], np.float32) for x in (one, two))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
  for mine, theirs in zip(kills.records(workdir), kills.records(uninterrupted), strict=True):
    assert mine.keys() == theirs.keys()
    for key, value in mine.items():
      if isinstance(value, float):
        assert value == pytest.approx(theirs[key], rel=1e-5), (mine['step'], key)
      else:
        assert value == theirs[key]


def test_train_records_after_a_kill_9_equal_the_uninterrupted_run(tiny_data_dir, tmp_path):
  """One process, a real SIGKILL right after the save of step 6 (records at 4 and 8)."""
  whole, killed = str(tmp_path / 'whole'), str(tmp_path / 'killed')
  assert kills.train_one_process(tiny_data_dir, whole, devices=2) == 0, _log(whole, 'run')
  kill = kills.Kill(process=0, point='after', step=6)
  assert kills.train_one_process(tiny_data_dir, killed, kill, devices=2) == -9
  assert kills.committed_steps(killed)[-1] == 6 and kills.records(killed)[-1]['step'] == 4
  assert kills.train_one_process(tiny_data_dir, killed, devices=2) == 0, _log(killed, 'run')
  assert kills.records(killed) == kills.records(whole)
  assert kills.final_params(killed) == kills.final_params(whole)
