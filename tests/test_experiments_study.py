"""experiments/study end to end on tiny data: runs, selection, test outputs, reports, resumption."""

import dataclasses
import hashlib
import json
import time

import numpy as np
import pytest

from configs import sensor
from experiments import kernel_check
from experiments.study import __main__ as study_main
from experiments.study import arms as study_arms
from experiments.study import conduct
from experiments.study import outputs as study_outputs
from experiments.study import progress
from experiments.study import protocol as study
from experiments.study import report as study_report
from experiments.study import runs as study_runs
from hybrid_jax import train
from hybrid_jax.data import datasets
from hybrid_jax.data import pipeline
from hybrid_jax.errors import CheckpointError
from hybrid_jax.errors import ConfigError


def tiny_protocol(study, tiny_data_dir, tmp_path, **kwargs):
  fields = dict(
    study_dir=str(tmp_path / 'runs'),
    results_dir=str(tmp_path / 'results'),
    datasets=['weather_stations'],
    arms=['cnn', 'lstm', 'concat', 'ensemble'],
    seeds=[0, 1],
    lrs=[1e-3, 3e-3],
    evals_per_run=2,
    config_variant='smoke',
    builder_config='tiny',
    data_dir=tiny_data_dir,
    num_resamples=500,
    command='pytest',
    extend_grid=False,
  )
  return study.Protocol(**{**fields, **kwargs})


def test_an_edge_rate_extends_the_grid_outward(tiny_data_dir, tmp_path):
  protocol = tiny_protocol(
    study, tiny_data_dir, tmp_path, arms=['cnn'], seeds=[0], lrs=[1e-3], extend_grid=True
  )
  [summary] = conduct.run_study(protocol)
  tried = sorted(float(k.rpartition('@')[2]) for k in summary['val_means'])
  # A one-rate grid is an edge on both sides: its neighbours (x sqrt(10), rounded to the 1-3 grid)
  # are run, and then whichever edge wins, up to twice.
  assert tried[:3] != [1e-3] and 1e-3 in tried and len(tried) >= 3
  assert summary['chosen_lr']['cnn'] in tried


def test_fix_arms_and_the_probe_run_end_to_end(tiny_data_dir, tmp_path):
  arms = ['cnn', 'lstm', 'concat', 'concat_norm', 'concat_aux', 'concat_branch_dropout', 'probe']
  protocol = tiny_protocol(study, tiny_data_dir, tmp_path, arms=arms, seeds=[0], lrs=[1e-3])
  [summary] = conduct.run_study(protocol)
  assert set(summary['test']) == set(arms)
  probe = json.loads(
    (tmp_path / 'runs' / 'weather_stations' / 'probe' / 'seed0' / 'test.json').read_text()
  )
  assert probe['metric'] == summary['test']['probe'][0] and probe['lr'] in (1e-3, 1e-2, 1e-1)
  report = (tmp_path / 'results' / 'study_weather_stations.md').read_text()
  assert 'probe' in report and 'concat_norm' in report


def test_study_end_to_end_then_resumes_without_training(tiny_data_dir, tmp_path, monkeypatch):
  protocol = tiny_protocol(study, tiny_data_dir, tmp_path, selection_seeds=1)
  [summary] = conduct.run_study(protocol)

  runs = tmp_path / 'runs' / 'weather_stations'
  for arm, chosen in summary['chosen_lr'].items():
    # Rates are chosen on seed 0 (selection_seeds=1); seed 1 runs only at the chosen rate.
    assert sorted(p.name for p in (runs / arm).iterdir()) == sorted(
      ['lr0.001_seed0', 'lr0.003_seed0', f'lr{chosen:g}_seed1']
    )
    for run in (runs / arm).iterdir():
      result = json.loads((run / 'result.json').read_text())
      assert (
        result['best_step'] in (2, 4)
        and result['val_best'] == dict(result['val_curve'])[result['best_step']]
      )
      steps = sorted(int(p.name) for p in (run / 'checkpoints').iterdir() if p.name.isdigit())
      assert steps == [result['best_step']]  # Only the best checkpoint is kept.
    # Selection on validation only: the chosen rate has the best validation MAE on seed 0.
    val = {
      x: json.loads((runs / arm / f'lr{x:g}_seed0' / 'result.json').read_text())['val_best']
      for x in protocol.lrs
    }
    assert val[chosen] == min(val.values()) == summary['val_means'][f'{arm}@{chosen:g}']
    # The test split is evaluated only at the chosen rate.
    for x in protocol.lrs:
      assert (runs / arm / f'lr{x:g}_seed0' / 'test.json').exists() == (x == chosen)

  # Per-example test outputs reproduce the train loop's own evaluation of the kept checkpoint.
  workdir = runs / 'concat' / f'lr{summary["chosen_lr"]["concat"]:g}_seed1'
  config = json.loads((workdir / 'config.json').read_text())
  import ml_collections  # pylint: disable=g-import-not-at-top

  config = ml_collections.ConfigDict(config)
  config.dataset.eval_split = 'test'
  test = json.loads((workdir / 'test.json').read_text())
  reference = train.evaluate(config, str(workdir), checkpoint=test['step'])
  assert test['metric'] == pytest.approx(reference['mae_original_units'], rel=1e-5)
  assert summary['test']['concat'][1] == test['metric']
  # experiments.kernel_check reads the run back and re-evaluates it (here on the same kernels).
  check = kernel_check.check_run(str(workdir))
  assert check['max_abs_difference'] == 0.0
  assert check['metric_now'] == check['metric_saved'] == test['metric']

  # The ensemble averages the members' aligned predictions.
  members = [
    study_outputs.load_outputs(str(runs / arm / f'lr{summary["chosen_lr"][arm]:g}_seed0'))
    for arm in ('cnn', 'lstm')
  ]
  expected = (
    np.mean(
      np.abs((members[0]['prediction'] + members[1]['prediction']) / 2 - members[0]['target'])
    )
    * members[0]['scale']
  )
  assert summary['test']['ensemble'][0] == pytest.approx(expected)

  analysis = summary['analysis']
  assert analysis['best_single'] in ('cnn', 'lstm')
  assert [r['arm'] for r in analysis['comparisons']][:2] == [analysis['best_single'], 'ensemble']
  assert all(r['holm_p'] >= r['p_value'] for r in analysis['comparisons'])
  red = analysis['redundancy']
  assert red['widths'] == [12 * 64, 32] and len(red['cka']) == 2
  assert all(0 <= c <= 1 for c in red['cka'])

  results = tmp_path / 'results'
  report = (results / 'study_weather_stations.md').read_text()
  for needle in (
    'Command: `pytest`',
    'late ensemble',
    'Holm p',
    'linear CKA',
    'Verdict',
    'study_weather_stations_forest.png',
    'Decision rule',
    'Arms of the protocol not run here: gated,',
  ):
    assert needle in report
  for png in (
    'study_weather_stations_forest.png',
    'study_weather_stations_val_curves.png',
    'study_summary_forest.png',
  ):
    assert (results / png).read_bytes()[:4] == b'\x89PNG'
  assert analysis['verdict'] in (results / 'study_summary.md').read_text()
  assert '](study_summary_forest.png)' in (results / 'study_summary.md').read_text()

  # Resumption: a second invocation reuses every run and trains nothing.
  def no_training(*args, **kwargs):
    raise AssertionError('a finished run was trained again')

  monkeypatch.setattr(study_runs.train, 'train_and_evaluate', no_training)
  [again] = conduct.run_study(protocol)
  assert again['test'] == summary['test'] and again['chosen_lr'] == summary['chosen_lr']
  monkeypatch.undo()

  # A run interrupted before it recorded its result restarts cleanly and ends the same.
  lost = runs / 'lstm' / f'lr{summary["chosen_lr"]["lstm"]:g}_seed1'
  before = json.loads((lost / 'result.json').read_text())
  (lost / 'result.json').unlink()
  for step_dir in (lost / 'checkpoints').iterdir():
    if step_dir.is_dir():
      for p in sorted(step_dir.rglob('*'), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
      step_dir.rmdir()
  # What the interrupted sitting recorded of its time: the run's seconds count it too.
  (lost / study_runs.CLOCK_FILE).write_text(json.dumps({'seconds': 1000.0}))
  [third] = conduct.run_study(protocol)
  after = json.loads((lost / 'result.json').read_text())
  assert (after['best_step'], after['val_best']) == (before['best_step'], before['val_best'])
  assert 1000.0 < after['seconds'] < 1000.0 + 10 * before['seconds'] + 60
  assert not (lost / study_runs.CLOCK_FILE).exists()  # result.json holds the total now.
  assert third['test'] == summary['test']


def _committed_records():
  """What `git add` takes of a study dir under experiments/results/study_runs/.gitignore."""
  ignore = study.ROOT + '/experiments/results/study_runs/.gitignore'
  with open(ignore, encoding='utf-8') as f:
    kept = {line[1:].strip() for line in f if line.startswith('!') and '/' not in line}
  return kept - {'.gitignore'}


def test_a_study_tested_when_trained_resumes_from_its_committed_records(
  tiny_data_dir, tmp_path, monkeypatch
):
  # A study longer than one machine's stay: the session ends after every run trained but before
  # the test phase, and the next machine has only the records committed (no checkpoint).
  protocol = tiny_protocol(
    study, tiny_data_dir, tmp_path, selection_seeds=1, test_when_trained=True
  )

  def session_ends(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(conduct, '_test_phase', session_ends)
  with pytest.raises(KeyboardInterrupt):
    conduct.run_study(protocol)
  monkeypatch.undo()
  runs = tmp_path / 'runs' / 'weather_stations'
  tested = sorted(p.parent.relative_to(runs) for p in runs.rglob('test.json'))
  trained = sorted(p.parent.relative_to(runs) for p in runs.rglob('result.json'))
  assert tested == trained and len(trained) == 9  # 3 arms x (2 rates on seed 0 + seed 1).
  kept = _committed_records()
  for path in sorted(runs.rglob('*'), reverse=True):
    if path.is_file() and path.name not in kept:
      path.unlink()
    elif path.is_dir() and not any(path.iterdir()):
      path.rmdir()
  assert not list(runs.rglob('checkpoints'))

  def no_training(*args, **kwargs):
    raise AssertionError('a finished run was trained again')

  monkeypatch.setattr(study_runs.train, 'train_and_evaluate', no_training)
  [summary] = conduct.run_study(protocol)
  monkeypatch.undo()
  # The same selection and test metrics as a study that tests only the chosen rate's runs.
  reference = tiny_protocol(study, tiny_data_dir, tmp_path / 'reference', selection_seeds=1)
  [expected] = conduct.run_study(reference)
  assert summary['chosen_lr'] == expected['chosen_lr'] and summary['test'] == expected['test']
  assert summary['test_when_trained'] and not expected['test_when_trained']
  report = (tmp_path / 'results' / 'study_weather_stations.md').read_text()
  assert 'every run tested once, when trained' in report


def test_a_runs_clock_records_each_sitting_and_adds_them_up(tmp_path, monkeypatch):
  monkeypatch.setattr(study_runs, 'CLOCK_RECORD_S', 0.02)
  record = tmp_path / study_runs.CLOCK_FILE
  with study_runs.clock(str(tmp_path)) as seconds:
    deadline = time.time() + 60
    while not record.exists() and time.time() < deadline:  # The first record, every 0.02 s.
      time.sleep(0.02)
    recorded = json.loads(record.read_text())['seconds']  # What a kill now would leave.
    assert 0 < recorded <= seconds()
    time.sleep(0.1)
  first = json.loads(record.read_text())['seconds']  # The sitting's last record, at its end.
  assert recorded + 0.1 <= first <= seconds()
  with study_runs.clock(str(tmp_path)) as seconds:  # The next sitting starts from it.
    assert first <= seconds() < first + 30
    time.sleep(0.1)
  assert seconds() >= first + 0.1
  assert json.loads(record.read_text())['seconds'] >= first + 0.1


def test_a_run_dir_of_another_config_stops_the_study(tiny_data_dir, tmp_path):
  protocol = tiny_protocol(study, tiny_data_dir, tmp_path)
  base = study.base_config('weather_stations', protocol)
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'result.json').write_text(json.dumps({'fingerprint': 'something else'}))
  with pytest.raises(ConfigError, match='another config'):
    study_runs.train_run(base, str(workdir))


def test_an_interrupted_run_resumes_only_under_its_own_config(tiny_data_dir, tmp_path):
  # A study killed during a run, run again with another --steps, --evals_per_run or
  # --validation_split: train resumes under these changes (config_validation.MAY_CHANGE_ON_RESUME),
  # which would give one result from two configs; the study refuses them in one line instead.
  protocol = tiny_protocol(study, tiny_data_dir, tmp_path)
  base = study.base_config('weather_stations', protocol)
  changed = [
    study.base_config('weather_stations', dataclasses.replace(protocol, **fields))
    for fields in (
      {'steps': {'*': 2 * base.num_train_steps}},
      {'evals_per_run': 1},
      {'validation_split': 'train[80%:]'},
    )
  ]
  workdir = tmp_path / 'run'
  finished = study_runs.train_run(base, str(workdir))
  # A run dir of this code records its run's fingerprint; one of older code has only config.json.
  for older_code in (False, True):
    (workdir / 'result.json').unlink()  # Killed after its last checkpoint, before its result.
    if older_code:
      (workdir / study_runs.FINGERPRINT_FILE).unlink()
    held = {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()}
    for config in changed:
      with pytest.raises(ConfigError, match='holds an interrupted run of another config') as error:
        study_runs.train_run(config, str(workdir))
      assert str(workdir) in str(error.value) and '\n' not in str(error.value)
      assert {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()} == held
    resumed = study_runs.train_run(base, str(workdir))  # Its own config resumes it.
    for key in ('fingerprint', 'best_step', 'val_best'):
      assert resumed[key] == finished[key]
    assert json.loads((workdir / study_runs.FINGERPRINT_FILE).read_text()) == {
      'fingerprint': finished['fingerprint']
    }


def test_a_run_restarted_from_scratch_keeps_its_fingerprint_record(tmp_path, monkeypatch):
  config = sensor.get_config()
  workdir = tmp_path / 'run'
  records = []

  def train_and_evaluate(config, workdir):
    records.append(study_runs.read_json(f'{workdir}/{study_runs.FINGERPRINT_FILE}'))
    if len(records) == 1:  # Accepted (as train does), then its checkpoint cannot be restored.
      train.make_workdir(workdir)
      raise CheckpointError('unusable checkpoint')

  monkeypatch.setattr(study_runs.train, 'train_and_evaluate', train_and_evaluate)
  monkeypatch.setattr(study_runs, 'write_result', lambda *args: {'best_step': None})
  study_runs.train_run(config, str(workdir))
  assert records == [{'fingerprint': study_runs.fingerprint(config)}] * 2


def test_the_arms_table_says_which_way_a_matched_arm_misses_concats_size():
  arms = ['concat', 'cnn_wide', 'lstm_wide', 'gated_matched']
  per_arm = {'mean': 0.9, 'low': 0.8, 'high': 1.0, 'sd': 0.1, 'sampling_half_width': 0.05}
  summary = {
    'analysis': {'arms': {arm: per_arm for arm in arms}},
    'metric': 'accuracy',
    'lower_is_better': False,
    'arms': arms,
    'sizes': {'target': 10_000},
    # cnn_wide above concat's size, lstm_wide below it, gated_matched within the tolerance.
    'params': {'concat': 10_000, 'cnn_wide': 12_500, 'lstm_wide': 8_000, 'gated_matched': 10_500},
    'chosen_lr': {arm: 1e-3 for arm in arms},
    'val_means': {},
    'seconds': {},
  }
  # The table's rows follow its title, blank line, header and rule: one per arm, in order.
  rows = dict(zip(arms, study_report._arms_section(summary)[4:], strict=False))
  assert "| 12,500 (not matched: 25% more than concat's 10,000) |" in rows['cnn_wide']
  assert "| 8,000 (not matched: 20% fewer than concat's 10,000) |" in rows['lstm_wide']
  assert 'not matched' not in rows['gated_matched'] + rows['concat']


def test_a_selected_run_without_its_checkpoint_or_test_is_one_line(tiny_data_dir, tmp_path):
  # E.g. a study dir brought back from another machine without its checkpoints: the test cannot be
  # evaluated, and the message says to delete the run so that the study trains it again.
  protocol = tiny_protocol(study, tiny_data_dir, tmp_path)
  base = study.base_config('weather_stations', protocol)
  workdir = tmp_path / 'run'
  workdir.mkdir()
  result = {'fingerprint': study_runs.fingerprint(base), 'best_step': 4}
  (workdir / 'result.json').write_text(json.dumps(result))
  with pytest.raises(CheckpointError, match=r'kept checkpoint \(step 4\) is gone.*delete that run'):
    study_outputs.test_run(base, str(workdir), result, redundancy=False)
  assert (workdir / 'result.json').exists()  # Nothing deleted.


def test_train_order_depends_only_on_the_seed(tiny_data_dir):
  """Paired seeds: every arm (and learning rate) of one seed trains on the same batches."""
  protocol = study.Protocol(
    study_dir='unused',
    results_dir='unused',
    datasets=['bbc_news'],
    config_variant='smoke',
    builder_config='tiny',
    data_dir=tiny_data_dir,
  )
  base = study.base_config('bbc_news', protocol)
  sizes = {'cnn_width': 7, 'lstm_units': 5, 'gated_dim': 3, 'projected_sum_dim': 3}

  def first_batches(arm, seed, lr):
    config = study_arms.ARMS[arm].configure(base, sizes)
    config.update(seed=seed, learning_rate=lr)
    it = pipeline.create_train_iterator(datasets.resolve(config), process_index=0, process_count=1)
    return [next(it)['tokens'] for _ in range(6)]  # More than one epoch of the tiny split.

  reference = first_batches('concat', 0, 1e-3)
  for arm, lr in (('cnn', 1e-3), ('lstm_wide', 3e-3), ('cnn+cnn', 3e-4)):
    np.testing.assert_array_equal(first_batches(arm, 0, lr), reference)
  assert not all(np.array_equal(a, b) for a, b in zip(first_batches('concat', 1, 1e-3), reference))


def test_flags_map_onto_the_protocol():
  from absl import flags  # pylint: disable=g-import-not-at-top

  values = flags.FlagValues()
  study_main.define_flags(values)
  values(
    [
      'study.py',
      '--datasets=bbc_news',
      '--seeds=3',
      '--lrs=1e-3,3e-3',
      '--steps=bbc_news=500',
      '--novalidation_from_train',
    ]
  )
  protocol = study_main.protocol_from_flags(values, ['experiments/study.py', '--seeds=3'])
  assert protocol.seeds == [0, 1, 2] and protocol.lrs == [1e-3, 3e-3]
  assert protocol.steps == {'bbc_news': 500}
  assert (protocol.train_split, protocol.validation_split) == ('train', 'validation')
  values(['study.py', '--seeds=4,7', '--validation_from_train'])
  protocol = study_main.protocol_from_flags(values, ['study.py'])
  assert protocol.seeds == [4, 7] and protocol.validation_split == 'train[90%:]'
  assert (protocol.population, protocol.population_memory_gb) == ('auto', 4.0)
  values(['study.py', '--population=on', '--population_memory_gb=0.5'])
  protocol = study_main.protocol_from_flags(values, ['study.py'])
  assert (protocol.population, protocol.population_memory_gb) == ('on', 0.5)
  assert protocol.test_when_trained is None  # Each dataset's own default.
  values(['study.py', '--notest_when_trained'])
  assert study_main.protocol_from_flags(values, ['study.py']).test_when_trained is False
  values(['study.py', '--steps=bbc_news'])
  with pytest.raises(ConfigError, match='dataset=N'):
    study_main.protocol_from_flags(values, ['study.py'])


def test_plan_counts_the_runs_of_the_grid(tmp_path):
  protocol = study.Protocol(
    study_dir=str(tmp_path),
    results_dir=str(tmp_path),
    datasets=['weather_stations'],
    arms=['cnn', 'lstm', 'concat', 'ensemble'],
    seeds=[0, 1, 2],
    lrs=[1e-3, 3e-3],
    selection_seeds=1,
  )
  # 3 trained arms x (2 rates x 1 selection seed + 2 more seeds at the chosen rate).
  assert '= 12 runs' in progress.plan(protocol) and '0 finished' in progress.plan(protocol)
  protocol.selection_seeds = 3  # Every seed at every rate.
  assert '= 18 runs' in progress.plan(protocol)
  protocol.selection_seeds = None  # The dataset's default: rates chosen on seeds 0 and 1.
  assert '= 15 runs' in progress.plan(protocol)
  # Finished runs: a table per arm and rate of their best validation metric, before any report.
  for seed, (value, best_step, tested) in enumerate([(3.5, 1_000, True), (3.7, 400, False)]):
    run = tmp_path / 'weather_stations' / 'lstm' / f'lr0.003_seed{seed}'
    run.mkdir(parents=True)
    (run / 'result.json').write_text(json.dumps({'val_best': value, 'best_step': best_step}))
    if tested:
      (run / 'test.json').write_text('{}')
  assert '2 finished' in progress.plan(protocol)
  assert '| lstm | 0.003 | 2 | 3.6000 | 3.5000 | 3.7000 | 1 | 0 | 1 |' in progress.plan(protocol)


def test_a_control_is_studied_and_reports_its_designed_verdict(tiny_data_dir, tmp_path):
  # 'controls/both' is a study dataset of its own; builder_config 'tiny' reads 'controls/both_tiny'.
  arms = ['cnn', 'lstm', 'concat', 'ensemble', 'probe']
  protocol = tiny_protocol(
    study, tiny_data_dir, tmp_path, datasets=['controls/both'], arms=arms, seeds=[0, 1], lrs=[1e-3]
  )
  [summary] = conduct.run_study(protocol)
  assert summary['data'] == 'controls/both_tiny'
  assert summary['designed_verdict'][0] == 'helps'
  assert (
    tmp_path / 'runs' / 'controls' / 'both' / 'cnn' / 'lr0.001_seed0' / 'result.json'
  ).exists()
  report = (tmp_path / 'results' / 'study_controls_both.md').read_text()
  assert 'A control: designed to give **helps**' in report
  assert (tmp_path / 'results' / 'study_controls_both_forest.png').exists()
  assert 'probe - best single branch (' in report  # The probe's reading.
  # The controls alone: their own summary, which leaves a datasets' summary in place.
  assert not (tmp_path / 'results' / 'study_summary.md').exists()
  summary_md = (tmp_path / 'results' / 'study_controls_summary.md').read_text()
  assert '## The controls (known verdicts)' in summary_md
  assert '[controls/both](study_controls_both.md)' in summary_md

  # A later study of a real dataset in the same study_dir is judged against those controls.
  later = tiny_protocol(study, tiny_data_dir, tmp_path, arms=['cnn', 'lstm', 'concat'], seeds=[0])
  conduct.run_study(later)
  summary_md = (tmp_path / 'results' / 'study_summary.md').read_text()
  assert '[controls/both](study_controls_both.md)' in summary_md
  assert '[weather_stations](study_weather_stations.md)' in summary_md


def test_an_empty_population_keeps_a_runs_fingerprint():
  # Runs finished before config.population existed are reused: an empty one is left out.
  config = sensor.get_config()
  before = sensor.get_config()
  del before['population']
  old = hashlib.sha256(before.to_json_best_effort(sort_keys=True).encode()).hexdigest()[:16]
  assert study_runs.fingerprint(config) == old
  config.population.seeds = '0,1'
  assert study_runs.fingerprint(config) != old


def test_populations_train_the_runs_that_one_after_another_trains(tiny_data_dir, tmp_path):
  arms = ['cnn', 'concat']
  kwargs = dict(arms=arms, seeds=[0, 1, 2], selection_seeds=2)
  grouped = tiny_protocol(study, tiny_data_dir, tmp_path / 'on', population='on', **kwargs)
  alone = tiny_protocol(study, tiny_data_dir, tmp_path / 'off', population='off', **kwargs)
  [on], [off] = conduct.run_study(grouped), conduct.run_study(alone)
  assert on['chosen_lr'] == off['chosen_lr']
  for arm in arms:
    names = sorted(p.name for p in (tmp_path / 'on' / 'runs' / 'weather_stations' / arm).iterdir())
    assert names == sorted(
      p.name for p in (tmp_path / 'off' / 'runs' / 'weather_stations' / arm).iterdir()
    )  # Every member moved to its run's dir; no population dir left.
    for name in names:
      a, b = (
        json.loads(
          (tmp_path / m / 'runs' / 'weather_stations' / arm / name / 'result.json').read_text()
        )
        for m in ('on', 'off')
      )
      assert a['fingerprint'] == b['fingerprint'] and a['best_step'] == b['best_step']
      np.testing.assert_allclose(a['val_best'], b['val_best'], rtol=1e-4)
    np.testing.assert_allclose(on['test'][arm], off['test'][arm], rtol=1e-4)


def test_a_population_refuses_a_run_dir_holding_an_interrupted_run_of_another_config(
  tiny_data_dir, tmp_path
):
  from experiments.study import populations  # pylint: disable=g-import-not-at-top

  base = study.base_config('weather_stations', tiny_protocol(study, tiny_data_dir, tmp_path))
  workdir = tmp_path / 'runs' / 'lr0.001_seed0'
  workdir.mkdir(parents=True)
  (workdir / 'config.json').write_text(base.to_json_best_effort())  # Interrupted: no result.json.
  (workdir / study_runs.FINGERPRINT_FILE).write_text(json.dumps({'fingerprint': 'another'}))
  held = {p.name: p.read_bytes() for p in workdir.iterdir()}
  with pytest.raises(ConfigError, match='holds an interrupted run of another config'):
    populations.train_runs(base, {(1e-3, 0): str(workdir)}, 'best', 2**30)
  assert {p.name: p.read_bytes() for p in workdir.iterdir()} == held  # Nothing removed.


def test_a_population_plan_covers_the_pending_runs_within_the_budget():
  from experiments.study import populations  # pylint: disable=g-import-not-at-top

  pending = [(lr, s) for lr in (1e-3, 3e-3) for s in (0, 1, 2)] + [(1e-2, 0)]
  for max_members in (1, 2, 4, 100):
    plan = populations.plan(pending, max_members)
    covered = [(lr, s) for seeds, rates in plan for lr in rates for s in seeds]
    assert sorted(covered) == sorted(pending)  # Each pending run once, nothing else.
    assert all(len(seeds) * len(rates) <= max_members for seeds, rates in plan)
  assert populations.plan(pending, 100) == [([0, 1, 2], [1e-3, 3e-3]), ([0], [1e-2])]


def test_the_rate_is_chosen_among_every_rate_the_grid_extension_ran(
  tiny_data_dir, tmp_path, monkeypatch
):
  # Validation improves with the rate, so every extension goes upward; the rate chosen must be the
  # largest one run (a rate run by the last extension and then ignored was the bug).
  trained, tested = [], []

  def fake_train_run(config, workdir, keep='best'):
    del workdir, keep
    trained.append(config.learning_rate)
    return {
      'val_best': 1.0 / config.learning_rate,
      'val_loss_best': 1.0,
      'best_step': 4,
      'seconds': 0.0,
      'val_curve': [[4, 1.0 / config.learning_rate]],
      'diverged': None,
    }

  class Chosen(Exception):
    pass

  def fake_test_run(config, *args, **kwargs):
    del args, kwargs
    tested.append(config.learning_rate)
    raise Chosen

  monkeypatch.setattr(study_runs, 'train_run', fake_train_run)
  monkeypatch.setattr(study_outputs, 'test_run', fake_test_run)
  protocol = tiny_protocol(
    study, tiny_data_dir, tmp_path, arms=['cnn'], seeds=[0], lrs=[1e-3, 3e-3], extend_grid=True
  )
  with pytest.raises(Chosen):
    conduct.run_study(protocol)
  assert sorted(set(trained)) == [1e-3, 3e-3, 1e-2, 3e-2]  # The grid and two extensions.
  assert tested == [max(trained)]
