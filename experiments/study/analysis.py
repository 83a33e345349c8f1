"""The study's analysis of one dataset: the comparisons of concat with every other arm, their
statistics, the verdict under the decision rule (rule.py) and its revisions, and what the fix arms
and the probe say.

  analysis = analyse(summary, per_example=scores, blocks=ids)   # statistics + verdict
"""

import dataclasses
from typing import Optional, Sequence

import numpy as np

from experiments.study import rule as study_rule
from experiments.study import selection as study_selection
from experiments.study import stats as study_stats


def fmt(value: float, lower_digits: int = 4) -> str:
  return f'{value:.{lower_digits}f}'


def best_single_branch(summary: dict) -> Optional[str]:
  """The single branch (cnn or lstm) with the best mean validation metric at its chosen rate; ties
  broken by mean validation loss where the summary has it ('val_loss_means', same keys)."""
  singles = [a for a in ('cnn', 'lstm') if a in summary['arms']]
  if not singles:
    return None
  keys = [f'{a}@{summary["chosen_lr"][a]:g}' for a in singles]
  losses = summary.get('val_loss_means')
  index = study_selection.select_best(
    [summary['val_means'][k] for k in keys],
    [losses.get(k) for k in keys] if losses else None,
    summary['lower_is_better'],
  )
  return singles[index]


def comparisons(summary: dict) -> tuple[Optional[str], list[tuple[str, str, Optional[str]]]]:
  """(best single branch, [(label, other arm, role)]) for the arms the dataset ran.

  role is one of rule.PRIMARY_ROLES for a primary comparison (addressed by name, never by position),
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


def rates_tried(summary: dict) -> dict[str, dict[float, str]]:
  """Per trained arm, {rate: its key in 'val_means' ('<arm>@<lr>')} for every rate it was run at."""
  out: dict[str, dict[float, str]] = {}
  for key in summary.get('val_means', {}):
    arm, _, lr = key.rpartition('@')
    out.setdefault(arm, {})[float(lr)] = key
  return out


def grid_edges(summary: dict) -> dict[str, dict]:
  """Per trained arm, where its chosen learning rate sits in the rates it was run at
  (`selection.grid_edge` on the summary's 'val_means'; ties: 'val_loss_means')."""
  losses = summary.get('val_loss_means') or {}
  tried = rates_tried(summary)
  out = {}
  for arm in summary['chosen_lr']:
    keys = tried.get(arm, {})
    if not keys:
      continue
    lrs = sorted(keys)
    edge = study_selection.grid_edge(
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
    summary: the dataset's summary (conduct.study_dataset).
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
    'rule': dataclasses.asdict(study_rule.RULE),
    'verdict': study_rule.verdict(rows, summary['margin'], study_rule.RULE),
    'revisions': study_rule.revisions(rows, summary['margin'], unit),
    'diagnosis': diagnose(summary, best, rows, num_resamples, rng, per_example, blocks),
    'designed': summary.get('designed_verdict'),
  }


# The arms that tell "useless" from "trained badly": a head on the frozen branches (probe) and the
# fix arms (normalised concat, auxiliary branch losses, branch dropout).
FIX_ARMS = ('probe', 'concat_norm', 'concat_aux', 'concat_branch_dropout')


def diagnose(
  summary: dict,
  best: Optional[str],
  rows: Sequence[dict],
  num_resamples: int = study_stats.NUM_RESAMPLES,
  rng: Optional[np.random.Generator] = None,
  per_example: Optional[dict] = None,
  blocks: Optional[Sequence] = None,
) -> dict:
  """What the probe and the fix arms say about concat, each as one sentence.

  'complementary': are the branches' features complementary? probe - best single branch, paired
    over seeds (its own exact sign-flip p, one declared diagnostic comparison): significantly above
    0 -> complementary; significantly below 0 -> not complementary; else, when its interval lies
    within +-margin -> not complementary beyond the margin (the two-level interval over seeds and
    test examples where per-example outputs exist, as for "redundant"; else the seeds' interval);
    otherwise undetermined.
  'training': does joint training fail? A fix arm (FIX_ARMS) that beats concat with a secondary
    Holm p < ALPHA (rule.py) and a CI of concat - fix below 0.
  """
  test, margin, lower = summary['test'], summary['margin'], summary['lower_is_better']
  per_example = per_example or {}
  out = {}
  if 'probe' in test and best in test:
    d = study_stats.paired_difference(
      test['probe'], test[best], lower, num_resamples=num_resamples, rng=rng
    )
    diff = f'{d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}], p {d.p_value:.3f}'
    low, high, interval = d.low, d.high, 'over seeds'
    if 'probe' in per_example and best in per_example:
      _, low, high = study_stats.two_level_paired_ci(
        per_example['probe'], per_example[best], blocks, lower, num_resamples=num_resamples, rng=rng
      )
      interval = 'over seeds and test examples'
    within = f'{interval} [{low:+.4f}, {high:+.4f}]'
    probe = 'a head on the frozen cnn and lstm features'
    if d.p_value < study_rule.ALPHA and d.low > 0:
      reading = f'complementary: {probe} beats the best single branch ({best}) by {diff}'
    elif d.p_value < study_rule.ALPHA and d.high < 0:
      reading = f'not complementary: {probe} is below the best single branch ({best}): {diff}'
    elif -margin <= low and high <= margin:
      reading = (
        f'not complementary beyond ±{margin:g}: {probe} is within ±{margin:g} of the best single '
        f'branch ({best}): {diff}; {within}'
      )
    else:
      reading = (
        f'complementarity undetermined: probe - best single branch ({best}) {diff}; {within} '
        f'reaches beyond ±{margin:g}'
      )
    out['complementary'] = {
      **dataclasses.asdict(d),
      'equivalence_ci': [float(low), float(high)],
      'reading': reading,
    }
  by_arm = {r['arm']: r for r in rows}
  ran = [a for a in FIX_ARMS if a in by_arm]
  if ran:
    beat = [a for a in ran if by_arm[a]['holm_p'] < study_rule.ALPHA and by_arm[a]['high'] < 0]
    if beat:
      reading = 'joint training under-uses the branches: ' + '; '.join(
        f'{a} beats concat by {-by_arm[a]["mean"]:+.4f} (Holm p {by_arm[a]["holm_p"]:.3f})'
        for a in beat
      )
    else:
      reading = f'no fix beats concat significantly (tried: {", ".join(ran)})'
    out['training'] = {'fixes': ran, 'beat_concat': beat, 'reading': reading}
  return out
