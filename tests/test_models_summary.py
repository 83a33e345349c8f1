"""`python -m hybrid_jax.summary`: the per-layer table, its total, and one-line config errors."""

from configs import sensor
from hybrid_jax import summary
import cli_runner


def run_summary(*args):
  return cli_runner.run(['-m', 'hybrid_jax.summary', *args], devices=1, timeout=120)


def test_table_lists_layers_in_creation_order_and_sums_them():
  config = sensor.get_config()
  config.model.window_shape = (20, 4, 1)
  text = summary.summarize(config)
  layers = [line.split()[0] for line in text.splitlines() if '/' in line.split()[0]]
  assert layers == ['cnn/conv_0', 'lstm/input_kernel', 'lstm/cell/recurrent_kernel', 'head/output']
  rows = [
    int(line.split()[-1].replace(',', ''))
    for line in text.splitlines()
    if line.split()[0] in layers
  ]
  assert rows == [832, 4 * 32 + 4 * 32 * 4, 32 * 4 * 32, 640 + 32 + 1]
  assert text.splitlines()[-1] == f'Total params: {sum(rows):,}' == 'Total params: 6,241'


def test_command_line_prints_table_and_total():
  result = run_summary('--config=configs/sensor.py', '--config.model.window_shape=(20,4,1)')
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip().splitlines()[-1] == 'Total params: 6,241'


def test_command_line_bad_config_field_is_one_line():
  result = run_summary('--config=configs/text.py', '--config.model.fusio=gated')
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and 'fusio' in lines[0] and 'fusion' in lines[0], result.stderr
