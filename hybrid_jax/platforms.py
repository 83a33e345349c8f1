"""Picks JAX's platform before JAX starts: the CPU, quietly, where CUDA has no GPU to run on.

`pip install 'hybrid_jax[cuda12]'` (the README's default) installs JAX's CUDA plugin. On a
machine without an NVIDIA driver, JAX would try the plugin first, log a `cuInit(0) failed` traceback
and fall back to the CPU. The entry points (`hybrid_jax.main`, `hybrid_jax.summary`, experiments/) call
`choose_platform()` before importing JAX: when JAX_PLATFORMS is unset, the CUDA plugin is installed
and no NVIDIA driver is visible, it sets JAX_PLATFORMS=cpu. A machine with a driver (or a TPU, or a
CPU-only install) is left to JAX's own choice, so a GPU machine still uses the GPU.

`choose_platform()` also appends the XLA:CPU flags chosen for the installed jaxlib
(`CPU_XLA_FLAGS_BY_JAXLIB`, read from jaxlib's metadata without importing it) to XLA_FLAGS; a flag
the user already set keeps the user's value. The one flag in use, `YNNPACK_OFF`
(`--xla_cpu_experimental_ynn_fusion_type=`, an empty list), makes XLA:CPU run convolutions and
matmuls on its own Eigen kernels instead of YNNPACK, for the same float32 math. Whether it pays
differs by jaxlib version, so each version gets what its measurements chose (see the table's
comment); a version not in the table gets no flag (experimental flags can be renamed, and XLA aborts
on an unknown flag). It only affects the CPU backend. Any value of the flag in XLA_FLAGS wins;
XLA's own default comes back with
`XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_convolution`.
"""

import ctypes
import importlib.metadata
import importlib.util
import os
import sys
from typing import Mapping, MutableMapping, Optional

CUDA_PLUGINS = ('jax_cuda12_plugin', 'jax_cuda13_plugin')
DRIVER_LIBRARIES = ('libcuda.so.1', 'libcuda.so')
# No YNNPACK fusions: XLA:CPU's own kernels for convolutions and matmuls.
YNNPACK_OFF = {'xla_cpu_experimental_ynn_fusion_type': ''}
# jaxlib version prefix -> the XLA:CPU flags set by default (name -> value), each chosen from the
# train-step benchmark with and without them on that version (reference cases, interleaved runs):
# experiments/results/benchmark_xla_flags.md, beside its command. Other versions get none.
CPU_XLA_FLAGS_BY_JAXLIB = {
  '0.10.': YNNPACK_OFF,
  '0.12.': YNNPACK_OFF,
}


def cuda_plugin_installed() -> bool:
  """True when a JAX CUDA plugin package is importable (located without importing it)."""
  return any(importlib.util.find_spec(name) is not None for name in CUDA_PLUGINS)


def nvidia_driver_present() -> bool:
  """True when the NVIDIA kernel driver or its user-space library (libcuda) is visible."""
  if os.path.exists('/proc/driver/nvidia'):
    return True
  for name in DRIVER_LIBRARIES:
    try:
      ctypes.CDLL(name)
      return True
    except OSError:
      pass
  return False


def platform_override(
  environ: Mapping[str, str], *, plugin_installed: bool, driver_present: bool
) -> Optional[str]:
  """The JAX_PLATFORMS value to set, or None to leave JAX's default (pure: unit-tested).

  Args:
    environ: the process environment; an explicit JAX_PLATFORMS (or the older JAX_PLATFORM_NAME)
      always wins.
    plugin_installed: whether JAX's CUDA plugin is installed (`cuda_plugin_installed()`).
    driver_present: whether an NVIDIA driver is visible (`nvidia_driver_present()`).
  """
  if environ.get('JAX_PLATFORMS') or environ.get('JAX_PLATFORM_NAME'):
    return None
  if plugin_installed and not driver_present:
    return 'cpu'
  return None


def compose_xla_flags(user_flags: str, defaults: Mapping[str, str]) -> str:
  """`user_flags` (an XLA_FLAGS value) plus each default the user did not set (pure: unit-tested).

  A flag counts as set when `--name` appears in `user_flags` with any value (`--name=...` or a bare
  `--name`); the user's flags come first and are kept verbatim.
  """
  given = {token[2:].split('=', 1)[0] for token in user_flags.split() if token.startswith('--')}
  added = [f'--{name}={value}' for name, value in defaults.items() if name not in given]
  return ' '.join([user_flags.strip()] + added if user_flags.strip() else added)


def default_cpu_xla_flags(jaxlib_version: Optional[str]) -> dict[str, str]:
  """The flags `CPU_XLA_FLAGS_BY_JAXLIB` holds for a jaxlib version, else none (pure, tested)."""
  for prefix, flags in CPU_XLA_FLAGS_BY_JAXLIB.items():
    if jaxlib_version and jaxlib_version.startswith(prefix):
      return dict(flags)
  return {}


def jaxlib_version() -> Optional[str]:
  """The installed jaxlib's version, read from its metadata (without importing it), or None."""
  try:
    return importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return None


def set_cpu_xla_flags(environ: Optional[MutableMapping[str, str]] = None) -> Optional[str]:
  """Appends the default XLA:CPU flags to XLA_FLAGS (user flags win); returns the new value.

  Effective only before JAX creates its CPU backend (XLA reads XLA_FLAGS once, at that time).
  """
  environ = os.environ if environ is None else environ
  defaults = default_cpu_xla_flags(jaxlib_version())
  if not defaults:
    return environ.get('XLA_FLAGS')
  environ['XLA_FLAGS'] = compose_xla_flags(environ.get('XLA_FLAGS', ''), defaults)
  return environ['XLA_FLAGS']


def choose_platform(environ: Optional[MutableMapping[str, str]] = None) -> Optional[str]:
  """Sets JAX_PLATFORMS=cpu where the CUDA plugin has no driver; returns what it set (or None).

  Also appends the default XLA:CPU flags to XLA_FLAGS (`set_cpu_xla_flags`).

  Call it before `import jax` (if JAX is already imported, its config is updated instead, which
  works until JAX first initialises its backends).
  """
  environ = os.environ if environ is None else environ
  set_cpu_xla_flags(environ)
  if environ.get('JAX_PLATFORMS') or environ.get('JAX_PLATFORM_NAME'):
    return None
  plugin = cuda_plugin_installed()
  platform = platform_override(
    environ, plugin_installed=plugin, driver_present=plugin and nvidia_driver_present()
  )
  if platform is not None:
    environ['JAX_PLATFORMS'] = platform
    if 'jax' in sys.modules and environ is os.environ:
      sys.modules['jax'].config.update('jax_platforms', platform)
  return platform
