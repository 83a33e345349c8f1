"""experiments/study/analysis.py, rule.py and the reports: the declared Holm family, revisions,
roles (not positions), ablations, the controls' gate and what the probe and the fixes say."""

import json

import numpy as np
import pytest

from experiments.study import analysis
from experiments.study import conduct
from experiments.study import protocol as study_protocol
from experiments.study import report
from experiments.study import rule
from experiments.study import summary_report
from experiments.study import stats

# japanese_vowels as committed (experiments/results/study_japanese_vowels.md at d85125b, 10 seeds):
# concat - arm, mean [95% CI over seeds], exact sign-flip p = k / 2^10 (the report rounds to 4
# places), and the Holm p the report printed (Holm over all 11 comparisons).
JAPANESE_VOWELS = [
  # arm, role, mean, low, high, k (p = k / 1024), Holm p as printed
  ('cnn', 'best_single', -0.0073, -0.0105, -0.0035, 6, 0.0527),
  ('ensemble', 'ensemble', -0.0032, -0.0059, -0.0003, 56, 0.2812),
  ('cnn_wide', 'widened', -0.0086, -0.0130, -0.0038, 8, 0.0625),
  ('cnn+cnn', None, -0.0089, -0.0127, -0.0049, 4, 0.0391),
  ('lstm', None, +0.0092, +0.0024, +0.0157, 22, 0.1504),
  ('lstm_wide', None, +0.0086, +0.0005, +0.0165, 48, 0.2812),
  ('lstm+lstm', None, +0.0014, -0.0043, +0.0068, 672, 1.0),
  ('gated_matched', None, +0.0208, +0.0141, +0.0276, 2, 0.0215),
  ('projected_sum_matched', None, +0.0000, -0.0070, +0.0081, 1024, 1.0),
  ('gated', None, -0.0032, -0.0089, +0.0032, 304, 0.8906),
  ('projected_sum', None, -0.0032, -0.0057, +0.0005, 74, 0.2891),
]


def _japanese_vowels_rows():
  rows = [
    {
      'label': arm,
      'arm': arm,
      'role': role,
      'primary': role is not None,
      'mean': mean,
      'low': low,
      'high': high,
      'p_value': k / 1024,
    }
    for arm, role, mean, low, high, k, _ in JAPANESE_VOWELS
  ]
  p = [r['p_value'] for r in rows]
  families = ['primary' if r['primary'] else 'secondary' for r in rows]
  for row, own, every in zip(rows, stats.holm_by_family(p, families), stats.holm(p)):
    row['holm_p'], row['holm_p_all'] = float(own), float(every)
  return rows


def test_japanese_vowels_holm_over_all_reproduces_the_committed_report():
  rows = _japanese_vowels_rows()
  printed = [h for *_, h in JAPANESE_VOWELS]
  np.testing.assert_allclose([r['holm_p_all'] for r in rows], printed, atol=6e-5)


def test_japanese_vowels_holm_over_the_declared_family_turns_inconclusive_into_hurts():
  rows = _japanese_vowels_rows()
  primary = {r['arm']: r['holm_p'] for r in rows if r['primary']}
  # Sorted 6/1024 * 3 = 0.0176, then max(8/1024 * 2, 0.0176) = 0.0176, then 56/1024 * 1 = 0.0547.
  assert primary == pytest.approx({'cnn': 18 / 1024, 'cnn_wide': 18 / 1024, 'ensemble': 56 / 1024})
  assert round(primary['cnn'], 3) == 0.018  # The "p 0.053 -> 0.018".
  old = rule.Rule(holm_family='all', equivalence_ci='seeds')
  assert rule.verdict(rows, 0.01, old) == 'inconclusive (CI reaches beyond ±0.01)'
  assert rule.verdict(rows, 0.01, rule.RULE) == 'hurts'
  revs = rule.revisions(rows, 0.01)
  assert revs[0]['change'].startswith('Holm over all 11 reported comparisons -> over the 3 primary')
  assert (revs[0]['verdict_old'], revs[0]['verdict_new']) == (
    'inconclusive (CI reaches beyond ±0.01)',
    'hurts',
  )
  assert revs[1]['verdict_old'] == revs[1]['verdict_new'] == 'hurts'  # Significant: no change.


def test_redundant_needs_the_two_level_interval_within_the_margin():
  # Seed CI inside ±0.01, but the test set's sampling widens the two-level CI beyond it.
  row = {
    'arm': 'cnn',
    'role': 'best_single',
    'primary': True,
    'low': -0.004,
    'high': 0.005,
    'holm_p': 0.6,
    'holm_p_all': 0.9,
    'two_level_low': -0.018,
    'two_level_high': 0.02,
  }
  revs = rule.revisions([row], 0.01, unit='day')
  assert 'test days' in revs[1]['change']
  assert revs[1]['verdict_old'] == 'redundant (equivalent within ±0.01)'
  assert revs[1]['verdict_new'] == 'inconclusive (CI reaches beyond ±0.01)'
  row.update(two_level_low=-0.008, two_level_high=0.009)
  assert rule.verdict([row], 0.01) == 'redundant (equivalent within ±0.01)'
  del row['two_level_low'], row['two_level_high']
  assert rule.verdict([row], 0.01).startswith('inconclusive (no two-level CI')
  row.update(low=-0.02)  # The seed CI alone already reaches beyond the margin.
  assert rule.verdict([row], 0.01) == 'inconclusive (CI reaches beyond ±0.01)'


def test_holm_by_family_corrects_each_family_on_its_own():
  p = [0.01, 0.04, 0.03, 0.005, 0.02]
  fam = ['a', 'b', 'a', 'b', 'a']
  out = stats.holm_by_family(p, fam)
  np.testing.assert_allclose(out[[0, 2, 4]], stats.holm([0.01, 0.03, 0.02]))
  np.testing.assert_allclose(out[[1, 3]], stats.holm([0.04, 0.005]))
  with pytest.raises(ValueError, match='One family per p-value'):
    stats.holm_by_family(p, fam[:-1])


def _summary(arms, concat_gain=0.05, seeds=8, n=60, redundancy=False):
  """A synthetic accuracy study: per-example correctness per arm and seed; concat + concat_gain."""
  rng = np.random.default_rng(0)
  base = {'cnn': 0.80, 'lstm': 0.70, 'ensemble': 0.82, 'cnn_wide': 0.81, 'concat': 0.80}
  per_example = {}
  for arm in arms:
    p = base.get(arm, 0.8) + (concat_gain if arm == 'concat' else 0.0)
    per_example[arm] = (rng.random((seeds, n)) < p).astype(float)
  test = {a: list(x.mean(1)) for a, x in per_example.items()}
  trained = [a for a in arms if a != 'ensemble']
  summary = {
    'dataset': 'synthetic',
    'metric': 'accuracy',
    'lower_is_better': False,
    'margin': 0.01,
    'seeds': list(range(seeds)),
    'selection_seeds': list(range(seeds)),
    'lrs': [1e-3],
    'arms': list(arms),
    'chosen_lr': {a: 1e-3 for a in trained},
    # cnn and lstm tie on validation: the validation loss decides (lstm).
    'val_means': {f'{a}@0.001': 0.9 for a in trained},
    'val_loss_means': {f'{a}@0.001': (0.2 if a == 'lstm' else 0.3) for a in trained},
    'sizes': {'target': 100},
    'params': {a: 100 for a in trained},
    'test': test,
    'sampling_ci': {a: [[m - 0.05, m + 0.05] for m in test[a]] for a in test},
    'num_test_examples': n,
    'redundancy': [],
    'val_curves': {a: [[[1, 0.9]]] * seeds for a in trained},
    'seconds': {a: 1.0 for a in trained},
    'num_runs': len(trained) * seeds,
    'train_seconds': 1800.0 * len(trained),
    'steps': 1,
    'note': '',
    'splits': ['train', 'validation', 'test'],
    'data': 'synthetic',
  }
  if redundancy:
    summary['redundancy'] = [
      {
        'cka': 0.5,
        'cka_debiased': 0.4,
        'widths': [16, 8],
        'zeroed': [0.3, 0.6],
        'mean_ablated': [0.5, 0.7],
      }
    ] * seeds
  return summary, per_example


def test_a_control_that_was_not_run_is_never_claimed():
  # The positional bug: with the widened arm not run, rows[1:3] held the ensemble and a secondary
  # row, and a significant win over the ensemble read "beyond ensembling and capacity".
  summary, per_example = _summary(['cnn', 'lstm', 'concat', 'ensemble', 'lstm+lstm'], 0.15)
  summary['val_means']['cnn@0.001'] = 0.95  # cnn is the best single branch.
  a = analysis.analyse(summary, num_resamples=500, per_example=per_example)
  assert a['family'] == ['cnn', 'ensemble'] and a['secondary'] == ['lstm', 'lstm+lstm']
  assert a['verdict'] == 'helps, beyond ensembling (capacity control not run)'
  summary['arms'].remove('ensemble')
  a = analysis.analyse(summary, num_resamples=500, per_example=per_example)
  assert a['verdict'] == 'helps (ensembling control not run; capacity control not run)'


def test_best_single_branch_ties_are_broken_by_validation_loss():
  summary, _ = _summary(['cnn', 'lstm', 'concat'])
  assert analysis.best_single_branch(summary) == 'lstm'  # Equal accuracy, lower loss.
  del summary['val_loss_means']
  assert analysis.best_single_branch(summary) == 'cnn'  # No losses recorded: the first.


def test_report_declares_the_family_lists_revisions_and_shows_both_ablations(tmp_path):
  summary, per_example = _summary(
    ['cnn', 'lstm', 'concat', 'ensemble', 'cnn_wide'], redundancy=True
  )
  summary['analysis'] = analysis.analyse(summary, num_resamples=500, per_example=per_example)
  a = summary['analysis']
  assert a['family'] == ['lstm', 'ensemble'] and a['secondary'] == ['cnn', 'cnn_wide']
  assert all('two_level' in s for s in a['arms'].values())
  assert a['revisions'][-1]['verdict_new'] == a['verdict']
  assert a['verdict'].endswith('(capacity control not run)')  # lstm_wide was not run.
  provenance = {
    'command': 'pytest',
    'commit': 'abc',
    'dirty': False,
    'versions': {'numpy': np.__version__},
    'devices': '1 x cpu',
    'date': 'today',
  }
  text = open(report.write_dataset_report(summary, str(tmp_path), provenance)).read()
  family = 'addressed by name): best single branch (lstm), late ensemble (2 comparisons)'
  assert family in text
  assert 'Holm over all 4 reported comparisons -> over the 2 primary ones' in text
  assert '32 runs, 2.0 h of training' in text  # 4 trained arms x 8 seeds, 30 min per arm.
  assert 'CNN features mean-ablated | LSTM features mean-ablated | CNN features zeroed' not in text
  assert '| CNN features mean-ablated | CNN features zeroed | LSTM features mean-ablated |' in text
  assert 'Mean-ablation (a branch\'s features replaced by their mean) is the standard' in text
  assert '95% CI over seeds and test examples' in text
  # One rate tried: every arm is at the grid's edge, and the report says which rates to add.
  assert a['grid_edges']['concat'] == {'chosen': 1e-3, 'edge': 'only', 'next_rates': (3e-4, 3e-3)}
  assert 'concat at the only rate 0.001 (next 0.0003, 0.003)' in text
  table = open(summary_report.write_summary([summary], str(tmp_path), provenance)).read()
  first = a['revisions'][0]['verdict_old']
  # No control ran: the verdict is shown but not claimed.
  assert f'not claimed (the rule gives: {a["verdict"]}) | {first} |' in table
  assert 'No claim about the real datasets' in table


def test_grid_edges_read_every_rate_an_arm_was_run_at():
  summary, _ = _summary(['cnn', 'lstm', 'concat'])
  summary['val_means'].update({'concat@0.0003': 0.5, 'concat@0.003': 0.95, 'cnn@0.003': 0.2})
  edges = analysis.grid_edges(summary)
  assert edges['concat']['edge'] == 'largest' and edges['concat']['next_rates'] == (1e-2,)
  assert edges['cnn']['edge'] == 'smallest' and edges['cnn']['next_rates'] == (3e-4,)
  assert edges['lstm']['edge'] == 'only'


def test_the_report_names_the_rates_the_grid_extension_added(tmp_path):
  summary, per_example = _summary(['cnn', 'lstm', 'concat'])
  summary['analysis'] = analysis.analyse(summary, num_resamples=200, per_example=per_example)
  header = open(report.write_dataset_report(summary, str(tmp_path), PROVENANCE)).read()
  assert 'chosen from 0.001 by mean' in header
  summary['val_means'].update({'concat@0.003': 0.95, 'concat@0.01': 0.96, 'cnn@0.0003': 0.2})
  header = open(report.write_dataset_report(summary, str(tmp_path), PROVENANCE)).read()
  assert (
    "chosen from 0.001 (extended to 0.0003, 0.003, 0.01 where an arm chose the grid's edge)"
    in (header)
  )


PROVENANCE = {
  'command': 'pytest',
  'commit': 'abc',
  'dirty': False,
  'versions': {},
  'devices': '1 x cpu',
  'date': 'today',
}


def test_the_probe_and_a_fix_tell_complementary_from_trained_badly():
  summary, _ = _summary(['cnn', 'lstm', 'concat', 'probe', 'concat_norm'])
  test = summary['test']
  shift = np.linspace(0.08, 0.12, 8)
  test['probe'] = [v + s for v, s in zip(test['lstm'], shift)]  # Beats lstm on every seed.
  test['concat_norm'] = [
    v + s for v, s in zip(test['concat'], shift)
  ]  # Beats concat on every seed.
  a = analysis.analyse(summary, num_resamples=500)
  assert a['best_single'] == 'lstm'
  complementary, training = a['diagnosis']['complementary'], a['diagnosis']['training']
  assert complementary['reading'].startswith('complementary: ')
  assert complementary['p_value'] == pytest.approx(2 / 2**8)
  assert training['beat_concat'] == ['concat_norm'] and training['fixes'] == [
    'probe',
    'concat_norm',
  ]
  assert training['reading'].startswith('joint training under-uses the branches: concat_norm')

  # The probe within the margin of the best branch, no fix better than concat.
  test['probe'] = [v + s for v, s in zip(test['lstm'], np.linspace(-0.004, 0.004, 8))]
  test['concat_norm'] = list(test['concat'])
  a = analysis.analyse(summary, num_resamples=500)
  assert a['diagnosis']['complementary']['reading'].startswith('not complementary beyond ±0.01: ')
  assert a['diagnosis']['training']['beat_concat'] == []
  assert a['diagnosis']['training']['reading'].startswith('no fix beats concat significantly')

  # Above the best branch on 6 of 8 seeds, by less than the margin and not significantly: within
  # the margin, not "no better" (the reading said so even when the interval lay above 0).
  test['probe'] = [v + s for v, s in zip(test['lstm'], [0.004] * 6 + [-0.003] * 2)]
  reading = analysis.analyse(summary, num_resamples=500)['diagnosis']['complementary']['reading']
  assert reading.startswith('not complementary beyond ±0.01: ') and 'no better' not in reading


def test_complementarity_within_the_margin_needs_the_two_level_interval():
  # 60 test examples per seed: the probe's seed interval lies within ±0.01 of the best branch, but
  # over seeds and test examples it does not; the reading follows the two-level interval, as
  # "redundant" does.
  summary, per_example = _summary(['cnn', 'lstm', 'concat', 'probe'])
  per_example['lstm'][:, :2] = [1.0, 0.0]  # lstm right on example 0, wrong on 1, in every seed;
  per_example['probe'] = per_example['lstm'].copy()
  per_example['probe'][:, :2] = [0.0, 1.0]  # the probe the other way round: level on every seed.
  for arm in ('lstm', 'probe'):
    summary['test'][arm] = list(per_example[arm].mean(1))
  seeds_only = analysis.analyse(summary, num_resamples=500)['diagnosis']['complementary']
  both = analysis.analyse(summary, num_resamples=500, per_example=per_example)['diagnosis']
  low, high = both['complementary']['equivalence_ci']
  assert seeds_only['reading'].startswith('not complementary beyond ±0.01')
  assert (low < -0.01 or high > 0.01) and both['complementary']['reading'].startswith(
    'complementarity undetermined'
  )


def _control(name, designed, obtained):
  return {'dataset': name, 'analysis': {'designed': [designed, 'why'], 'verdict': obtained}}


def test_control_outcomes_and_the_gate():
  assert rule.control_outcome('helps', 'helps, but not beyond the control(s) ensemble') == {
    'as_designed': True,
    'holds': True,
  }
  assert rule.control_outcome('redundant', 'inconclusive (CI reaches beyond ±0.01)') == {
    'as_designed': False,
    'holds': True,
  }
  assert rule.control_outcome('redundant', 'helps')['holds'] is False
  assert rule.control_outcome('helps', 'redundant (equivalent within ±0.01)')['holds'] is False
  # A negative control that could not be assessed does not pass the gate.
  assert rule.control_outcome(
    'redundant', 'not assessed (needs the concat, cnn and lstm arms)'
  ) == {
    'as_designed': False,
    'holds': False,
  }

  positive = _control('controls/both', 'helps', 'helps, beyond ensembling')
  negative = _control('controls/xor', 'redundant', 'redundant (equivalent within ±0.01)')
  assert rule.controls_gate([positive, negative])[0] is True
  assert rule.controls_gate([])[0] is False
  assert rule.controls_gate([negative])[1].startswith('no positive control ran')
  failed = _control('controls/xor', 'redundant', 'helps')
  ok, why = rule.controls_gate([positive, failed])
  assert not ok and 'controls/xor' in why


def test_summary_claims_the_real_verdicts_only_when_the_controls_hold(tmp_path):
  summary, per_example = _summary(['cnn', 'lstm', 'concat', 'ensemble'])
  summary['analysis'] = analysis.analyse(summary, num_resamples=500, per_example=per_example)
  verdict = summary['analysis']['verdict']

  def control(name, designed, obtained):
    c, _ = _summary(['cnn', 'lstm', 'concat'])
    c['dataset'] = name
    c['analysis'] = analysis.analyse(c, num_resamples=200)
    c['analysis'].update(designed=[designed, 'why'], verdict=obtained)
    return c

  both = control('controls/both', 'helps', 'helps')
  xor = control('controls/xor', 'redundant', 'redundant (equivalent within ±0.01)')

  def written_summary():
    with open(summary_report.write_summary([summary], str(tmp_path), PROVENANCE, [both, xor])) as f:
      return f.read()

  text = written_summary()
  assert 'The verdicts below are claimed' in text and f'| **{verdict}** |' in text
  assert '| [controls/both](study_controls_both.md) | helps: why | **helps** | yes |' in text
  # The wall time of the whole study: per dataset (3 trained arms x 8 seeds) and in all.
  assert '| synthetic | 24 | 1.50 |' in text and '| controls/both | 24 | 1.50 |' in text
  assert '| **all** | 72 | 4.50 |' in text
  # A summary.json written before the count: its cells are empty and the total says what it counts.
  del xor['num_runs'], xor['train_seconds']
  text = written_summary()
  assert '| controls/xor | – | – |' in text and '| **all** counted | 48 | 3.00 |' in text

  xor['analysis']['verdict'] = 'helps'
  text = written_summary()
  assert 'No claim about the real datasets' in text and 'controls/xor' in text
  assert f'not claimed (the rule gives: {verdict})' in text
  assert '| **helps** | **no** |' in text


def test_earlier_summaries_count_only_the_same_build_under_the_current_rule(tmp_path):
  summary, per_example = _summary(['cnn', 'lstm', 'concat'])  # concat + 0.05: helps.
  summary['analysis'] = analysis.analyse(summary, num_resamples=200, per_example=per_example)
  summary['analysis']['designed'] = ['helps', 'why']
  assert summary['analysis']['verdict'].startswith('helps')
  summary['analysis']['verdict'] = 'redundant (a rule since revised)'  # As an older file says.
  for name, data in [('controls/both', 'controls/both'), ('controls/xor', 'controls/xor_tiny')]:
    (tmp_path / name).mkdir(parents=True)
    (tmp_path / name / 'summary.json').write_text(
      json.dumps({**summary, 'dataset': name, 'data': data})
    )
  protocol = study_protocol.Protocol(str(tmp_path), str(tmp_path / 'results'), ['bbc_news'])

  [both] = conduct.earlier_summaries(protocol)  # The tiny xor build is not this study's.
  assert both['data'] == 'controls/both' and both['analysis']['verdict'].startswith('helps')
  protocol.builder_config = 'tiny'
  assert [s['data'] for s in conduct.earlier_summaries(protocol)] == ['controls/xor_tiny']

  # A real dataset studied in an earlier sitting is summarised with the one studied now.
  real = {**summary, 'dataset': 'weather_stations', 'data': 'weather_stations'}
  real['analysis'] = {k: v for k, v in summary['analysis'].items() if k != 'designed'}
  (tmp_path / 'weather_stations').mkdir()
  (tmp_path / 'weather_stations' / 'summary.json').write_text(json.dumps(real))
  protocol.builder_config = ''
  earlier = conduct.earlier_summaries(protocol)
  assert [s['dataset'] for s in earlier] == ['controls/both', 'weather_stations']
  now = {**real, 'dataset': 'bbc_news', 'data': 'bbc_news'}
  with open(
    summary_report.write_summary([now], str(tmp_path / 'results'), PROVENANCE, earlier)
  ) as f:
    text = f.read()
  assert (
    'an earlier invocation in the same study dir (each report names its own command): '
    'controls/both, weather_stations.' in text
  )
  rows = [line for line in text.splitlines() if line.startswith('| [')]
  assert [r.split(']')[0] for r in rows] == [
    '| [controls/both',
    '| [bbc_news',  # In the study's order of datasets (grids.DATASETS).
    '| [weather_stations',
  ]
  protocol.datasets = ['weather_stations']  # Studied now: its own summary, not the file's.
  assert [s['dataset'] for s in conduct.earlier_summaries(protocol)] == ['controls/both']
