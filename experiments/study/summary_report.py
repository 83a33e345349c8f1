"""The study's summary across datasets (study_summary.md): the controls' designed and obtained
verdicts, one row per real dataset, and what the whole study cost.

write_summary(summaries, results_dir, provenance, earlier)  # study_summary.md + its forest plot
"""

import os
from typing import Optional, Sequence

from experiments.study import grids as study_grids
from experiments.study import plots as study_plots
from experiments.study import report as study_report
from experiments.study import rule as study_rule
from hybrid_jax import fileio


def _cost_section(summaries: Sequence[dict]) -> list[str]:
  """The wall time of the whole study: one row per dataset and the total."""
  lines = [
    '## What the study cost',
    '',
    f'Training wall time: {study_report.COST_COUNTS}; on the device each run was trained on.',
    '',
    '| dataset | runs | training (h) |',
    '|---|---|---|',
  ]
  known = [s for s in summaries if 'train_seconds' in s]  # A summary.json older than this count.
  for s in summaries:
    cells = (
      [str(s['num_runs']), f'{s["train_seconds"] / 3600:.2f}']
      if 'train_seconds' in s
      else ['–'] * 2
    )
    lines.append(f'| {s["dataset"]} | {" | ".join(cells)} |')
  runs = sum(s['num_runs'] for s in known)
  hours = sum(s['train_seconds'] for s in known) / 3600
  return lines + [
    f'| **all**{"" if len(known) == len(summaries) else " counted"} | {runs} | {hours:.2f} |',
    '',
  ]


def _controls_table(controls: Sequence[dict]) -> list[str]:
  """One row per control: the verdict it was designed to give, the one it got, the main difference."""
  lines = [
    '| control | designed verdict | obtained verdict | as designed | concat − best single [CI], '
    'Holm p | concat − late ensemble |',
    '|---|---|---|---|---|---|',
  ]
  for s in controls:
    a = s['analysis']
    rows = {r['role']: r for r in a['comparisons'] if r.get('role')}
    outcome = study_rule.control_outcome(a['designed'][0], a['verdict'])
    lines.append(
      f'| [{s["dataset"]}]({study_report.file_stem(s["dataset"])}.md) | {a["designed"][0]}: '
      f'{a["designed"][1]} | **{a["verdict"]}** | '
      f'{"yes" if outcome["as_designed"] else "holds" if outcome["holds"] else "**no**"} | '
      f'{_difference(rows.get("best_single"))} | {_difference(rows.get("ensemble"))} |'
    )
  return lines + ['']


def _difference(row: Optional[dict]) -> str:
  if row is None:
    return '–'
  return f'{row["mean"]:+.4f} [{row["low"]:+.4f}, {row["high"]:+.4f}], {row["holm_p"]:.3f}'


def _datasets_table(summaries: Sequence[dict], claimed: bool) -> list[str]:
  """One row per real dataset: concat and the best branch, the primary comparisons, the verdict
  (withheld unless the controls held), and what the probe and the fixes say."""
  lines = [
    '| dataset | metric | concat [95% CI] | best single branch [95% CI] | concat − best single '
    '[CI], Holm p | concat − late ensemble | concat − widened best | verdict | verdict under the '
    'first rule | features complementary? (probe − best single) | a fix beats concat? |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  for s in summaries:
    a = s['analysis']
    arms, rows = a['arms'], {r['role']: r for r in a['comparisons'] if r.get('role')}
    best = a['best_single']

    def cell(arm):
      return (
        f'{arms[arm]["mean"]:.4f} [{arms[arm]["low"]:.4f}, {arms[arm]["high"]:.4f}]'
        if (arm in arms)
        else '–'
      )

    verdict = f'**{a["verdict"]}**' if claimed else f'not claimed (the rule gives: {a["verdict"]})'
    diagnosis = a.get('diagnosis', {})
    complementary = diagnosis.get('complementary', {}).get('reading', '–').split(':')[0]
    fixes = diagnosis.get('training')
    fix = '–' if not fixes else (', '.join(fixes['beat_concat']) or 'no')
    arrow = '↓' if s['lower_is_better'] else '↑'
    lines.append(
      f'| [{s["dataset"]}]({study_report.file_stem(s["dataset"])}.md) | {s["metric"]} {arrow} | '
      f'{cell("concat")} | {best}: {cell(best) if best else "–"} | '
      f'{_difference(rows.get("best_single"))} | {_difference(rows.get("ensemble"))} | '
      f'{_difference(rows.get("widened"))} | {verdict} | '
      f'{a["revisions"][0]["verdict_old"] if a.get("revisions") else "–"} | {complementary} | '
      f'{fix} |'
    )
  return lines + ['']


def write_summary(
  summaries: Sequence[dict], results_dir: str, provenance: dict, earlier: Sequence[dict] = ()
) -> str:
  """study_summary.md: the controls first (designed and obtained verdicts), then one row per real
  dataset, whose verdicts are claimed only when the controls held (`rule.controls_gate`).
  A study of the controls alone (the instrument's test) writes study_controls_summary.md instead,
  leaving the datasets' summary in place.

  earlier: summaries of datasets an earlier invocation studied (their summary.json), summarised
    with `summaries` (which win for a dataset in both), in the study's order of datasets.
  """
  os.makedirs(results_dir, exist_ok=True)
  studied = {s['dataset'] for s in summaries}
  from_earlier = [s for s in earlier if s['dataset'] not in studied]
  order = {name: i for i, name in enumerate(study_grids.DATASETS)}
  everything = sorted(
    [*summaries, *from_earlier], key=lambda s: order.get(s['dataset'], len(order))
  )
  controls = [s for s in everything if s['analysis'].get('designed')]
  real = [s for s in everything if not s['analysis'].get('designed')]
  claimed, why = study_rule.controls_gate(controls)
  lines = ['# Is concatenating CNN and LSTM outputs meaningful? Study summary', '']
  lines += study_report.header(provenance)
  lines += [
    f'**{"The verdicts below are claimed" if claimed else "No claim about the real datasets"}**: '
    f'{why}.',
    '',
  ]
  if from_earlier:
    lines += [
      'Studied by an earlier invocation in the same study dir (each report names its own '
      f'command): {", ".join(s["dataset"] for s in from_earlier)}.',
      '',
    ]
  if controls:
    lines += ['## The controls (known verdicts)', ''] + _controls_table(controls)
  if real:
    lines += ['## The datasets', ''] + _datasets_table(real, claimed)
  stem = 'study_summary' if real else 'study_controls_summary'
  forest = study_plots.summary_forest(
    [*controls, *real], os.path.join(results_dir, f'{stem}_forest.png')
  )
  lines += [
    *([f'![concat − arm per dataset]({os.path.basename(forest)})', ''] if forest else []),
    'Holm p: within the declared family of primary comparisons. The first rule: Holm over every '
    'reported comparison and "redundant" on the seed CI; each dataset\'s report lists the revisions '
    'one by one with the verdict before and after each. Features complementary: a head trained on '
    'the frozen cnn-only and lstm-only runs\' features (the probe) against the best single branch; '
    'a fix beats concat: normalised concat, auxiliary branch losses, branch dropout or the probe '
    'beats concat (secondary Holm p < 0.05).',
    '',
    study_rule.DECISION_RULE,
    '',
    *_cost_section([*controls, *real]),
  ]
  path = os.path.join(results_dir, f'{stem}.md')
  fileio.write_text(path, '\n'.join(lines))
  return path
