"""experiments/fusion_ablation.py: every variant trains with its own switches, the table reports them."""

from configs import sensor
from experiments import fusion_ablation as ablation


def test_ablation_runs_every_variant_and_tabulates_them(tiny_data_dir, tmp_path):
  config = sensor.get_config('smoke')
  config.dataset.update(name='weather_stations/tiny', data_dir=tiny_data_dir)
  rows = ablation.run_ablation(config, seeds=[0, 1], workdir=str(tmp_path))
  assert [r['variant'] for r in rows] == [v[0] for v in ablation.VARIANTS]
  params = {r['variant']: r['params'] for r in rows}
  assert params['cnn only'] + params['lstm only'] - 1 == params['both, concat']  # One shared bias.
  assert len(set(params.values())) == len(params)  # Each variant really built its own model.
  for row in rows:
    mean, std = row['stats']['mae_original_units']
    assert mean > 0 and std >= 0
  runs = sorted(p.name for p in tmp_path.iterdir())
  assert runs == sorted(f'{b}_{f}_seed{s}' for _, b, f in ablation.VARIANTS for s in (0, 1))
  table = ablation.format_rows(config, rows, [0, 1])
  assert table.count('\n| ') == len(rows) + 1 and 'mae_original_units' in table
