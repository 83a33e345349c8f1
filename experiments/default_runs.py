"""The default runs: each shipped config trained with its exact default command, then tested once.

  python -m experiments.default_runs                        # all four, ~8 min on a 2-core CPU
  python -m experiments.default_runs --configs=sensor,text  # some of them

For each config: `python -m hybrid_jax.main --config=configs/<name>.py` in a fresh workdir (timed:
the whole command, start-up and evaluations included), then `--mode=eval --split=test` on the
checkpoint kept by the validation metric (`--checkpoint=best`) and on the last step
(`--checkpoint=latest`). Writes experiments/results/default_runs.md with the commands, the
versions and the machine. A finished config is reused (its workdir holds `default_run.json`); an
interrupted one is trained again from scratch so that its wall time is one uninterrupted command.
"""

import json
import os
import platform
import shutil
import subprocess
import sys
import time

from absl import app
from absl import flags

from hybrid_jax import fileio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ('japanese_vowels', 'sensor', 'text', 'video')

_CONFIGS = flags.DEFINE_list('configs', list(CONFIGS), 'Configs in configs/ to run.')
_ROOT = flags.DEFINE_string('workdir_root', 'workdirs/default_runs', 'One workdir per config.')
_OUT = flags.DEFINE_string(
  'out', os.path.join(ROOT, 'experiments', 'results', 'default_runs.md'), 'The results file.'
)


def _run(args: list[str]) -> float:
  """Runs `python ARGS` in the repository root; returns its wall time in seconds."""
  start = time.perf_counter()
  done = subprocess.run([sys.executable, *args], cwd=ROOT, check=False)
  if done.returncode:
    raise SystemExit(f'error: `python {" ".join(args)}` failed (exit {done.returncode}).')
  return time.perf_counter() - start


def run_config(name: str, root: str) -> dict:
  """Trains and tests one config (or reuses a finished run); returns its record."""
  workdir = os.path.abspath(os.path.join(root, name))
  record_path = os.path.join(workdir, 'default_run.json')
  if os.path.exists(record_path):
    with open(record_path, encoding='utf-8') as f:
      return json.load(f)
  if os.path.exists(workdir):
    shutil.rmtree(workdir)  # An interrupted earlier attempt: its time would not be one command.
  train = ['-m', 'hybrid_jax.main', f'--config=configs/{name}.py']
  seconds = _run(train + [f'--workdir={workdir}'])
  tested = {}
  for checkpoint in ('best', 'latest'):
    _run(
      train + [f'--workdir={workdir}', '--mode=eval', f'--checkpoint={checkpoint}', '--split=test']
    )
    written = max(
      (os.path.join(workdir, n) for n in os.listdir(workdir) if n.startswith('eval_test_step_')),
      key=os.path.getmtime,
    )
    with open(written, encoding='utf-8') as f:
      tested[checkpoint] = json.load(f)
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    evals = {r['step']: r for r in map(json.loads, f) if r['split'] == 'eval'}
  record = {
    'config': name,
    'command': 'python ' + ' '.join(train),
    'seconds': seconds,
    'test_best': tested['best'],
    'test_latest': tested['latest'],
    'validation_at_best': evals[tested['best']['step']],
  }
  fileio.write_json(record_path, record)
  return record


def _metric(record: dict) -> tuple[str, str]:
  """(metric name, unit text) of a record: accuracy, or MAE in original units."""
  if 'accuracy' in record['test_best']:
    return 'accuracy', ''
  return 'mae_original_units', ' °F'


def write_report(records: list[dict], path: str, command: str) -> None:
  import jax  # pylint: disable=g-import-not-at-top  (after the subprocesses: versions only)

  versions = {'python': platform.python_version(), 'jax': jax.__version__}
  for name in ('jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy'):
    try:
      from importlib import metadata  # pylint: disable=g-import-not-at-top

      versions[name] = metadata.version(name)
    except Exception:  # pylint: disable=broad-except
      versions[name] = 'unknown'
  lines = [
    '# Default runs',
    '',
    f'Command: `{command}` ({time.strftime("%Y-%m-%d", time.gmtime())}; '
    f'{platform.machine()}, {os.cpu_count()} CPU cores, 1 CPU device).',
    'Versions: ' + ', '.join(f'{k} {v}' for k, v in versions.items()) + '.',
    'Machine load (1, 5, 15-min averages) when this file was written: '
    + ', '.join(f'{x:.1f}' for x in os.getloadavg())
    + ': above the 2 cores, other jobs shared them and the wall times are longer than on a quiet '
    'machine.',
    '',
    'Each row: the train command in a fresh workdir (wall time: the whole command), then',
    '`--mode=eval --split=test` with `--checkpoint=best` (kept by the validation metric) and',
    '`--checkpoint=latest`.',
    '',
    '| config | train command | test, best on validation | test, final step | '
    'validation at best | naive baselines (test) | wall time |',
    '|---|---|---|---|---|---|---|',
  ]
  for r in records:
    metric, unit = _metric(r)
    best, latest, val = r['test_best'], r['test_latest'], r['validation_at_best']
    baselines = ', '.join(f'{k} {v:.3f}' for k, v in best.get('baselines', {}).items())
    lines.append(
      f'| {r["config"]} | `{r["command"]}` | {metric} **{best[metric]:.3f}**{unit} '
      f'(step {best["step"]}) | {latest[metric]:.3f}{unit} (step {latest["step"]}) | '
      f'{val[metric]:.3f}{unit} | {baselines or "see docs/data.md"} | {r["seconds"]:.0f} s |'
    )
  fileio.write_text(path, '\n'.join(lines) + '\n')


def main(argv):
  del argv
  unknown = [c for c in _CONFIGS.value if c not in CONFIGS]
  if unknown:
    raise SystemExit(f'error: unknown --configs {unknown}: use any of {list(CONFIGS)}.')
  records = [run_config(name, _ROOT.value) for name in _CONFIGS.value]
  command = 'python -m experiments.default_runs' + (
    f' --configs={",".join(_CONFIGS.value)}' if list(_CONFIGS.value) != list(CONFIGS) else ''
  )
  write_report(records, _OUT.value, command)
  print(f'Wrote {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
