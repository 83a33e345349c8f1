"""A study's progress before its reports exist: what it will train, and the runs already finished
(`python -m experiments.study --plan`; printed before every study)."""

import os
from typing import Sequence

import numpy as np

from experiments.study import arms as study_arms
from experiments.study import protocol as study_protocol
from experiments.study import runs as study_runs


def plan(protocol: study_protocol.Protocol) -> str:
  """What the protocol will train, per dataset: runs per arm and how many are already finished."""
  lines = []
  for dataset in protocol.datasets:
    spec = study_protocol.dataset_spec(dataset, protocol)
    config = study_protocol.task_config(dataset, protocol.config_variant, protocol)
    seeds = list(protocol.seeds if protocol.seeds is not None else range(spec.seeds))
    lrs = protocol.lrs or spec.lrs
    k = min(len(seeds), protocol.selection_seeds or spec.selection_seeds or len(seeds))
    trained = [a for a in (protocol.arms or spec.arms) if study_arms.ARMS[a].trained]
    per_arm = len(lrs) * k + len(seeds) - k
    steps = study_protocol.run_length(dataset, protocol, config)
    finished = _finished_runs(protocol, dataset, trained)
    done = sum(len(runs) for by_rate in finished.values() for runs in by_rate.values())
    lines.append(
      f'{dataset}: {len(trained)} trained arms x {per_arm} runs ({len(lrs)} rates x {k} '
      f'selection seeds + {len(seeds) - k} more seeds) = {len(trained) * per_arm} runs '
      f'of {steps} steps; {done} finished. Arms: {", ".join(trained)}.'
    )
    if done:
      lines += finished_table(finished, steps)
  return '\n'.join(lines)


def _finished_runs(
  protocol: study_protocol.Protocol, dataset: str, arms: Sequence[str]
) -> dict[str, dict[float, list[tuple[dict, bool]]]]:
  """{arm: {rate: [(result.json, tested?)]}} of the runs of `dataset` that have a result.json."""
  out: dict[str, dict[float, list[tuple[dict, bool]]]] = {}
  for arm in arms:
    arm_dir = os.path.join(protocol.study_dir, dataset, arm)
    for name in sorted(os.listdir(arm_dir)) if os.path.isdir(arm_dir) else []:
      result = study_runs.read_json(os.path.join(arm_dir, name, 'result.json'))
      if result is not None and name.startswith('lr') and '_seed' in name:  # run_dir's names.
        tested = os.path.exists(os.path.join(arm_dir, name, 'test.json'))
        lr = float(name[2:].split('_seed')[0])
        out.setdefault(arm, {}).setdefault(lr, []).append((result, tested))
  return out


def finished_table(
  finished: dict[str, dict[float, list[tuple[dict, bool]]]], steps: int
) -> list[str]:
  """A markdown table of finished runs (`_finished_runs`) per arm and rate: their best validation
  metric (mean, min, max over seeds), how many kept their last step (`steps`: still improving when
  the run ended), diverged and tested. A study's progress before its report exists."""
  lines = [
    '',
    '| arm | rate | finished | best validation: mean | min | max | best at the last step | '
    'diverged | tested |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for arm, by_rate in finished.items():
    for lr, done in sorted(by_rate.items()):
      values = [r['val_best'] for r, _ in done if r['val_best'] is not None]
      stats = (
        f'{np.mean(values):.4f} | {min(values):.4f} | {max(values):.4f}' if values else '– | – | –'
      )
      lines.append(
        f'| {arm} | {lr:g} | {len(done)} | {stats} | '
        f'{sum(r["best_step"] == steps for r, _ in done)} | {len(done) - len(values)} | '
        f'{sum(t for _, t in done)} |'
      )
  return lines + ['']
