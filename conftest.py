"""Test set-up, before JAX is imported anywhere: JAX on CPU with 4 fake devices, and one persistent
compilation cache per test process (each pytest-xdist worker).

The suite trains many tiny models, in-process and in the command lines it launches, and most of its
time went to compiling the same train and eval steps again and again; the cache hands a process the
executable XLA already built for the same program (same HLO, options and versions), so results are
unchanged. A fresh directory per process, removed at exit: no test reads what an earlier session,
the other worker or another checkout compiled. The launched commands inherit it through the
environment.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()

_COMPILATION_CACHE = tempfile.mkdtemp(prefix="hybrid_jax_tests_xla_")
atexit.register(shutil.rmtree, _COMPILATION_CACHE, ignore_errors=True)
# Set, not defaulted: a cache of the user's own is neither read nor filled with the tests' programs
# (`JAX_ENABLE_COMPILATION_CACHE=false` turns the cache off).
os.environ["JAX_COMPILATION_CACHE_DIR"] = _COMPILATION_CACHE
# Every program, however quick to compile or small (the defaults skip those under 1 s).
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
