"""The study's decision rule, declared in advance, and its revisions: the verdict of one dataset
from its comparisons (`verdict`), each protocol change with the verdict before and after it
(`revisions`), and the controls' gate on claiming the real datasets' verdicts (`controls_gate`).

  verdict(analysis['comparisons'], margin)        # the current rule (RULE)
  verdict(rows, margin, FIRST_RULE)               # the rule the first reports used
"""

import dataclasses
from typing import Sequence

ALPHA = 0.05
DECISION_RULE = """\
Decision rule (declared before any study result was seen, then revised: each dataset's report
lists the revisions, each with the verdict under the rule before and after it). Let B be the
better single branch (cnn only or lstm only) by mean validation metric at its chosen learning rate
(ties: lower validation loss), and d = concat - B on test, per seed (oriented so that d > 0 means
concat is better), with its 95% bootstrap CI over seeds and its Holm-adjusted exact sign-flip
p-value (over seeds). Holm runs over the declared family of primary comparisons (concat - B,
concat - late ensemble, concat - widened B; those whose arm was run); the secondary comparisons
get their own Holm correction and do not enter the verdict. delta is the dataset's equivalence
margin (in the metric's units).
- **helps**: Holm p < 0.05 and the CI lies above 0. It helps *beyond ensembling* (*capacity*)
  when, in addition, concat - late ensemble (concat - widened B) has Holm p < 0.05 and a CI above
  0; a control that does at least as well is named, and a control that was not run is said to be
  not run.
- **hurts**: Holm p < 0.05 and the CI lies below 0.
- **redundant**: not significant (neither of the two above), and the two-level 95% CI of d (over
  seeds and test examples, or blocks of examples where neighbours overlap: the interval a new test
  set would also fall in) lies within [-delta, +delta].
- **inconclusive**: otherwise (not significant, and the CI reaches beyond +-delta, or there is no
  two-level CI: fewer than 2 seeds, or no per-example test outputs).
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
        return 'inconclusive (no two-level CI: fewer than 2 seeds or no per-example outputs)'
      low, high = main['low'], main['high']
  if -margin <= low and high <= margin:
    return f'redundant (equivalent within ±{margin:g})'
  return f'inconclusive (CI reaches beyond ±{margin:g})'


def control_outcome(designed: str, obtained: str) -> dict:
  """How a control's verdict compares with the one it was designed to give.

  'as_designed': the verdict's first word is the designed one ('helps', 'redundant', ...).
  'holds': what the summary's gate needs: a positive control (designed 'helps') says helps, a
    negative one does not; a control whose verdict could not be assessed never holds.
  """
  word = obtained.split()[0].strip(',') if obtained else ''
  positive = designed == 'helps'
  assessed = bool(word) and not obtained.startswith('not assessed')
  return {'as_designed': word == designed, 'holds': assessed and (word == 'helps') == positive}


def controls_gate(summaries: Sequence[dict]) -> tuple[bool, str]:
  """(the real datasets' verdicts may be claimed, why): only when at least one positive control
  ran and says helps and no negative control says helps (`control_outcome`'s 'holds')."""
  controls = [s for s in summaries if s['analysis'].get('designed')]
  if not controls:
    return False, (
      'no control was run with these datasets (python -m experiments.study '
      '--datasets=controls/both,...): the verdicts below are not backed by a test of the instrument'
    )
  failed = [
    s['dataset']
    for s in controls
    if not control_outcome(s['analysis']['designed'][0], s['analysis']['verdict'])['holds']
  ]
  positive = [s['dataset'] for s in controls if s['analysis']['designed'][0] == 'helps']
  if failed:
    return False, f'the control(s) {", ".join(failed)} did not give their designed verdict'
  if not positive:
    return False, 'no positive control ran: the instrument was not shown able to say "helps"'
  return True, (
    f'the instrument can detect a benefit: the positive control(s) {", ".join(positive)} say '
    'helps, and no negative control does'
  )
