"""hybrid_jax.platforms: the CPU is chosen quietly only where JAX's CUDA plugin has no driver."""

import json
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


RESULTS = os.path.join(REPO, 'experiments', 'results', 'benchmark_xla_flags.md')


@pytest.mark.parametrize(
  'version, prefix',
  [
    ('0.10.2', '0.10.'),  # requirements.lock (Python 3.11).
    ('0.10.0', '0.10.'),
    ('0.12.0.1', '0.12.'),  # requirements-py313.lock (Python 3.13).
    ('0.12.1', '0.12.'),
    ('0.9.2', None),  # Not measured: no flag (XLA aborts on a flag it does not know).
    ('0.11.0', None),
    ('0.100.0', None),
    ('1.0.0', None),
    (None, None),
  ],
)
def test_default_cpu_xla_flags_follow_the_table_per_jaxlib_version(version, prefix):
  expected = platforms.CPU_XLA_FLAGS_BY_JAXLIB[prefix] if prefix else {}
  assert platforms.default_cpu_xla_flags(version) == expected


def test_the_table_holds_the_measured_choices_and_names_its_results():
  """The choice per version is the one experiments/results/benchmark_xla_flags.md measured."""
  assert platforms.CPU_XLA_FLAGS_BY_JAXLIB == {
    '0.10.': platforms.YNNPACK_OFF,
    '0.12.': platforms.YNNPACK_OFF,
  }
  with open(RESULTS, encoding='utf-8') as f:
    results = f.read()
  for prefix in platforms.CPU_XLA_FLAGS_BY_JAXLIB:
    assert f'jaxlib {prefix}' in results, f'{RESULTS} has no measurement for jaxlib {prefix}x'
  assert 'python -m experiments.benchmarks.train_step --reference' in results
  with open(platforms.__file__, encoding='utf-8') as f:
    assert 'experiments/results/benchmark_xla_flags.md' in f.read()  # The table's comment.


@pytest.mark.parametrize('lock', ['requirements.lock', 'requirements-py313.lock'])
def test_the_jaxlib_of_each_lock_was_measured(lock):
  """Moving a lock to a new jaxlib needs its row in the table (and its measurement) first."""
  with open(os.path.join(REPO, lock), encoding='utf-8') as f:
    (version,) = [line.split('==')[1].strip() for line in f if line.startswith('jaxlib==')]
  assert any(version.startswith(p) for p in platforms.CPU_XLA_FLAGS_BY_JAXLIB), (
    f'jaxlib {version} ({lock}) has no entry in CPU_XLA_FLAGS_BY_JAXLIB: measure it with the '
    'command in experiments/results/benchmark_xla_flags.md'
  )


@pytest.mark.parametrize('version', ['0.10.2', '0.12.0.1'])
def test_choose_platform_appends_the_cpu_xla_flags(monkeypatch, version):
  monkeypatch.setattr(platforms, 'jaxlib_version', lambda: version)
  environ = {'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  assert platforms.choose_platform(environ) is None
  assert environ['XLA_FLAGS'].split() == ['--xla_force_host_platform_device_count=2'] + [
    f'--{name}={value}' for name, value in platforms.default_cpu_xla_flags(version).items()
  ]
  monkeypatch.setattr(platforms, 'jaxlib_version', lambda: '9.9.9')
  environ = {'JAX_PLATFORMS': 'cpu'}
  platforms.choose_platform(environ)
  assert environ == {'JAX_PLATFORMS': 'cpu'}


# Two convolutions and a matmul, their value and gradients, and how many YNNPACK fusions XLA:CPU
# compiled them into; the child picks its XLA flags as the entry points do (`choose_platform`).
_CONV_CODE = """
import sys
from hybrid_jax import platforms
platforms.choose_platform()
import jax, jax.numpy as jnp, numpy as np
rng = np.random.default_rng(0)
x = jnp.asarray(rng.normal(size=(2, 16, 16, 3)), jnp.float32)
k1 = jnp.asarray(rng.normal(size=(3, 3, 3, 8)), jnp.float32)
k2 = jnp.asarray(rng.normal(size=(3, 3, 8, 4)), jnp.float32)
w = jnp.asarray(rng.normal(size=(16 * 16 * 4, 10)) / 32, jnp.float32)
def loss(ks, x):
  dn = ('NHWC', 'HWIO', 'NHWC')
  y = jax.nn.relu(jax.lax.conv_general_dilated(x, ks[0], (1, 1), 'SAME', dimension_numbers=dn))
  y = jax.lax.conv_general_dilated(y, ks[1], (1, 1), 'SAME', dimension_numbers=dn)
  return jnp.sum(jnp.tanh(y.reshape(2, -1) @ ks[2]))
step = jax.jit(jax.value_and_grad(loss))
ynn = step.lower((k1, k2, w), x).compile().as_text().count('ynn_fusion')
value, grads = step((k1, k2, w), x)
np.savez(sys.argv[1], value=value, g1=grads[0], g2=grads[1], g3=grads[2], ynn=ynn)
"""


def test_the_default_cpu_xla_flags_reach_xla_and_keep_the_float32_values(tmp_path):
  """XLA aborts on an unknown flag; the flags must change speed only, not values or gradients.

  Skips on a jaxlib whose table entry is empty (no flag to check).
  """
  if not platforms.default_cpu_xla_flags(platforms.jaxlib_version()):
    pytest.skip(f'no default XLA:CPU flags for jaxlib {platforms.jaxlib_version()}')
  results = []
  # The entry points' own choice (XLA_FLAGS unset), then XLA's own default for the YNNPACK flag.
  for name, xla_flags in (('chosen', ''), ('xla_default', f'--{YNN}=+individual_convolution')):
    env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=xla_flags, PYTHONPATH=REPO)
    out = tmp_path / f'{name}.npz'
    subprocess.run([sys.executable, '-c', _CONV_CODE, str(out)], env=env, check=True, timeout=120)
    results.append(np.load(out))
  if platforms.default_cpu_xla_flags(platforms.jaxlib_version()).get(YNN) == '':
    # The flag reached XLA: no YNNPACK fusion with it, some without it.
    assert int(results[0]['ynn']) == 0 < int(results[1]['ynn'])
  for key in ('value', 'g1', 'g2', 'g3'):  # float32 rounding only, relative to each array's size.
    scale = float(np.abs(results[1][key]).max())
    np.testing.assert_allclose(results[0][key], results[1][key], rtol=1e-5, atol=1e-5 * scale)


def entry_points() -> list[str]:
  """The modules a reader runs with `python -m`: each `__main__.py` and each module with a
  `if __name__ == '__main__':` block, in the package and in experiments/."""
  modules = []
  for top in ('hybrid_jax', 'experiments'):
    for root, _, files in os.walk(os.path.join(REPO, top)):
      for name in sorted(files):
        if not name.endswith('.py'):
          continue
        with open(os.path.join(root, name), encoding='utf-8') as f:
          source = f.read()
        if name == '__main__.py' or "if __name__ == '__main__':" in source:
          path = os.path.relpath(os.path.join(root, name), REPO)[: -len('.py')]
          modules.append(path.replace(os.sep, '.'))
  return sorted(modules)


def test_every_entry_point_sets_the_xla_flags_before_jax_starts():
  """An entry point whose imports bring in JAX has run `platforms.choose_platform()` by then: the
  study's command line once trained every video run on XLA:CPU's default kernels, ~2x slower than
  `hybrid_jax.main` (experiments/results/benchmark_xla_flags.md). What is checked is the module's
  import (where the entry points choose); JAX imported later, inside a function, is not.

  Skips on a jaxlib whose table entry is empty (no flag to check).
  """
  flags = platforms.default_cpu_xla_flags(platforms.jaxlib_version())
  if not flags:
    pytest.skip(f'no default XLA:CPU flags for jaxlib {platforms.jaxlib_version()}')
  assert {'hybrid_jax.main', 'experiments.study.__main__'} <= set(entry_points())
  expected = platforms.compose_xla_flags('', flags)
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update(JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  code = (
    'import importlib, json, os, sys; importlib.import_module(sys.argv[1]); '
    'print(json.dumps(["jax" in sys.modules, os.environ.get("XLA_FLAGS", "")]))'
  )
  children = {  # One fresh interpreter per module, all at once.
    m: subprocess.Popen(
      [sys.executable, '-c', code, m], env=env, cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    for m in entry_points()
  }
  late = {}
  try:
    for module, child in children.items():
      out, _ = child.communicate(timeout=180)
      assert child.returncode == 0, f'importing {module} failed'
      imported_jax, xla_flags = json.loads(out.strip().splitlines()[-1])
      if imported_jax and xla_flags != expected:
        late[module] = xla_flags
  finally:
    for child in children.values():
      child.kill()
      child.wait()
  assert late == {}, f'call platforms.choose_platform() before these import JAX: {late}'
