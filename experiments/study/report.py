"""The study's analysis, markdown reports and plots (matplotlib is imported only to draw).

analysis = analyse(summary, per_example=scores, blocks=ids)  # statistics + verdict of one dataset
write_dataset_report(summary, results_dir, provenance)   # study_<dataset>.md + 2 PNGs
write_summary(summaries, results_dir, provenance)        # study_summary.md
"""

import dataclasses
import os
from typing import Optional, Sequence

import numpy as np

from experiments.study import arms as study_arms
from experiments.study import stats as study_stats
from hybrid_jax import fileio

ALPHA = 0.05
DECISION_RULE = """\
Decision rule (declared before any study result was seen, then revised: each dataset's report
lists the revisions, each with the verdict under the rule before and after it). Let B be the better single branch
(cnn only or lstm only) by mean validation metric at its chosen learning rate (ties: lower
validation loss), and d = concat - B on test, per seed (oriented so that d > 0 means concat is
better), with its 95% bootstrap CI over seeds and its Holm-adjusted exact sign-flip p-value (over
seeds). Holm runs over the declared family of primary comparisons (concat - B, concat - late
ensemble, concat - widened B; those whose arm was run); the secondary comparisons get their own
Holm correction and do not enter the verdict. delta is the dataset's equivalence margin (in the
metric's units).
- **helps**: Holm p < 0.05 and the CI lies above 0. It helps *beyond ensembling* (*capacity*)
  when, in addition, concat - late ensemble (concat - widened B) has Holm p < 0.05 and a CI above
  0; a control that does as well is named, and a control that was not run is said to be not run.
- **hurts**: Holm p < 0.05 and the CI lies below 0.
- **redundant**: not significant, and the two-level 95% CI of d (over seeds and test examples, or
  blocks of examples where neighbours overlap: the interval a new test set would also fall in)
  lies within [-delta, +delta].
- **inconclusive**: otherwise (not significant, and the CI reaches beyond +-delta).
With n seeds the smallest two-sided exact sign-flip p-value is 2 / 2^n, so with m comparisons in
the family significance needs m * 2 / 2^n < 0.05 (the report prints this floor)."""

# The primary comparisons, by role (concat against each): they form the Holm family of the verdict.
PRIMARY_ROLES = ('best_single', 'ensemble', 'widened')


@dataclasses.dataclass(frozen=True)
class Rule:
  """The parts of the decision rule that revisions change.

  holm_family: 'all' (Holm over every reported comparison) or 'primary' (over PRIMARY_ROLES only;
    the secondary comparisons corrected on their own).
  equivalence_ci: the interval that must lie within +-delta for "redundant": 'seeds' (bootstrap
    over seeds on the one test set) or 'two_level' (over seeds and test examples or blocks).
  """

  holm_family: str
  equivalence_ci: str


@dataclasses.dataclass(frozen=True)
class Revision:
  """One change of the protocol: `field` of the Rule becomes `new`; `change` says what changed
  (formatted with the analysis' counts: {all}, {primary}, {secondary}, {unit})."""

  field: str
  new: str
  change: str


FIRST_RULE = Rule(holm_family='all', equivalence_ci='seeds')  # The rule the first reports used.
REVISIONS = (
  Revision(
    'holm_family',
    'primary',
    'Holm over all {all} reported comparisons -> over the {primary} primary ones (the declared '
    'family; the secondary comparisons corrected among themselves)',
  ),
  Revision(
    'equivalence_ci',
    'two_level',
    '"redundant" needs the 95% CI over seeds within ±delta -> the two-level CI over seeds and '
    'test {unit}s within ±delta',
  ),
)


def _apply(rule: Rule, revisions: Sequence[Revision]) -> Rule:
  for r in revisions:
    rule = dataclasses.replace(rule, **{r.field: r.new})
  return rule


RULE = _apply(FIRST_RULE, REVISIONS)  # The current rule.


def _fmt(value: float, lower_digits: int = 4) -> str:
  return f'{value:.{lower_digits}f}'


def best_single_branch(summary: dict) -> Optional[str]:
  """The single branch (cnn or lstm) with the best mean validation metric at its chosen rate; ties
  broken by mean validation loss where the summary has it ('val_loss_means', same keys)."""
  singles = [a for a in ('cnn', 'lstm') if a in summary['arms']]
  if not singles:
    return None
  keys = [f'{a}@{summary["chosen_lr"][a]:g}' for a in singles]
  losses = summary.get('val_loss_means')
  index = study_stats.select_best(
    [summary['val_means'][k] for k in keys],
    [losses.get(k) for k in keys] if losses else None,
    summary['lower_is_better'],
  )
  return singles[index]


def comparisons(summary: dict) -> tuple[Optional[str], list[tuple[str, str, Optional[str]]]]:
  """(best single branch, [(label, other arm, role)]) for the arms the dataset ran.

  role is one of PRIMARY_ROLES for a primary comparison (addressed by name, never by position),
  None for a secondary one.
  """
  arms = summary['arms']
  best = best_single_branch(summary)
  if best is None or 'concat' not in arms:
    return None, []
  other = [a for a in ('cnn', 'lstm') if a in arms and a != best]
  wanted = [
    (f'best single branch ({best})', best, 'best_single'),
    ('late ensemble', 'ensemble', 'ensemble'),
    (f'widened best branch ({best}_wide)', f'{best}_wide', 'widened'),
    (f'two copies of the best branch ({best}+{best})', f'{best}+{best}', None),
  ]
  for o in other:
    wanted += [
      (f'other branch ({o})', o, None),
      (f'widened other branch ({o}_wide)', f'{o}_wide', None),
      (f'two copies of the other branch ({o}+{o})', f'{o}+{o}', None),
    ]
  wanted += [
    (a, a, None)
    for a in (
      'concat_norm',
      'concat_aux',
      'concat_branch_dropout',
      'probe',
      'gated_matched',
      'projected_sum_matched',
      'gated',
      'projected_sum',
    )
  ]
  return best, [(label, arm, role) for label, arm, role in wanted if arm in arms]


def grid_edges(summary: dict) -> dict[str, dict]:
  """Per trained arm, where its chosen learning rate sits in the rates it was run at
  (`stats.grid_edge` on the summary's 'val_means', keyed '<arm>@<lr>'; ties: 'val_loss_means')."""
  losses = summary.get('val_loss_means') or {}
  out = {}
  for arm in summary['chosen_lr']:
    keys = {
      float(k.rpartition('@')[2]): k for k in summary['val_means'] if k.rpartition('@')[0] == arm
    }
    if not keys:
      continue
    lrs = sorted(keys)
    edge = study_stats.grid_edge(
      lrs,
      [summary['val_means'][keys[lr]] for lr in lrs],
      summary['lower_is_better'],
      [losses.get(keys[lr]) for lr in lrs] if losses else None,
    )
    out[arm] = dataclasses.asdict(edge)
  return out


def _redundancy(records: Sequence[dict]) -> Optional[dict]:
  """Per-seed redundancy measures of the concat model, by name ('mean_ablated' where recorded)."""
  if not records:
    return None
  out = {k: [r[k] for r in records] for k in ('cka', 'cka_debiased')}
  for kind in ('zeroed', 'mean_ablated'):
    if all(kind in r for r in records):
      out[f'{kind}_cnn'] = [r[kind][0] for r in records]
      out[f'{kind}_lstm'] = [r[kind][1] for r in records]
  out['widths'] = records[0]['widths']
  return out


def analyse(
  summary: dict,
  num_resamples: int = study_stats.NUM_RESAMPLES,
  per_example: Optional[dict] = None,
  blocks: Optional[Sequence] = None,
) -> dict:
  """Per-arm CIs, paired comparisons of concat with Holm per family, redundancy, the verdict under
  the current rule and under each earlier one (the revisions).

  Args:
    summary: the dataset's summary (protocol.study_dataset).
    per_example: arm -> per-example test scores [num_seeds, num_test_examples] in the seeds' order
      (`stats.per_example_scores` of each seed's test outputs: correctness, or absolute error in
      original units); None: no two-level CIs (then "redundant" cannot be established).
    blocks: one block id per test example, the dataset's bootstrap unit (e.g. the day of an hourly
      window); None: each example is its own block.
  """
  rng = np.random.default_rng(0)
  lower = summary['lower_is_better']
  # A two-level CI needs two seeds (and two blocks): with fewer there is no interval to draw.
  per_example = (per_example or {}) if len(summary['seeds']) > 1 else {}
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
    if arm in per_example:
      _, lo, hi = study_stats.two_level_ci(
        per_example[arm], blocks, num_resamples=num_resamples, rng=rng
      )
      arms[arm]['two_level'] = [lo, hi]
  best, wanted = comparisons(summary)
  rows = []
  for label, other, role in wanted:
    d = study_stats.paired_difference(
      summary['test']['concat'],
      summary['test'][other],
      lower_is_better=lower,
      num_resamples=num_resamples,
      rng=rng,
    )
    row = {'label': label, 'arm': other, 'role': role, 'primary': role is not None, **d.__dict__}
    if 'concat' in per_example and other in per_example:
      _, lo, hi = study_stats.two_level_paired_ci(
        per_example['concat'],
        per_example[other],
        blocks,
        lower,
        num_resamples=num_resamples,
        rng=rng,
      )
      row['two_level_low'], row['two_level_high'] = lo, hi
    rows.append(row)
  if rows:
    p = [r['p_value'] for r in rows]
    families = ['primary' if r['primary'] else 'secondary' for r in rows]
    for row, own, every in zip(rows, study_stats.holm_by_family(p, families), study_stats.holm(p)):
      row['holm_p'], row['holm_p_all'] = float(own), float(every)
  family = [r['arm'] for r in rows if r['primary']]
  n = len(summary['seeds'])
  unit = summary.get('bootstrap_unit') or 'example'
  return {
    'arms': arms,
    'best_single': best,
    'comparisons': rows,
    'family': family,
    'secondary': [r['arm'] for r in rows if not r['primary']],
    'bootstrap_unit': unit,
    'redundancy': _redundancy(summary['redundancy']),
    'grid_edges': grid_edges(summary),
    'min_holm_p': min(1.0, len(family) * study_stats.min_p_value(n)) if family else None,
    'rule': dataclasses.asdict(RULE),
    'verdict': verdict(rows, summary['margin'], RULE),
    'revisions': revisions(rows, summary['margin'], unit),
  }


def revisions(
  rows: Sequence[dict],
  margin: float,
  unit: str = 'example',
  steps: Sequence[Revision] = REVISIONS,
  first: Rule = FIRST_RULE,
) -> list[dict]:
  """Each protocol change in turn: what changed, and the verdict under the rule before and after it.

  The revisions apply one after another, starting from `first`: the last one's 'verdict_new' is
  the report's verdict.
  """
  out, rule = [], first
  counts = {
    'all': len(rows),
    'primary': sum(r['primary'] for r in rows),
    'secondary': sum(not r['primary'] for r in rows),
    'unit': unit,
  }
  for step in steps:
    new = _apply(rule, [step])
    out.append(
      {
        'change': step.change.format(**counts),
        'old': getattr(rule, step.field),
        'new': step.new,
        'verdict_old': verdict(rows, margin, rule),
        'verdict_new': verdict(rows, margin, new),
      }
    )
    rule = new
  return out


def verdict(rows: Sequence[dict], margin: float, rule: Rule = RULE) -> str:
  """The decision rule (DECISION_RULE, or an earlier `rule`) applied to the comparisons of a dataset.

  Rows are found by role: a control that was not run is never claimed.
  """
  by_role = {r['role']: r for r in rows if r.get('role')}
  if 'best_single' not in by_role:
    return 'not assessed (needs the concat, cnn and lstm arms)'
  key = 'holm_p_all' if rule.holm_family == 'all' else 'holm_p'

  def significant(r: dict, sign: int) -> bool:
    return r[key] < ALPHA and (r['low'] > 0 if sign > 0 else r['high'] < 0)

  main = by_role['best_single']
  if significant(main, +1):
    controls = {'ensemble': 'ensembling', 'widened': 'capacity'}
    run = [role for role in controls if role in by_role]
    equal_to = [by_role[role]['arm'] for role in run if not significant(by_role[role], +1)]
    not_run = [f'{controls[role]} control not run' for role in controls if role not in by_role]
    note = f' ({"; ".join(not_run)})' if not_run else ''
    if equal_to:
      return f'helps, but not beyond the control(s) {", ".join(equal_to)}{note}'
    beyond = ' and '.join(controls[role] for role in run)
    return 'helps' + (f', beyond {beyond}' if beyond else '') + note
  if significant(main, -1):
    return 'hurts'
  if rule.equivalence_ci == 'seeds':
    low, high = main['low'], main['high']
  else:
    low, high = main.get('two_level_low'), main.get('two_level_high')
    if low is None:
      if -margin <= main['low'] and main['high'] <= margin:
        return 'inconclusive (no two-level CI: per-example test outputs missing)'
      low, high = main['low'], main['high']
  if -margin <= low and high <= margin:
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
    + _arms_section(summary)
    + _comparisons_section(summary)
    + _redundancy_section(summary)
  )
  forest, curves = plot_forest(summary, results_dir), plot_curves(summary, results_dir)
  lines += [f'## Verdict: concat **{a["verdict"]}**', ''] + _revisions_section(a)
  lines += [DECISION_RULE, '']
  if forest:
    lines += [f'![paired differences]({os.path.basename(forest)})', '']
  lines += [f'![validation curves]({os.path.basename(curves)})', '']
  path = os.path.join(results_dir, f'study_{name}.md')
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
      flag = ' (not matched: smallest size exceeds concat)'
    lr = summary['chosen_lr'].get(arm)
    val = summary['val_means'].get(f'{arm}@{lr:g}') if lr else None
    cells = [
      spec.label,
      f'{params:,}{flag}' if params else 'its members\' runs',
      f'{lr:g}' if lr else 'members\'',
      _fmt(val) if val is not None else '–',
      f'{_fmt(s["mean"])} {_interval(s["low"], s["high"])}',
      *([_interval(*s['two_level']) if 'two_level' in s else '–'] if two_level else []),
      _fmt(s['sd']),
      _fmt(s['sampling_half_width']),
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
      '[CI], P(better), Holm p | concat − late ensemble | concat − widened best | verdict '
      '| verdict under the first rule |',
      '|---|---|---|---|---|---|---|---|---|',
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
      f'**{a["verdict"]}** | {a["revisions"][0]["verdict_old"] if a.get("revisions") else "–"} |'
    )
  forest = plot_summary_forest(summaries, results_dir)
  lines += [
    '',
    *([f'![concat − arm per dataset]({os.path.basename(forest)})', ''] if forest else []),
    'Holm p: within the declared family of primary comparisons. The first rule: Holm over every '
    'reported comparison and "redundant" on the seed CI; each dataset\'s report lists the revisions '
    'one by one with the verdict before and after each.',
    '',
    'Per-dataset reports (every arm, every comparison, redundancy, plots): '
    + ', '.join(f'[study_{s["dataset"]}.md](study_{s["dataset"]}.md)' for s in summaries),
    '',
    DECISION_RULE,
    '',
  ]
  path = os.path.join(results_dir, 'study_summary.md')
  fileio.write_text(path, '\n'.join(lines))
  return path
