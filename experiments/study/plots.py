"""The study's plots (matplotlib, imported only when one is drawn): forests of the paired
differences and validation curves, each saved at the path the report gives.

  plots.forest(summary, path)                  # concat − arm, 95% CIs, the ±margin band shaded
  plots.validation_curves(summary, path)       # validation metric against step, per arm
  plots.summary_forest(summaries, path)        # one panel per dataset: the primary comparisons
"""

from typing import Optional, Sequence

import numpy as np

from experiments.study import arms as study_arms


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  return plt


def _draw_forest(ax, rows: Sequence[dict], margin: float, legend: bool) -> None:
  """concat − arm rows (mean, 95% CI) on `ax`, top to bottom, the ±margin band shaded."""
  y = np.arange(len(rows))[::-1]
  ax.axvspan(-margin, margin, color='0.9', label=f'equivalence margin ±{margin:g}')
  ax.axvline(0, color='0.4', lw=1)
  for primary, marker, label in ((True, 'o', 'primary comparison'), (False, 's', 'other')):
    idx = [i for i, r in enumerate(rows) if r['primary'] == primary]
    if idx:
      ax.errorbar(
        [rows[i]['mean'] for i in idx],
        y[idx],
        fmt=marker,
        capsize=3,
        color='C0' if primary else 'C7',
        label=label,
        xerr=[
          [rows[i]['mean'] - rows[i]['low'] for i in idx],
          [rows[i]['high'] - rows[i]['mean'] for i in idx],
        ],
      )
  ax.set_yticks(y, [r['label'] for r in rows], fontsize=8)
  if legend:
    ax.legend(loc='best', fontsize=7)


def forest(summary: dict, path: str) -> Optional[str]:
  """Forest plot of concat − arm with 95% CIs, the ±margin band shaded, saved at `path` (returned;
  None without comparisons)."""
  rows = summary['analysis']['comparisons']
  if not rows:
    return None
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.6))
  _draw_forest(ax, rows, summary['margin'], legend=True)
  ax.set_xlabel(
    f'concat − arm, test {summary["metric"]} (> 0: concat better), 95% CI over '
    f'{len(summary["seeds"])} seeds'
  )
  ax.set_title(f'{summary["dataset"]}: concat {summary["analysis"]["verdict"]}', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def validation_curves(summary: dict, path: str) -> str:
  """Validation metric against step per arm (mean over seeds at the chosen learning rate), saved at
  `path` (returned)."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(7, 4))
  for i, (arm, curves) in enumerate(summary['val_curves'].items()):
    steps = sorted(
      set.intersection(*[{s for s, _ in c} for c in curves if c]) if any(curves) else set()
    )
    if not steps:
      continue
    values = np.array([[dict(c)[s] for s in steps] for c in curves if c])
    ax.plot(
      steps,
      values.mean(0),
      label=f'{study_arms.ARMS[arm].label} (lr {summary["chosen_lr"][arm]:g})',
      color=f'C{i % 10}',
      ls='-' if i < 10 else '--',
    )
  ax.set_xlabel('step')
  ax.set_ylabel(f'validation {summary["metric"]} (mean over seeds)')
  ax.set_title(f'{summary["dataset"]}: validation curves', fontsize=10)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def summary_forest(summaries: Sequence[dict], path: str) -> Optional[str]:
  """One panel per dataset: the primary comparisons (concat − best single, − late ensemble, −
  widened best) with 95% CIs in the dataset's own units, > 0 meaning concat is better; saved at
  `path` (returned; None without comparisons)."""
  panels = [(s, [r for r in s['analysis']['comparisons'] if r['primary']]) for s in summaries]
  panels = [(s, rows) for s, rows in panels if rows]
  if not panels:
    return None
  plt = _pyplot()
  height = max(len(rows) for _, rows in panels) * 0.35 + 1.0
  fig, axes = plt.subplots(len(panels), 1, figsize=(8, height * len(panels)), squeeze=False)
  for ax, (s, rows) in zip(axes[:, 0], panels):
    _draw_forest(ax, rows, s['margin'], legend=False)
    ax.set_title(
      f'{s["dataset"]} ({s["metric"]}, {len(s["seeds"])} seeds, margin ±{s["margin"]:g}): '
      f'concat {s["analysis"]["verdict"].split(" (")[0]}',
      fontsize=9,
    )
  axes[-1, 0].set_xlabel('concat − arm on test, 95% CI over seeds (> 0: concat better)')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
