"""Picks JAX's platform before JAX starts: the CPU, quietly, where CUDA has no GPU to run on.

`pip install 'hybrid_jax[cuda12]'` (the README's default) installs JAX's CUDA plugin. On a
machine without an NVIDIA driver, JAX would try the plugin first, log a `cuInit(0) failed` traceback
and fall back to the CPU. The entry points (`hybrid_jax.main`, `hybrid_jax.summary`, experiments/) call
`choose_platform()` before importing JAX: when JAX_PLATFORMS is unset, the CUDA plugin is installed
and no NVIDIA driver is visible, it sets JAX_PLATFORMS=cpu. A machine with a driver (or a TPU, or a
CPU-only install) is left to JAX's own choice, so a GPU machine still uses the GPU.
"""

import ctypes
import importlib.util
import os
import sys
from typing import Mapping, MutableMapping, Optional

CUDA_PLUGINS = ('jax_cuda12_plugin', 'jax_cuda13_plugin')
DRIVER_LIBRARIES = ('libcuda.so.1', 'libcuda.so')


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


def choose_platform(environ: Optional[MutableMapping[str, str]] = None) -> Optional[str]:
  """Sets JAX_PLATFORMS=cpu where the CUDA plugin has no driver; returns what it set (or None).

  Call it before `import jax` (if JAX is already imported, its config is updated instead, which
  works until JAX first initialises its backends).
  """
  environ = os.environ if environ is None else environ
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
