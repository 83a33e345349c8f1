"""Orbax's log lines that report what hybrid_jax does on purpose, and a filter that drops them.

Orbax warns (through absl's logger) about choices hybrid_jax makes deliberately: not every save has
metrics, evaluation and inference open checkpoints read-only, and the checkpoint checks read a
step's `state` item, which has no metadata file of its own. The command lines drop these lines for
the whole process (`cli.install_quiet_logging`); library code drops them only while its own call
runs (`quiet`), and nothing is installed on import.
"""

import contextlib
import logging
from typing import Iterator

from absl import logging as absl_logging

# How orbax's warnings about hybrid_jax's deliberate choices begin (the one list of them).
EXPECTED_WARNINGS = (
  'Requested `tracked_metric`; did not provide metrics',
  'Given directory is read only',
  'Metadata file does not exist',
)


class ExpectedWarnings(logging.Filter):
  """Drops the log records whose message begins with one of `EXPECTED_WARNINGS`."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(EXPECTED_WARNINGS)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
  """Drops `EXPECTED_WARNINGS` from absl's logger while the block runs; removed on exit, also on
  an exception. Records logged meanwhile by other threads are filtered too."""
  logger = absl_logging.get_absl_logger()
  expected = ExpectedWarnings()
  logger.addFilter(expected)
  try:
    yield
  finally:
    logger.removeFilter(expected)
