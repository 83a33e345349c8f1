"""Command-line plumbing shared by `hybrid_jax.main` and `hybrid_jax.summary`.

Bad input (an unknown config key, a malformed override, a config or data that cannot work) ends the
program with one line on stderr that says what to do, instead of a traceback. Set
HYBRID_JAX_TRACEBACK=1 to see the full traceback.
"""

import os
import sys
from typing import Callable

from absl import app
from absl import flags

from hybrid_jax.errors import ConfigError

# What config files and --config.x=y overrides raise while flags are parsed.
CONFIG_ERRORS = (ValueError, KeyError, AttributeError, TypeError, OSError)
# What our own start-up validation raises for input a user can fix (configs, data, checkpoints).
USER_ERRORS = (ValueError, OSError)


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


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    sys.exit(_one_line(error) + ' (run with --helpfull for the flags)')
  except CONFIG_ERRORS as error:
    if os.environ.get('HYBRID_JAX_TRACEBACK'):
      raise
    sys.exit(_one_line(error))
  except SyntaxError as error:  # A config file that does not parse (raised while it is imported).
    if os.environ.get('HYBRID_JAX_TRACEBACK'):
      raise
    sys.exit(_one_line(ConfigError(
        f'config file {error.filename}, line {error.lineno}: {error.msg}; fix the file.')))


def run(main: Callable[[list[str]], None], extra_errors: tuple[type[BaseException], ...] = ()) -> None:
  """`absl.app.run(main)` with one-line errors for flags, configs and user-fixable failures.

  `extra_errors`: further exception types whose message is already what the user should read.
  """

  def guarded_main(argv):
    try:
      main(argv)
    except USER_ERRORS + tuple(extra_errors) as error:
      if os.environ.get('HYBRID_JAX_TRACEBACK'):
        raise
      sys.exit(_one_line(error))

  app.run(guarded_main, flags_parser=_parse_flags)
