"""A first run on a fresh machine is quiet: stderr holds only our own lines and progress bars.

The smoke config in a fresh TFDS data dir and a fresh workdir prepares its shipped dataset first
(the 'Preparing ...' / 'Prepared ...' lines and TFDS's progress bars), then trains and evaluates. No
absl warning (`W1125 12:00:00.000000 ... file.py:12] ...`), no Python warning and no traceback may
appear anywhere in its output.
"""

import os
import re

import cli_runner

# Everything stderr may hold, line by line (progress bars redraw with '\r', so split on it too).
ALLOWED_STDERR = (
  re.compile(r'Preparing \S+ into .+ \(first use, offline; later runs reuse it\)\.\.\.'),
  re.compile(r'Prepared \S+ in \d+s\.'),
  # A tqdm progress bar, ending in its time and rate: '...: 688 examples [00:01, 681.29 examples/s]',
  # '...:  33%|███▎      | 1/3 [00:16<00:33, 16.5s/ splits]'.
  re.compile(r'.*\[[\d:]+(<[\d:?]+)?, [^\]]*\]'),
)
ANSI_ESCAPE = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')
NOISE = re.compile(r'^[IWEF]\d{4} |Traceback|Warning:|WARNING', re.MULTILINE)


def _unexpected_stderr_lines(stderr: str) -> list[str]:
  lines = (ANSI_ESCAPE.sub('', line).strip() for line in re.split(r'[\r\n]', stderr))
  return [line for line in lines if line and not any(p.fullmatch(line) for p in ALLOWED_STDERR)]


def test_the_allowed_lines_are_the_projects_own_and_progress_bars():
  stderr = (
    'Preparing weather_stations/full/1.1.0 into /tmp/x (first use, offline; later runs reuse it)...\n'
    'Generating splits...:   0%|          | 0/3 [00:00<?, ? splits/s]\r'
    'Generating train examples...: 688 examples [00:01, 681.29 examples/s]\x1b[A\n'
    'Generating splits...:  33%|███▎      | 1/3 [00:16<00:33, 16.5s/ splits]\n'
    '                                        \x1b[A\n'
    'Prepared weather_stations/full/1.1.0 in 17s.\n'
  )
  assert _unexpected_stderr_lines(stderr) == []
  warning = (
    'W1125 17:00:27.665223 1399 file_utils.py:394] Variant folder /x has no dataset_info.json'
  )
  assert _unexpected_stderr_lines(f'{warning}\n{stderr}') == [warning]
  assert NOISE.search(warning) and not NOISE.search(stderr)


def test_first_smoke_run_in_a_fresh_data_dir_is_quiet(tmp_path):
  env = {**os.environ, 'TFDS_DATA_DIR': str(tmp_path / 'tensorflow_datasets')}
  done = cli_runner.run(
    [
      '-m',
      'hybrid_jax.main',
      '--config=configs/sensor.py:smoke',
      f'--workdir={tmp_path / "workdir"}',
    ],
    devices=1,
    env=env,
    timeout=600,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'Preparing ' in done.stderr and 'Prepared ' in done.stderr  # It was a first run.
  assert '[train] step' in done.stdout
  assert _unexpected_stderr_lines(done.stderr) == [], done.stderr[-3000:]
  assert not NOISE.search(done.stdout + done.stderr), done.stdout[-3000:]
