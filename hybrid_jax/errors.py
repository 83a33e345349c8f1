"""The project's own error types: the only exceptions the command line turns into one-line messages.

Raise these for input a user can fix (a config value, a dataset, a checkpoint, an input file); the
message is what the user reads, on one line, and says what to do. Anything else is a bug and keeps
its traceback.

  ConfigError      a config field, flag or override is invalid.
  DataError        a dataset is missing, unprepared, or does not fit the config.
  CheckpointError  a checkpoint is missing, damaged, or belongs to another run.
  InputError       inputs given for prediction have the wrong shape, dtype or content.
  NonFiniteError   training met a NaN/inf loss or gradient (a FloatingPointError too).
"""


class HybridJaxError(Exception):
  """Base of every error whose message is meant for the user (one line, says what to do)."""


class ConfigError(HybridJaxError, ValueError):
  """A config field, flag or override is invalid."""


class DataError(HybridJaxError, ValueError):
  """A dataset or config problem the user fixes by changing a config value or preparing data."""


class CheckpointError(HybridJaxError, RuntimeError):
  """A checkpoint is missing, damaged or does not belong to this run: the message says what to do."""


class InputError(HybridJaxError, ValueError):
  """Inputs given for prediction do not fit the trained model's task."""


class NonFiniteError(HybridJaxError, FloatingPointError):
  """Training produced a NaN/inf loss or gradient: the message names the step and what to change."""
