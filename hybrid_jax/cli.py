"""Command-line plumbing shared by `hybrid_jax.main` and `hybrid_jax.summary`.

Bad input ends the program with one line on stderr that says what to do, instead of a traceback:
errors while the flags and the config file are parsed (an unknown config key, a malformed override),
and the project's own error types (`hybrid_jax.errors`: config, data, checkpoint, input, non-finite
training) raised while the program runs. Any other exception is a bug (in hybrid_jax or in code a
researcher is editing) and keeps its full traceback. Set HYBRID_JAX_TRACEBACK=1 to see the traceback
of the one-line errors too.

`--config.model.FIELD=None` sets a model field to None ("take it from the data") whatever the
field's type: ml_collections cannot parse None for int or tuple fields, so such overrides are taken
out of argv before the flags are parsed and applied to the parsed config.
"""

import logging as pylogging
import os
import re
import sys
from typing import Callable

from absl import app
from absl import flags
from absl import logging

from hybrid_jax import errors
from hybrid_jax import orbax_logs

# What config files and --config.x=y overrides raise while flags are parsed (ml_collections raises
# these builtin types for a bad override or a missing file, so they are one line only in parsing).
CONFIG_ERRORS = (ValueError, KeyError, AttributeError, TypeError, OSError)
# What becomes one line once the program runs: the project's own types, nothing else.
USER_ERRORS = (errors.HybridJaxError,)


def _one_line(error: BaseException) -> str:
  """The error's own message on one line (the last line, if it embeds a traceback)."""
  lines = [line.strip() for line in str(error).replace('\\n', '\n').splitlines() if line.strip()]
  if any(line.startswith('Traceback') for line in lines):
    lines = lines[-1:]
  message = ' '.join(lines).replace("\\'", "'")
  if isinstance(error, KeyError | AttributeError):  # ConfigDict's "no such field" errors.
    if len(message) > 1 and message[0] == message[-1] and message[0] in '"\'':
      message = message[1:-1]  # str() of these errors quotes the message.
    message = f'unknown config field: {message}'
  return f'error: {message}'


_NONE_OVERRIDE = re.compile(r'^--(config)\.(model\.[A-Za-z_][\w.]*)=(None|none)$')


def _set_none(config, path: str) -> None:
  """config.<path> = None; an unknown field is a ConfigDict KeyError/AttributeError (one line)."""
  *parents, leaf = path.split('.')
  for part in parents:
    config = config[part]
  if leaf not in config:
    raise KeyError(f'{path} is not a field of the config')
  config[leaf] = None


def _raise_deferred_config_errors() -> None:
  """ml_collections keeps a config file's load error (OSError) until the config is first used.

  Raise it here, while flags are parsed, so that a missing or unreadable config file is a one-line
  error like any other bad flag, not a traceback from wherever the config is first read.
  """
  for name in flags.FLAGS:
    value = flags.FLAGS[name].value
    if type(value).__name__ == '_ErrorConfig':  # ml_collections.config_flags' deferred error.
      raise vars(value)['_error']


def _parse_flags(argv: list[str]) -> list[str]:
  nones = [m for m in map(_NONE_OVERRIDE.match, argv) if m]
  argv = [a for a in argv if not _NONE_OVERRIDE.match(a)]
  try:
    rest = flags.FLAGS(argv)
    _raise_deferred_config_errors()
    for match in nones:
      _set_none(flags.FLAGS[match.group(1)].value, match.group(2))
    return rest
  except flags.Error as error:
    sys.exit(_one_line(error) + ' (run with --helpfull for the flags)')
  except CONFIG_ERRORS as error:
    if os.environ.get('HYBRID_JAX_TRACEBACK'):
      raise
    sys.exit(_one_line(error))
  except SyntaxError as error:  # A config file that does not parse (raised while it is imported).
    if os.environ.get('HYBRID_JAX_TRACEBACK'):
      raise
    sys.exit(
      _one_line(
        errors.ConfigError(
          f'config file {error.filename}, line {error.lineno}: {error.msg}; fix the file.'
        )
      )
    )


class _QuietAbandonedReads(pylogging.Filter):
  """After a refused restore, orbax's other pending reads fail too and asyncio logs each one
  ("... exception was never retrieved") when it is garbage-collected, often at exit, after the
  one-line error; the first error is the one reported."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    return 'exception was never retrieved' not in record.getMessage()


def _quiet_unraisable(previous):
  """A sys.unraisablehook that drops what abandoned orbax reads leave at exit ("Exception ignored
  in", "Event loop is closed", un-awaited coroutines) and passes everything else on."""

  def hook(unraisable):
    module = type(unraisable.object).__module__ if unraisable.object is not None else ''
    text = f'{unraisable.exc_value} {unraisable.object!r}'
    if (
      module.split('.')[0] in ('asyncio', 'orbax', 'tensorstore')
      or 'Event loop is closed' in text
      or 'coroutine' in text
    ):
      return
    previous(unraisable)

  hook.hybrid_jax_quiet = True
  return hook


def install_quiet_logging() -> None:
  """The command lines' process-wide log filters and unraisable hook (installed once, by `run`)."""
  logging.get_absl_logger().addFilter(orbax_logs.ExpectedWarnings())
  pylogging.getLogger('asyncio').addFilter(_QuietAbandonedReads())
  if not getattr(sys.unraisablehook, 'hybrid_jax_quiet', False):
    sys.unraisablehook = _quiet_unraisable(sys.unraisablehook)


def run(
  main: Callable[[list[str]], None], extra_errors: tuple[type[BaseException], ...] = ()
) -> None:
  """`absl.app.run(main)` with one-line errors for flags, configs and the project's error types.

  Also installs the command lines' log filters (`install_quiet_logging`). `extra_errors`: further
  exception types whose message is already what the user should read (prefer raising a
  `hybrid_jax.errors` type).
  """
  install_quiet_logging()

  def guarded_main(argv):
    try:
      main(argv)
    except USER_ERRORS + tuple(extra_errors) as error:
      if os.environ.get('HYBRID_JAX_TRACEBACK'):
        raise
      sys.exit(_one_line(error))

  app.run(guarded_main, flags_parser=_parse_flags)
