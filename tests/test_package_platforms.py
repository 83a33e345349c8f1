"""hybrid_jax.platforms: the CPU is chosen quietly only where JAX's CUDA plugin has no driver."""

import os
import subprocess
import sys

import numpy as np
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
  monkeypatch.setattr(platforms, 'jaxlib_version', lambda: None)  # No default XLA flags here.
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


YNN = 'xla_cpu_experimental_ynn_fusion_type'


@pytest.mark.parametrize(
  'user, expected',
  [
    ('', f'--{YNN}='),
    ('  ', f'--{YNN}='),
    (
      '--xla_force_host_platform_device_count=2',
      f'--xla_force_host_platform_device_count=2 --{YNN}=',
    ),
    (f'--{YNN}=+individual_convolution', f'--{YNN}=+individual_convolution'),  # User's value wins.
    (f'--a=1 --{YNN}=dot', f'--a=1 --{YNN}=dot'),
    (f'--{YNN}', f'--{YNN}'),  # A bare flag counts as set.
  ],
)
def test_compose_xla_flags_appends_only_flags_the_user_did_not_set(user, expected):
  assert platforms.compose_xla_flags(user, {YNN: ''}) == expected


@pytest.mark.parametrize(
  'version, expected',
  [('0.10.2', True), ('0.10.0', True), ('0.9.2', False), ('1.0.0', False), (None, False)],
)
def test_default_cpu_xla_flags_only_for_measured_jaxlib_versions(version, expected):
  assert platforms.default_cpu_xla_flags(version) == (platforms.CPU_XLA_FLAGS if expected else {})


def test_choose_platform_appends_the_cpu_xla_flags(monkeypatch):
  monkeypatch.setattr(platforms, 'jaxlib_version', lambda: '0.10.2')
  environ = {'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  assert platforms.choose_platform(environ) is None
  assert environ['XLA_FLAGS'].split() == ['--xla_force_host_platform_device_count=2'] + [
    f'--{name}={value}' for name, value in platforms.CPU_XLA_FLAGS.items()
  ]
  monkeypatch.setattr(platforms, 'jaxlib_version', lambda: '9.9.9')
  environ = {'JAX_PLATFORMS': 'cpu'}
  platforms.choose_platform(environ)
  assert environ == {'JAX_PLATFORMS': 'cpu'}


_CONV_CODE = """
import sys
import jax, jax.numpy as jnp, numpy as np
rng = np.random.default_rng(0)
x = jnp.asarray(rng.normal(size=(2, 16, 16, 3)), jnp.float32)
k1 = jnp.asarray(rng.normal(size=(3, 3, 3, 8)), jnp.float32)
k2 = jnp.asarray(rng.normal(size=(3, 3, 8, 4)), jnp.float32)
def loss(ks, x):
  dn = ('NHWC', 'HWIO', 'NHWC')
  y = jax.nn.relu(jax.lax.conv_general_dilated(x, ks[0], (1, 1), 'SAME', dimension_numbers=dn))
  y = jax.lax.conv_general_dilated(y, ks[1], (1, 1), 'SAME', dimension_numbers=dn)
  return jnp.sum(jnp.tanh(y))
value, grads = jax.jit(jax.value_and_grad(loss))((k1, k2), x)
np.savez(sys.argv[1], value=value, g1=grads[0], g2=grads[1])
"""


def test_the_default_cpu_xla_flags_are_accepted_and_keep_the_float32_values(tmp_path):
  """XLA aborts on an unknown flag; the flags must change speed only, not values or gradients."""
  if not platforms.default_cpu_xla_flags(platforms.jaxlib_version()):
    pytest.skip('no default XLA:CPU flags for this jaxlib')
  results = []
  flags = platforms.compose_xla_flags('', platforms.CPU_XLA_FLAGS)
  for name, xla_flags in (('with', flags), ('xla_default', f'--{YNN}=+individual_convolution')):
    env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=xla_flags, PYTHONPATH=REPO)
    out = tmp_path / f'{name}.npz'
    subprocess.run([sys.executable, '-c', _CONV_CODE, str(out)], env=env, check=True, timeout=120)
    results.append(np.load(out))
  for key in ('value', 'g1', 'g2'):
    np.testing.assert_allclose(results[0][key], results[1][key], rtol=1e-5, atol=1e-5)
