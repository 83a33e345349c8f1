"""What the user sees: progress lines, eval tables, TensorBoard events and a JSON-lines file.

Only process 0 writes anything (`MetricWriter(..., active=jax.process_index() == 0)`); other
processes get a writer that does nothing, so the train loop never branches on the process.
"""

import contextlib
import json
import math
import os
import sys
import time
from typing import Mapping, Optional, Sequence

from hybrid_jax import metrics as metrics_lib


class MetricWriter:
  """Writes scalars to `workdir/metrics.jsonl` and TensorBoard events in `workdir/tensorboard`.

  Each JSON line is `{"step": int, "split": "train"|"eval", <name>: value, ...}`; the eval lines
  also carry the confusion matrix (classification).

  Resuming: `resume_step` is the step the run continues from. Records after it were written by the
  interrupted run for steps that are now replayed, so they are dropped from metrics.jsonl, and
  TensorBoard is told to purge its events after it (`purge_step`): one record per (step, split).
  """

  def __init__(self, workdir: str, active: bool = True, resume_step: int = 0):
    self.active = active
    self._tb = None
    self._jsonl = None
    if not active:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, 'metrics.jsonl')
    if os.path.exists(path):
      _truncate_after(path, resume_step)
    self._jsonl = open(path, 'a', encoding='utf-8')
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

    tb_dir = os.path.join(workdir, 'tensorboard')
    purge = resume_step + 1 if os.path.isdir(tb_dir) else None  # Only when events exist.
    self._tb = SummaryWriter(tb_dir, flush_secs=30, purge_step=purge)

  def write(self, step: int, split: str, values: Mapping[str, object]) -> None:
    """Logs `values` at `step` under `split/`: scalars to TensorBoard, everything to JSON lines."""
    if not self.active:
      return
    for name, value in metrics_lib.scalars(values).items():
      self._tb.add_scalar(f'{split}/{name}', value, step)
    record = {'step': int(step), 'split': split, **values}
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    if 'confusion' in values:
      self._tb.add_text(f'{split}/confusion', format_confusion(values['confusion']), step)

  def write_hparams(self, hparams: Mapping[str, object], metric_tags: Sequence[str]) -> None:
    """Hyperparameters for TensorBoard's HParams dashboard, in the same event file as the metrics.

    Args:
      hparams: flat {name: bool | int | float | str} (see `flat_hparams`).
      metric_tags: scalar tags the dashboard shows beside them, e.g. ['eval/accuracy'].
    """
    if not self.active:
      return
    from tensorboardX import summary  # pylint: disable=g-import-not-at-top

    # The metric values come from the logged scalars.
    metrics = {tag: 0.0 for tag in metric_tags}
    experiment, session_start, session_end = summary.hparams(dict(hparams), metrics)
    for proto in (experiment, session_start, session_end):
      self._tb.file_writer.add_summary(proto)
    self._tb.flush()

  def close(self) -> None:
    if self.active:
      self._tb.close()
      self._jsonl.close()


def _truncate_after(path: str, step: int) -> None:
  """Drops the records of `path` (JSON lines) past `step`, and any line cut short by a kill."""
  with open(path, encoding='utf-8') as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      record = json.loads(line)
    except ValueError:
      continue  # A line half-written when the previous run was killed.
    if isinstance(record, dict) and isinstance(record.get('step'), int) and record['step'] <= step:
      kept.append(line if line.endswith('\n') else line + '\n')
  if kept != lines:
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
      f.writelines(kept)
    os.replace(tmp, path)


def flat_hparams(config: Mapping[str, object], prefix: str = '') -> dict[str, object]:
  """A nested config as flat {'model.lstm_units': 64, ...} with HParams-friendly values.

  bool, int, float and str stay as they are; None and sequences become their str().
  """
  out: dict[str, object] = {}
  for key, value in config.items():
    name = f'{prefix}{key}'
    if hasattr(value, 'items'):
      out.update(flat_hparams(value, f'{name}.'))
    elif isinstance(value, (bool, int, float, str)):
      out[name] = value
    else:
      out[name] = str(value)
  return out


class StepProfiler:
  """Captures a `jax.profiler` trace of `num_steps` train steps into `log_dir` (process 0).

  The trace starts at `first_step` (after compilation) and stops after its last step, once that
  step's results are ready; open it with TensorBoard's profile plugin or Perfetto
  (`<log_dir>/plugins/profile/<run>/*.trace.json.gz`).
  """

  def __init__(self, log_dir: str, num_steps: int, first_step: int, active: bool = True):
    self.log_dir = log_dir
    self.first_step = first_step
    self.last_step = first_step + num_steps - 1
    self.enabled = active and num_steps > 0
    self.tracing = False

  def step_context(self, step: int):
    """Context around dispatching train step `step` (1-based); starts the trace at the first."""
    import jax  # pylint: disable=g-import-not-at-top

    if self.enabled and step == self.first_step and not self.tracing:
      jax.profiler.start_trace(self.log_dir)
      self.tracing = True
    if self.tracing:
      return jax.profiler.StepTraceAnnotation('train', step_num=step)
    return contextlib.nullcontext()

  def after_step(self, step: int, outputs) -> None:
    """Stops the trace after the last traced step, when its outputs are computed."""
    if self.tracing and step >= self.last_step:
      self.stop(outputs)

  def stop(self, outputs=None) -> None:
    import jax  # pylint: disable=g-import-not-at-top

    if self.tracing:
      if outputs is not None:
        jax.block_until_ready(outputs)
      jax.profiler.stop_trace()
      self.tracing = False
      say(
        f'Wrote a profile of steps {self.first_step}-{self.last_step} to '
        f'{os.path.join(self.log_dir, "plugins", "profile")}.'
      )


class Progress:
  """Formats the periodic progress line: step, loss, steps/s, examples/s and ETA."""

  def __init__(
    self, total_steps: int, global_batch_size: int, start_step: int, active: bool = True
  ):
    self.total_steps = total_steps
    self.global_batch_size = global_batch_size
    self.active = active
    self._last_step = start_step
    self._last_time = time.perf_counter()

  def reset_clock(self, step: int) -> None:
    """Restarts the timer (after evaluation or checkpointing, so they do not count as training)."""
    self._last_step, self._last_time = step, time.perf_counter()

  def update(self, step: int, values: Mapping[str, float]) -> dict[str, float]:
    """Prints the line for `step` and returns the throughput numbers it used."""
    now = time.perf_counter()
    steps = step - self._last_step
    rates = {}
    if steps > 0:  # No steps since the clock started: only compilation happened, no rate yet.
      steps_per_sec = steps / max(now - self._last_time, 1e-9)
      rates = {
        'steps_per_sec': steps_per_sec,
        'examples_per_sec': steps_per_sec * self.global_batch_size,
      }
    self._last_step, self._last_time = step, now
    if self.active:
      width = len(str(self.total_steps))
      names = sorted((k for k in values if k != 'learning_rate'), key=lambda k: (k != 'loss', k))
      shown = ' | '.join(f'{k} {values[k]:.4f}' for k in names)
      speed = 'first step (compiling)'
      if rates:
        eta = (self.total_steps - step) / rates['steps_per_sec']
        speed = (
          f'{rates["steps_per_sec"]:.2f} steps/s | {rates["examples_per_sec"]:.0f} ex/s | '
          f'ETA {format_duration(eta)}'
        )
      print(f'[train] step {step:>{width}}/{self.total_steps} | {shown} | {speed}', flush=True)
    return rates


def format_duration(seconds: float) -> str:
  """'1h02m03s' / '2m03s' / '3s'."""
  if not math.isfinite(seconds):
    return '?'
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f'{hours}h{minutes:02d}m{secs:02d}s'
  return f'{minutes}m{secs:02d}s' if minutes else f'{secs}s'


def format_table(
  title: str, values: Mapping[str, object], baselines: Optional[Mapping[str, float]] = None
) -> str:
  """A small two-column table of scalar metrics (and the dataset's naive baselines, if given)."""
  rows = [(k, f'{v:.4f}') for k, v in metrics_lib.scalars(values).items()]
  if 'num_examples' in values:
    rows.append(('num_examples', str(values['num_examples'])))
  for k, v in (baselines or {}).items():
    rows.append((f'baseline: {k}', f'{v:.4f}'))
  width = max(len(k) for k, _ in rows)
  vwidth = max(len(v) for _, v in rows)
  rule = '+' + '-' * (width + 2) + '+' + '-' * (vwidth + 2) + '+'
  lines = [title, rule] + [f'| {k:<{width}} | {v:>{vwidth}} |' for k, v in rows] + [rule]
  return '\n'.join(lines)


def format_confusion(confusion: list[list[int]]) -> str:
  """Confusion matrix as text, rows = true class, columns = predicted class."""
  width = max(3, max(len(str(v)) for row in confusion for v in row))
  header = 'true\\pred ' + ' '.join(f'{j:>{width}}' for j in range(len(confusion)))
  rows = [f'{i:>9} ' + ' '.join(f'{v:>{width}}' for v in row) for i, row in enumerate(confusion)]
  return '\n'.join([header] + rows)


def say(message: str, active: bool = True) -> None:
  """Prints a user-facing line (process 0 only)."""
  if active:
    print(message, file=sys.stdout, flush=True)
