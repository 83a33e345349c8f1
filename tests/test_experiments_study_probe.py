"""The probe arm's record is reused only when it was made from the same member runs."""

import json

import pytest

from experiments.study import outputs


class _Remade(Exception):
  """Raised instead of predicting: the probe would be made again."""


def _member(tmp_path, arm, fingerprint):
  run = tmp_path / arm / 'lr0.001_seed0'
  run.mkdir(parents=True)
  (run / 'result.json').write_text(json.dumps({'fingerprint': fingerprint}))
  return run


def test_a_probe_is_remade_when_a_member_run_changed(tmp_path, monkeypatch):
  def remade(*args, **kwargs):
    raise _Remade

  monkeypatch.setattr(outputs, 'predict_split', remade)
  cnn, lstm = _member(tmp_path, 'cnn', 'a1'), _member(tmp_path, 'lstm', 'b1')
  members = [(None, str(cnn), 300), (None, str(lstm), 500)]
  splits = ('train', 'validation', 'test')
  probe = tmp_path / 'probe' / 'seed0'
  probe.mkdir(parents=True)
  made_from = {
    'members': [
      {'run': 'cnn/lr0.001_seed0', 'fingerprint': 'a1', 'step': 300},
      {'run': 'lstm/lr0.001_seed0', 'fingerprint': 'b1', 'step': 500},
    ],
    'splits': list(splits),
    'lrs': [1e-3, 1e-2, 1e-1],
    'num_steps': 500,
  }
  record = {'made_from': made_from, 'split': 'test', 'metric': 0.75}
  (probe / 'test.json').write_text(json.dumps(record))
  assert outputs.probe_run(members, str(probe), splits) == record  # The same members: reused.

  with pytest.raises(_Remade):  # Another kept step of a member (e.g. another chosen rate's run).
    outputs.probe_run([(None, str(cnn), 400), (None, str(lstm), 500)], str(probe), splits)
  (lstm / 'result.json').write_text(json.dumps({'fingerprint': 'b2'}))
  with pytest.raises(_Remade):  # A member trained again under another config.
    outputs.probe_run(members, str(probe), splits)
  (lstm / 'result.json').write_text(json.dumps({'fingerprint': 'b1'}))
  with pytest.raises(_Remade):  # Another test split.
    outputs.probe_run(members, str(probe), ('train', 'validation', 'test[:50%]'))
  del record['made_from']
  (probe / 'test.json').write_text(json.dumps(record))
  with pytest.raises(_Remade):  # A record that does not say what it was made from.
    outputs.probe_run(members, str(probe), splits)
