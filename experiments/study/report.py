"""Each dataset's markdown report of the study (its plots: plots.py); the statistics are
analysis.py's, the verdict rule.py's.

write_dataset_report(summary, results_dir, provenance)   # study_<dataset>.md + 2 PNGs
(the summary across datasets, study_summary.md: summary_report.py)
"""

import os

from experiments.study import analysis as study_analysis
from experiments.study import arms as study_arms
from experiments.study import plots as study_plots
from experiments.study import rule as study_rule
from experiments.study import stats as study_stats
from hybrid_jax import fileio


def header(provenance: dict) -> list[str]:
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


def _extended(summary: dict) -> str:
  """' (extended to 0.01, 0.03 where an arm chose the grid's edge)', or '' when no arm did."""
  tried = {lr for rates in study_analysis.rates_tried(summary).values() for lr in rates}
  extra = sorted(tried - {float(x) for x in summary['lrs']})
  if not extra:
    return ''
  return f' (extended to {", ".join(f"{x:g}" for x in extra)} where an arm chose the grid\'s edge)'


def _grid_note(summary: dict) -> list[str]:
  """The dataset's reason for a reduced grid, and the protocol's arms it did not run."""
  left_out = [a for a in study_arms.ARMS if a not in summary['arms']]
  lines = [summary['note']] if summary.get('note') else []
  if left_out:
    lines.append(f'Arms of the protocol not run here: {", ".join(left_out)}.')
  return [' '.join(lines), ''] if lines else []


# What a study's training time counts (summary['train_seconds']).
COST_COUNTS = (
  "the runs' own wall times summed: their evaluations and checkpoints included; the test phase, "
  'the probe and the reports not; a run interrupted and resumed counts every sitting (runs.clock), '
  'each interruption losing up to 30 s; a sitting interrupted before the clock came (commit 67c881f, '
  '2026-11-26 10:28 UTC) is not counted'
)


def _cost(summary: dict) -> str:
  """'196 runs, 1.9 h of training (...)'."""
  return (
    f'{summary["num_runs"]} runs, {summary["train_seconds"] / 3600:.1f} h of training '
    f'({COST_COUNTS})'
  )


def file_stem(dataset: str) -> str:
  """The reports' file stem of a dataset: 'study_bbc_news', 'study_controls_both'."""
  return 'study_' + dataset.replace('/', '_')


def _verdict_section(analysis: dict) -> list[str]:
  """The verdict, a control's designed verdict beside it, and what the probe and fixes say."""
  lines = [f'## Verdict: concat **{analysis["verdict"]}**', '']
  if analysis.get('designed'):
    designed, reason = analysis['designed']
    outcome = study_rule.control_outcome(designed, analysis['verdict'])
    lines += [
      f'A control: designed to give **{designed}** ({reason}); obtained **{analysis["verdict"]}** '
      + (
        '— as designed.'
        if outcome['as_designed']
        else '— not the designed verdict'
        + (
          ', but on the designed side of "helps" (what the summary requires).'
          if outcome['holds']
          else ': the summary claims nothing about the real datasets.'
        )
      ),
      '',
    ]
  readings = [analysis.get('diagnosis', {}).get(k) for k in ('complementary', 'training')]
  lines += [f'- {r["reading"]}.' for r in readings if r] + ([''] if any(readings) else [])
  return lines


def write_dataset_report(summary: dict, results_dir: str, provenance: dict) -> str:
  """study_<dataset>.md with its forest plot and validation curves; returns the markdown path."""
  os.makedirs(results_dir, exist_ok=True)
  a = summary['analysis']
  name, metric = summary['dataset'], summary['metric']
  lines = (
    [f'# Study: {name}', '']
    + header(provenance)
    + [
      f'Data `{summary["data"]}`, splits train `{summary["splits"][0]}`, validation '
      f'`{summary["splits"][1]}`, test `{summary["splits"][2]}` ({summary["num_test_examples"]} '
      f'examples). {summary["steps"]} steps per run; learning rate per arm chosen from '
      f'{", ".join(f"{x:g}" for x in summary["lrs"])}{_extended(summary)} by mean '
      f'best-validation {metric}; the kept '
      f'checkpoint of each run is the best on validation; '
      + (
        'every run tested once, when trained (only the selected runs\' test outputs are read, '
        'after selection). '
        if summary.get('test_when_trained')
        else 'test evaluated once per selected run. '
      )
      + f'Seeds {", ".join(map(str, summary["seeds"]))} (paired: same seed, same data order)'
      + (
        ''
        if summary['selection_seeds'] == summary['seeds']
        else f'; learning rates chosen on seeds {", ".join(map(str, summary["selection_seeds"]))} only, '
        'the other seeds run at the chosen rate'
      )
      + '.',
      '',
      f'{_cost(summary)}.',
      '',
    ]
    + _grid_note(summary)
    + _arms_section(summary)
    + _comparisons_section(summary)
    + _redundancy_section(summary)
  )
  stem = os.path.join(results_dir, file_stem(name))
  forest = study_plots.forest(summary, f'{stem}_forest.png')
  curves = study_plots.validation_curves(summary, f'{stem}_val_curves.png')
  lines += _verdict_section(a) + _revisions_section(a)
  lines += [study_rule.DECISION_RULE, '']
  if forest:
    lines += [f'![paired differences]({os.path.basename(forest)})', '']
  lines += [f'![validation curves]({os.path.basename(curves)})', '']
  path = os.path.join(results_dir, f'{file_stem(name)}.md')
  fileio.write_text(path, '\n'.join(lines))
  return path


def _interval(low: float, high: float, signed: bool = False) -> str:
  f = '{:+.4f}' if signed else '{:.4f}'
  return f'[{f.format(low)}, {f.format(high)}]'


def _arms_section(summary: dict) -> list[str]:
  """The arms table: per-arm test metric with its seed CI (and two-level CI where computed)."""
  a, metric = summary['analysis'], summary['metric']
  arrow = '↓' if summary['lower_is_better'] else '↑'
  two_level = any('two_level' in s for s in a['arms'].values())
  unit = a.get('bootstrap_unit', 'example')
  lines = [
    f'## Arms: test {metric} {arrow}',
    '',
    '| arm | params | chosen lr | validation (mean) | test mean [95% CI over seeds] '
    + (f'| 95% CI over seeds and test {unit}s ' if two_level else '')
    + '| seed sd | test-set sampling ± (95%, one run) | s / run |',
    '|---|---:|---:|---:|---' + ('|---' if two_level else '') + '|---:|---:|---:|',
  ]
  target = summary['sizes']['target']
  for arm in summary['arms']:
    s = a['arms'][arm]
    spec = study_arms.ARMS[arm]
    params = summary['params'].get(arm)
    flag = ''
    if params and spec.matched and abs(params - target) > study_arms.MATCH_TOLERANCE * target:
      way = 'more' if params > target else 'fewer'
      flag = f' (not matched: {abs(params - target) / target:.0%} {way} than concat\'s {target:,})'
    lr = summary['chosen_lr'].get(arm)
    val = summary['val_means'].get(f'{arm}@{lr:g}') if lr else None
    cells = [
      spec.label,
      f'{params:,}{flag}' if params else 'its members\' runs',
      f'{lr:g}' if lr else 'members\'',
      study_analysis.fmt(val) if val is not None else '–',
      f'{study_analysis.fmt(s["mean"])} {_interval(s["low"], s["high"])}',
      *([_interval(*s['two_level']) if 'two_level' in s else '–'] if two_level else []),
      study_analysis.fmt(s['sd']),
      study_analysis.fmt(s['sampling_half_width']),
      f'{summary["seconds"][arm]:.0f}' if arm in summary['seconds'] else '–',
    ]
    lines.append('| ' + ' | '.join(cells) + ' |')
  edges = {arm: e for arm, e in a.get('grid_edges', {}).items() if e['edge']}
  lines += [
    '',
    *(
      [
        'Chosen at the edge of the rates tried (the optimum may lie beyond; rate to add next): '
        + '; '.join(
          f'{arm} at the {e["edge"]} rate {e["chosen"]:g} '
          f'(next {", ".join(f"{r:g}" for r in e["next_rates"])})'
          for arm, e in edges.items()
        )
        + '.',
        '',
      ]
      if edges
      else []
    ),
    'Test-set sampling ±: half-width of the 95% CI of one run\'s metric from the finite '
    'test set (Wilson for accuracy, bootstrap over examples for MAE), median over seeds: '
    'compare it with the seed CI.'
    + (
      f' The two-level CI resamples the seeds and, shared by all seeds, the test {unit}s '
      '(stats.two_level_ci): the interval a new test set would also fall in.'
      if two_level
      else ''
    ),
    '',
  ]
  return lines


def _comparisons_section(summary: dict) -> list[str]:
  """The paired differences of concat with every other arm run, the declared Holm family first."""
  a = summary['analysis']
  rows = a['comparisons']
  if not rows:
    return []
  two_level = any('two_level_low' in r for r in rows)
  unit = a.get('bootstrap_unit', 'example')
  family = [r['label'] for r in rows if r['primary']]
  lines = [
    f'## Paired differences on test: concat − arm (positive = concat better; best single '
    f'branch chosen on validation: {a["best_single"]})',
    '',
    f'Holm family of the verdict (declared in the protocol, addressed by name): '
    f'{", ".join(family)} ({len(family)} comparisons). The {len(rows) - len(family)} secondary '
    'comparisons are corrected by Holm among themselves and do not enter the verdict.',
    '',
    '| comparison | family | mean difference [95% CI over seeds] '
    + (f'| [95% CI over seeds and test {unit}s] ' if two_level else '')
    + '| P(concat better) | concat wins | p (sign-flip) | Holm p (in its family) |',
    '|---|---|---' + ('|---' if two_level else '') + '|---:|---:|---:|---:|',
  ]
  for r in rows:
    two = (
      [
        _interval(r['two_level_low'], r['two_level_high'], signed=True)
        if 'two_level_low' in r
        else '–'
      ]
      if two_level
      else []
    )
    cells = [
      r['label'],
      'primary' if r['primary'] else 'secondary',
      f'{r["mean"]:+.4f} {_interval(r["low"], r["high"], signed=True)}',
      *two,
      f'{r["prob_better"]:.3f}',
      f'{r["wins"]:g}/{r["n"]}',
      f'{r["p_value"]:.4f}',
      f'{r["holm_p"]:.4f}',
    ]
    lines.append('| ' + ' | '.join(cells) + ' |')
  lines += [
    '',
    'P(concat better): fraction of bootstrap resamples of the seeds whose mean paired '
    'difference is > 0. p: two-sided exact sign-flip permutation test over seeds. Smallest '
    f'reachable Holm p in the family with {len(summary["seeds"])} seeds: {a["min_holm_p"]:.4f}.',
    '',
  ]
  return lines


def _redundancy_section(summary: dict) -> list[str]:
  """CKA between the concat model's branch features, and its metric with a branch ablated."""
  red, metric = summary['analysis']['redundancy'], summary['metric']
  if not red:
    return []

  def ci(values):
    return '{:.3f} [{:.3f}, {:.3f}]'.format(*study_stats.mean_ci(values))

  ablations = [
    (kind, title)
    for kind, title in (('mean_ablated', 'mean-ablated'), ('zeroed', 'zeroed'))
    if f'{kind}_cnn' in red
  ]
  head = [f'CNN features {t}' for _, t in ablations] + [f'LSTM features {t}' for _, t in ablations]
  cells = [ci(red[f'{k}_cnn']) for k, _ in ablations] + [ci(red[f'{k}_lstm']) for k, _ in ablations]
  note = (
    'Mean-ablation (a branch\'s features replaced by their mean) is the standard: it keeps the '
    'head on the distribution it was trained on; zeroing is shown beside it for comparison with '
    'earlier reports (for ReLU features with a positive mean it is off-distribution).'
    if 'mean_ablated_cnn' in red
    else 'Zero-ablation only (these runs predate mean-ablation, the standard): for ReLU features '
    'with a positive mean, zeroing is off-distribution and overstates the drop.'
  )
  return [
    '## Redundancy of the concat model (test, mean [95% CI] over seeds)',
    '',
    f'Branch feature widths: CNN {red["widths"][0]}, LSTM {red["widths"][1]}.',
    '',
    f'| linear CKA(CNN, LSTM) | debiased CKA | {metric} intact | ' + ' | '.join(head) + ' |',
    '|---|---|---|' + '---|' * len(head),
    f'| {ci(red["cka"])} | {ci(red["cka_debiased"])} | {ci(summary["test"]["concat"])} | '
    + ' | '.join(cells)
    + ' |',
    '',
    'CKA near 1: the branches carry the same information (up to a rotation and scale); the '
    'plain estimate is biased upwards for wide features, the debiased one is not. A '
    'large drop when a branch is ablated means the head relies on it. ' + note,
    '',
  ]


def _revisions_section(analysis: dict) -> list[str]:
  """The protocol's revisions: what changed and the verdict under the rule before and after."""
  revs = analysis.get('revisions') or []
  if not revs:
    return []
  lines = [
    'Protocol revisions (each applied after the ones above it; verdicts computed under both rules):',
    '',
    '| # | what changed | verdict under the old rule | verdict under the new rule |',
    '|---:|---|---|---|',
  ]
  for i, r in enumerate(revs, 1):
    lines.append(f'| {i} | {r["change"]} | {r["verdict_old"]} | {r["verdict_new"]} |')
  return lines + ['']
