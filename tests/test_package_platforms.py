"""hybrid_jax.platforms: the CPU is chosen quietly only where JAX's CUDA plugin has no driver."""

import os
import subprocess
import sys

import pytest

from hybrid_jax import platforms

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
  'environ, plugin, driver, expected',
  [
    ({}, True, False, 'cpu'),  # jax[cuda12] on a CPU machine: the case that printed a traceback.
    ({}, True, True, None),  # A GPU machine keeps JAX's choice (the GPU).
    ({}, False, False, None),  # CPU-only or TPU install: JAX's own default, nothing to silence.
    ({}, False, True, None),
    ({'JAX_PLATFORMS': 'cuda'}, True, False, None),  # An explicit choice always wins.
    ({'JAX_PLATFORMS': 'tpu,cpu'}, True, False, None),
    ({'JAX_PLATFORM_NAME': 'gpu'}, True, False, None),
    ({'JAX_PLATFORMS': ''}, True, False, 'cpu'),  # Empty means unset.
  ],
)
def test_platform_override(environ, plugin, driver, expected):
  assert (
    platforms.platform_override(environ, plugin_installed=plugin, driver_present=driver) == expected
  )


def test_choose_platform_sets_the_environment_only_when_needed(monkeypatch):
  monkeypatch.setattr(platforms, 'cuda_plugin_installed', lambda: True)
  monkeypatch.setattr(platforms, 'nvidia_driver_present', lambda: False)
  environ = {}
  assert platforms.choose_platform(environ) == 'cpu' and environ == {'JAX_PLATFORMS': 'cpu'}
  environ = {'JAX_PLATFORMS': 'cuda'}
  assert platforms.choose_platform(environ) is None and environ == {'JAX_PLATFORMS': 'cuda'}
  monkeypatch.setattr(platforms, 'nvidia_driver_present', lambda: True)
  environ = {}
  assert platforms.choose_platform(environ) is None and not environ


def test_entry_point_picks_cpu_with_a_cuda_plugin_and_no_driver(tmp_path):
  """A stand-in `jax_cuda12_plugin` package makes this machine look like a jax[cuda12] install."""
  if platforms.nvidia_driver_present():
    pytest.skip('this machine has an NVIDIA driver: JAX keeps its own choice')
  (tmp_path / 'jax_cuda12_plugin').mkdir()
  (tmp_path / 'jax_cuda12_plugin' / '__init__.py').write_text('')
  env = {k: v for k, v in os.environ.items() if k not in ('JAX_PLATFORMS', 'JAX_PLATFORM_NAME')}
  env['PYTHONPATH'] = os.pathsep.join([str(tmp_path), REPO])
  code = (
    'import os; from hybrid_jax import platforms; print(platforms.choose_platform(), '
    'os.environ.get("JAX_PLATFORMS"))'
  )
  out = subprocess.run(
    [sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True, timeout=60
  ).stdout
  assert out.split() == ['cpu', 'cpu']
  env['JAX_PLATFORMS'] = 'cpu,cuda'
  out = subprocess.run(
    [sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True, timeout=60
  ).stdout
  assert out.split() == ['None', 'cpu,cuda']
