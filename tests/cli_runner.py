"""Runs a hybrid_jax command line in a fresh Python process, as a user would (tests only).

done = cli_runner.run(['-m', 'hybrid_jax.main', '--config=configs/text.py:smoke', ...], devices=4)
done.returncode, done.stdout, done.stderr
"""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(
  args: list[str],
  *,
  devices: int = 4,
  stdin: str | None = None,
  timeout: int = 300,
  env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
  """`python ARGS` in the repository root on `devices` fake CPU devices; output captured as text."""
  env = dict(
    os.environ if env is None else env,
    JAX_PLATFORMS='cpu',
    XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
  )
  return subprocess.run(
    [sys.executable, *args],
    cwd=REPO,
    env=env,
    input=stdin,
    capture_output=True,
    text=True,
    timeout=timeout,
    check=False,
  )
