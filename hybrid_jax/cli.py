"""Command-line plumbing shared by `hybrid_jax.main` and `hybrid_jax.summary`.

Bad input (an unknown config key, a malformed override, a config or data that cannot work) ends the
program with one line on stderr that says what to do, instead of a traceback. Set
HYBRID_JAX_TRACEBACK=1 to see the full traceback.

`--config.model.FIELD=None` sets a model field to None ("take it from the data") whatever the
field's type: ml_collections cannot parse None for int or tuple fields, so such overrides are taken
out of argv before the flags are parsed and applied to the parsed config.
"""

import os
import re
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


_NONE_OVERRIDE = re.compile(r'^--(config)\.(model\.[A-Za-z_][\w.]*)=(None|none)$')


def _set_none(config, path: str) -> None:
  """config.<path> = None; an unknown field is a ConfigDict KeyError/AttributeError (one line)."""
  *parents, leaf = path.split('.')
  for part in parents:
    config = config[part]
  if leaf not in config:
    raise KeyError(f'{path} is not a field of the config')
  config[leaf] = None


def _parse_flags(argv: list[str]) -> list[str]:
  nones = [m for m in map(_NONE_OVERRIDE.match, argv) if m]
  argv = [a for a in argv if not _NONE_OVERRIDE.match(a)]
  try:
    rest = flags.FLAGS(argv)
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
