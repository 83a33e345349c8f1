"""Researcher conveniences: hyperparameters in TensorBoard beside the metrics; a profiler trace."""

import glob
import os
import struct

from tensorboardX.proto import event_pb2
from tensorboardX.proto import plugin_hparams_pb2

from configs import sensor
from hybrid_jax import reporting
from hybrid_jax import train


def read_events(directory: str) -> list[event_pb2.Event]:
  """Every Event in the TFRecord event files directly inside `directory` (no TensorFlow)."""
  events = []
  for path in sorted(glob.glob(os.path.join(directory, 'events.out.tfevents.*'))):
    with open(path, 'rb') as f:
      data = f.read()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack('<Q', data[offset : offset + 8])
      events.append(event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length]))
      offset += 12 + length + 4  # length, its crc, the record, its crc.
  return events


def test_flat_hparams():
  flat = reporting.flat_hparams({'a': 1, 'b': {'c': 'x', 'd': (1, 2), 'e': None, 'f': True}})
  assert flat == {'a': 1, 'b.c': 'x', 'b.d': '(1, 2)', 'b.e': 'None', 'b.f': True}


def test_hparams_and_profile_are_written_to_the_workdir(tiny_data_dir, tmp_path):
  config = sensor.get_config('smoke')
  config.dataset.update(name='weather_stations/tiny', data_dir=tiny_data_dir)
  config.learning_rate = 3e-4
  config.profile_steps = 2
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)

  events = read_events(os.path.join(workdir, 'tensorboard'))
  values = [v for e in events for v in e.summary.value]
  by_plugin = {}
  for value in values:
    by_plugin.setdefault(value.metadata.plugin_data.plugin_name, []).append(value)
  hparams_values = by_plugin['hparams']
  plugin_data = [
    plugin_hparams_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
    for v in hparams_values
  ]
  experiment = next(p.experiment for p in plugin_data if p.HasField('experiment'))
  start = next(p.session_start_info for p in plugin_data if p.HasField('session_start_info'))
  assert start.hparams['learning_rate'].number_value == 3e-4
  assert start.hparams['model.lstm_units'].number_value == config.model.lstm_units
  assert start.hparams['dataset.name'].string_value == 'weather_stations/tiny'
  assert start.hparams['profile_steps'].number_value == 2
  metric_tags = {m.name.tag for m in experiment.metric_infos}
  assert {'eval/mae', 'eval/loss', 'eval/mae_original_units'} <= metric_tags
  scalar_tags = {v.tag for v in values}
  assert metric_tags <= scalar_tags  # The dashboard's metrics are scalars of the same run.

  traces = glob.glob(os.path.join(workdir, 'tensorboard', 'plugins', 'profile', '*', '*.xplane.pb'))
  assert traces and os.path.getsize(traces[0]) > 0
