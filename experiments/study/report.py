"""The study's analysis, markdown reports and plots (matplotlib is imported only to draw).

analysis = analyse(summary)                              # statistics + verdict of one dataset
write_dataset_report(summary, results_dir, provenance)   # study_<dataset>.md + 2 PNGs
write_summary(summaries, results_dir, provenance)        # study_summary.md
"""

import os
from typing import Optional, Sequence

import numpy as np

from experiments.study import arms as study_arms
from experiments.study import stats as study_stats
from hybrid_jax import fileio

ALPHA = 0.05
DECISION_RULE = """\
Decision rule (declared before any study result was seen). Let B be the better single branch
(cnn only or lstm only) by mean validation metric at its chosen learning rate, and
d = concat - B on test, per seed (oriented so that d > 0 means concat is better), with its 95%
bootstrap CI over seeds and its Holm-adjusted exact sign-flip p-value (Holm over every comparison
reported for the dataset). delta is the dataset's equivalence margin (in the metric's units).
- **helps**: Holm p < 0.05 and the CI lies above 0. It helps *beyond capacity and ensembling* when,
  in addition, concat - late ensemble and concat - widened B also have Holm p < 0.05 and CIs above
  0; otherwise the verdict names the control that does as well.
- **hurts**: Holm p < 0.05 and the CI lies below 0.
- **redundant**: not significant, and the CI lies within [-delta, +delta] (equivalent within delta).
- **inconclusive**: not significant, and the CI reaches beyond +-delta (more seeds are needed).
With n seeds the smallest two-sided exact sign-flip p-value is 2 / 2^n, so with m comparisons
significance needs m * 2 / 2^n < 0.05 (the report prints this floor)."""


def _fmt(value: float, lower_digits: int = 4) -> str:
  return f'{value:.{lower_digits}f}'


def comparisons(summary: dict) -> tuple[Optional[str], list[tuple[str, str, bool]]]:
  """(best single branch, [(label, other arm, primary?)]) for the arms the dataset ran."""
  arms, lower = summary['arms'], summary['lower_is_better']
  singles = [a for a in ('cnn', 'lstm') if a in arms]
  chosen = summary['chosen_lr']
  val = lambda a: summary['val_means'][f'{a}@{chosen[a]:g}']  # pylint: disable=unnecessary-lambda-assignment
  if not singles or 'concat' not in arms:
    return None, []
  best = (min if lower else max)(singles, key=val)
  other = [a for a in singles if a != best]
  wanted = [
    (f'best single branch ({best})', best, True),
    ('late ensemble', 'ensemble', True),
    (f'widened best branch ({best}_wide)', f'{best}_wide', True),
    (f'two copies of the best branch ({best}+{best})', f'{best}+{best}', False),
  ]
  for o in other:
    wanted += [
      (f'other branch ({o})', o, False),
      (f'widened other branch ({o}_wide)', f'{o}_wide', False),
      (f'two copies of the other branch ({o}+{o})', f'{o}+{o}', False),
    ]
  wanted += [
    (a, a, False) for a in ('gated_matched', 'projected_sum_matched', 'gated', 'projected_sum')
  ]
  return best, [(label, arm, primary) for label, arm, primary in wanted if arm in arms]


def analyse(summary: dict, num_resamples: int = study_stats.NUM_RESAMPLES) -> dict:
  """Per-arm CIs, paired comparisons of concat with Holm, redundancy, and the verdict."""
  rng = np.random.default_rng(0)
  lower = summary['lower_is_better']
  arms = {}
  for arm, values in summary['test'].items():
    mean, lo, hi = study_stats.mean_ci(values, num_resamples=num_resamples, rng=rng)
    halves = [(h - l) / 2 for l, h in summary['sampling_ci'][arm]]
    arms[arm] = {
      'mean': float(mean),
      'low': float(lo),
      'high': float(hi),
      'sd': float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
      'sampling_half_width': float(np.median(halves)),
    }
  best, wanted = comparisons(summary)
  rows = []
  for label, other, primary in wanted:
    d = study_stats.paired_difference(
      summary['test']['concat'],
      summary['test'][other],
      lower_is_better=lower,
      num_resamples=num_resamples,
      rng=rng,
    )
    rows.append({'label': label, 'arm': other, 'primary': primary, **d.__dict__})
  for row, adjusted in zip(rows, study_stats.holm([r['p_value'] for r in rows]) if rows else []):
    row['holm_p'] = float(adjusted)
  redundancy = None
  if summary['redundancy']:
    red = summary['redundancy']
    redundancy = {k: [r[k] for r in red] for k in ('cka', 'cka_debiased')}
    redundancy['zeroed_cnn'] = [r['zeroed'][0] for r in red]
    redundancy['zeroed_lstm'] = [r['zeroed'][1] for r in red]
    redundancy['widths'] = red[0]['widths']
  n = len(summary['seeds'])
  return {
    'arms': arms,
    'best_single': best,
    'comparisons': rows,
    'redundancy': redundancy,
    'min_holm_p': min(1.0, len(rows) * study_stats.min_p_value(n)) if rows else None,
    'verdict': verdict(rows, summary['margin']),
  }


def verdict(rows: Sequence[dict], margin: float) -> str:
  """The pre-declared decision rule (DECISION_RULE) applied to the comparisons of a dataset."""
  if not rows:
    return 'not assessed (needs the concat, cnn and lstm arms)'

  def significant(r: dict, sign: int) -> bool:
    return r['holm_p'] < ALPHA and (r['low'] > 0 if sign > 0 else r['high'] < 0)

  main = rows[0]
  if significant(main, +1):
    controls = [r for r in rows[1:3] if r['primary']]
    equal_to = [r['arm'] for r in controls if not significant(r, +1)]
    if equal_to:
      return f'helps, but not beyond the control(s) {", ".join(equal_to)}'
    return 'helps, beyond ensembling and capacity' if controls else 'helps'
  if significant(main, -1):
    return 'hurts'
  if -margin <= main['low'] and main['high'] <= margin:
    return f'redundant (equivalent within ±{margin:g})'
  return f'inconclusive (CI reaches beyond ±{margin:g})'


def _header(provenance: dict) -> list[str]:
  v = ', '.join(f'{k} {x}' for k, x in provenance['versions'].items())
  dirty = ' (with uncommitted changes)' if provenance['dirty'] else ''
  return [
    f'Command: `{provenance["command"]}`',
    '',
    f'Report written at commit `{provenance["commit"]}`{dirty}; {v}; {provenance["devices"]}; '
    f'{provenance["date"]}. Runs finished by an earlier invocation of the same protocol are reused '
    '(their config fingerprint must match), so a run may have been trained at an earlier commit.',
    '',
  ]


def _grid_note(summary: dict) -> list[str]:
  """The dataset's reason for a reduced grid, and the protocol's arms it did not run."""
  left_out = [a for a in study_arms.ARMS if a not in summary['arms']]
  lines = [summary['note']] if summary.get('note') else []
  if left_out:
    lines.append(f'Arms of the protocol not run here: {", ".join(left_out)}.')
  return [' '.join(lines), ''] if lines else []


def write_dataset_report(summary: dict, results_dir: str, provenance: dict) -> str:
  """study_<dataset>.md with its forest plot and validation curves; returns the markdown path."""
  os.makedirs(results_dir, exist_ok=True)
  a = summary['analysis']
  name, metric = summary['dataset'], summary['metric']
  arrow = '↓' if summary['lower_is_better'] else '↑'
  lines = (
    [f'# Study: {name}', '']
    + _header(provenance)
    + [
      f'Data `{summary["data"]}`, splits train `{summary["splits"][0]}`, validation '
      f'`{summary["splits"][1]}`, test `{summary["splits"][2]}` ({summary["num_test_examples"]} '
      f'examples). {summary["steps"]} steps per run; learning rate per arm chosen from '
      f'{", ".join(f"{x:g}" for x in summary["lrs"])} by mean best-validation {metric}; the kept '
      f'checkpoint of each run is the best on validation; test evaluated once per selected run. '
      f'Seeds {", ".join(map(str, summary["seeds"]))} (paired: same seed, same data order)'
      + (
        ''
        if summary['selection_seeds'] == summary['seeds']
        else f'; learning rates chosen on seeds {", ".join(map(str, summary["selection_seeds"]))} only, '
        'the other seeds run at the chosen rate'
      )
      + '.',
      '',
    ]
    + _grid_note(summary)
    + [
      f'## Arms: test {metric} {arrow}',
      '',
      '| arm | params | chosen lr | validation (mean) | test mean [95% CI over seeds] | seed sd '
      '| test-set sampling ± (95%, one run) | s / run |',
      '|---|---:|---:|---:|---|---:|---:|---:|',
    ]
  )
  target = summary['sizes']['target']
  for arm in summary['arms']:
    s = a['arms'][arm]
    spec = study_arms.ARMS[arm]
    params = summary['params'].get(arm)
    flag = ''
    if params and spec.matched and abs(params - target) > study_arms.MATCH_TOLERANCE * target:
      flag = ' (not matched: smallest size exceeds concat)'
    lr = summary['chosen_lr'].get(arm)
    val = summary['val_means'].get(f'{arm}@{lr:g}') if lr else None
    cells = [
      spec.label,
      f'{params:,}{flag}' if params else 'its members\' runs',
      f'{lr:g}' if lr else 'members\'',
      _fmt(val) if val is not None else '–',
      f'{_fmt(s["mean"])} [{_fmt(s["low"])}, {_fmt(s["high"])}]',
      _fmt(s['sd']),
      _fmt(s['sampling_half_width']),
      f'{summary["seconds"][arm]:.0f}' if arm in summary['seconds'] else '–',
    ]
    lines.append('| ' + ' | '.join(cells) + ' |')
  lines += [
    '',
    'Test-set sampling ±: half-width of the 95% CI of one run\'s metric from the finite '
    'test set (Wilson for accuracy, bootstrap over examples for MAE), median over seeds: '
    'compare it with the seed CI.',
    '',
  ]
  if a['comparisons']:
    lines += [
      f'## Paired differences on test: concat − arm (positive = concat better; best single '
      f'branch chosen on validation: {a["best_single"]})',
      '',
      '| comparison | mean difference [95% CI] | P(concat better) | concat wins | p (sign-flip) '
      '| Holm p |',
      '|---|---|---:|---:|---:|---:|',
    ]
    for r in a['comparisons']:
      star = ' (primary)' if r['primary'] else ''
      lines.append(
        f'| {r["label"]}{star} | {r["mean"]:+.4f} [{r["low"]:+.4f}, {r["high"]:+.4f}] | '
        f'{r["prob_better"]:.3f} | {r["wins"]:g}/{r["n"]} | {r["p_value"]:.4f} | '
        f'{r["holm_p"]:.4f} |'
      )
    lines += [
      '',
      f'P(concat better): fraction of bootstrap resamples of the seeds whose mean paired '
      f'difference is > 0. p: two-sided exact sign-flip permutation test; Holm over the '
      f'{len(a["comparisons"])} comparisons. Smallest reachable Holm p with '
      f'{len(summary["seeds"])} seeds: {a["min_holm_p"]:.4f}.',
      '',
    ]
  red = a['redundancy']
  if red:

    def ci(values):
      return '{:.3f} [{:.3f}, {:.3f}]'.format(*study_stats.mean_ci(values))

    intact = summary['test']['concat']
    lines += [
      '## Redundancy of the concat model (test, mean [95% CI] over seeds)',
      '',
      f'Branch feature widths: CNN {red["widths"][0]}, LSTM {red["widths"][1]}.',
      '',
      '| linear CKA(CNN, LSTM) | debiased CKA | ' + metric + ' intact | CNN features zeroed '
      '| LSTM features zeroed |',
      '|---|---|---|---|---|',
      f'| {ci(red["cka"])} | {ci(red["cka_debiased"])} | {ci(intact)} | '
      f'{ci(red["zeroed_cnn"])} | {ci(red["zeroed_lstm"])} |',
      '',
      'CKA near 1: the branches carry the same information (up to a rotation and scale); the '
      'plain estimate is biased upwards for wide features, the debiased one is not. A '
      'large drop when a branch is zeroed means the head relies on it.',
      '',
    ]
  forest, curves = plot_forest(summary, results_dir), plot_curves(summary, results_dir)
  lines += [f'## Verdict: concat **{a["verdict"]}**', '', DECISION_RULE, '']
  if forest:
    lines += [f'![paired differences]({os.path.basename(forest)})', '']
  lines += [f'![validation curves]({os.path.basename(curves)})', '']
  path = os.path.join(results_dir, f'study_{name}.md')
  fileio.write_text(path, '\n'.join(lines))
  return path


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


def plot_forest(summary: dict, results_dir: str) -> Optional[str]:
  """Forest plot of concat − arm with 95% CIs, the ±margin band shaded; None without comparisons."""
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
  path = os.path.join(results_dir, f'study_{summary["dataset"]}_forest.png')
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_curves(summary: dict, results_dir: str) -> str:
  """Validation metric against step per arm (mean over seeds at the chosen learning rate)."""
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
  path = os.path.join(results_dir, f'study_{summary["dataset"]}_val_curves.png')
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_summary_forest(summaries: Sequence[dict], results_dir: str) -> Optional[str]:
  """One panel per dataset: the primary comparisons (concat − best single, − late ensemble, −
  widened best) with 95% CIs in the dataset's own units, > 0 meaning concat is better."""
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
  path = os.path.join(results_dir, 'study_summary_forest.png')
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def write_summary(summaries: Sequence[dict], results_dir: str, provenance: dict) -> str:
  """study_summary.md: one row per dataset with the primary comparisons and the verdict."""
  os.makedirs(results_dir, exist_ok=True)
  lines = (
    ['# Is concatenating CNN and LSTM outputs meaningful? Study summary', '']
    + _header(provenance)
    + [
      '| dataset | metric | concat [95% CI] | best single branch [95% CI] | concat − best single '
      '[CI], P(better), Holm p | concat − late ensemble | concat − widened best | verdict |',
      '|---|---|---|---|---|---|---|---|',
    ]
  )
  for s in summaries:
    a = s['analysis']
    arms, rows = a['arms'], {r['arm']: r for r in a['comparisons']}
    best = a['best_single']
    cell = lambda arm: (  # pylint: disable=g-long-lambda
      f'{arms[arm]["mean"]:.4f} [{arms[arm]["low"]:.4f}, {arms[arm]["high"]:.4f}]'
      if arm in arms
      else '–'
    )
    diff = lambda arm: (  # pylint: disable=g-long-lambda
      f'{rows[arm]["mean"]:+.4f} [{rows[arm]["low"]:+.4f}, {rows[arm]["high"]:+.4f}], '
      f'{rows[arm]["prob_better"]:.2f}, {rows[arm]["holm_p"]:.3f}'
      if arm in rows
      else '–'
    )
    arrow = '↓' if s['lower_is_better'] else '↑'
    lines.append(
      f'| {s["dataset"]} | {s["metric"]} {arrow} | {cell("concat")} | {best}: '
      f'{cell(best) if best else "–"} | {diff(best) if best else "–"} | '
      f'{diff("ensemble")} | {diff(f"{best}_wide") if best else "–"} | '
      f'**{a["verdict"]}** |'
    )
  forest = plot_summary_forest(summaries, results_dir)
  lines += [
    '',
    *([f'![concat − arm per dataset]({os.path.basename(forest)})', ''] if forest else []),
    'Per-dataset reports (every arm, every comparison, redundancy, plots): '
    + ', '.join(f'[study_{s["dataset"]}.md](study_{s["dataset"]}.md)' for s in summaries),
    '',
    DECISION_RULE,
    '',
  ]
  path = os.path.join(results_dir, 'study_summary.md')
  fileio.write_text(path, '\n'.join(lines))
  return path
