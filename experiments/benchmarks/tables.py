"""The benchmarks' results tables: printed, and written with the command that made them.

Pure Python (no JAX), so that `peers.py` can import it from another framework's virtualenv.

  write_table(lines, args.out, 'JAX_PLATFORMS=cpu python -m experiments.benchmarks.train_step')
"""

import sys
from typing import Optional, Sequence


def write_table(lines: Sequence[str], out: Optional[str], command: str) -> None:
  """Prints the table and, with `out`, writes it there followed by the full command line.

  Args:
    lines: the markdown lines (header, table).
    out: the --out file, or None / '' to print only.
    command: how the benchmark is run, without its arguments (this process's are appended).
  """
  print('\n'.join(lines))
  save_table(lines, out, command)


def save_table(lines: Sequence[str], out: Optional[str], command: str) -> None:
  """Writes the table to `out` (if given) followed by the full command line, without printing it
  (a long benchmark saves its rows as they come)."""
  if out:
    table = '\n'.join(lines)
    with open(out, 'w', encoding='utf-8') as f:
      f.write(f'{table}\n\nCommand: `{command} {" ".join(sys.argv[1:])}`\n')
