"""Atomic file writes: a file is either its old content or its whole new content, never half.

  write_text(path, text)          # via a temporary file in the same folder and os.replace
  write_json(path, value)         # json.dump(value) the same way (floats of numpy types included)
  with locked(path): ...          # an exclusive lock file, so concurrent processes build once

Everything the project writes and later trusts (manifests, inference.json, results, configs) goes
through these, so a kill mid-write never leaves a truncated file behind.
"""

import contextlib
import fcntl
import json
import os
from typing import Any, Iterator


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically (a temporary sibling file, then os.replace)."""
  tmp = os.path.join(os.path.dirname(path) or '.', f'.{os.path.basename(path)}.tmp')
  with open(tmp, 'w', encoding='utf-8') as f:
    f.write(text)
  os.replace(tmp, path)


def write_json(path: str, value: Any, indent: int | None = 1, sort_keys: bool = False) -> None:
  """Writes `value` as JSON to `path` atomically; numpy scalars are written as floats."""
  write_text(path, json.dumps(value, indent=indent, sort_keys=sort_keys, default=float))


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
  """Holds an exclusive lock on the file `path` (created, with its folder) for the block."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with open(path, 'w') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)
