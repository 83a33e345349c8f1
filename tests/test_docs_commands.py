"""The README's and docs/' command blocks that take seconds run verbatim, as a reader runs them.

A block is marked by the line `<!-- test: runs in seconds -->` right above its ```bash fence (an HTML
comment: the page renders the same). Every command of a marked block (a line, with `\\` continuations
joined; blank lines and `#` comments skipped) runs through bash, in order, and must exit 0. Each page
gets its own fresh working directory, shared by its blocks in page order (so a predict can use the
smoke run trained in a block above it), whose `configs` and `experiments` are links to the
repository's. The environment is a reader's: JAX_PLATFORMS=cpu, one CPU device (not the test suite's
four), the repository root on PYTHONPATH, `python` / `python3` the interpreter running the tests, and
one TFDS_DATA_DIR for the whole session, so each shipped dataset is prepared once (a `:smoke` config
still reads the full dataset).

Mark only commands that take seconds: a smoke run with its eval and predict takes ~15-25 s here,
preparing a shipped dataset up to ~10 s (experiments/results/shipped_datasets.md; a video smoke
run, which evaluates 800 clips, ~35 s, is not marked), and this file should stay under ~2 minutes on 2 cores.
"""

import dataclasses
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
MARKER = '<!-- test: runs in seconds -->'
# Links in each page's working directory, so that `--config=configs/...`, the vendored sources and
# `python -m experiments...` resolve as they do in a checkout.
LINKED = ('configs', 'experiments', 'hybrid_jax')
COMMAND_TIMEOUT_S = 600


@dataclasses.dataclass(frozen=True)
class Block:
  """A marked ```bash block: its page (relative to the repository), first line and commands."""

  page: str
  line: int
  commands: tuple[str, ...]

  @property
  def id(self) -> str:
    return f'{self.page}:{self.line}'


def doc_pages() -> list[pathlib.Path]:
  """README.md, then every docs/*.md in name order."""
  return [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]


def commands_of(lines: list[str]) -> tuple[str, ...]:
  """The commands of a block's lines: `\\` continuations joined, blanks and `#` comments skipped."""
  commands, pending = [], ''
  for line in lines:
    if not pending and (not line.strip() or line.lstrip().startswith('#')):
      continue
    if line.rstrip().endswith('\\'):
      pending += line.rstrip()[:-1] + ' '
      continue
    commands.append((pending + line).strip())
    pending = ''
  if pending:
    commands.append(pending.strip())
  return tuple(commands)


def marked_blocks(page: pathlib.Path) -> list[Block]:
  """The marked ```bash blocks of one page, in page order."""
  lines = page.read_text(encoding='utf-8').splitlines()
  blocks = []
  for i, line in enumerate(lines):
    if line.strip() != MARKER or i + 1 >= len(lines) or lines[i + 1].strip() != '```bash':
      continue
    end = next((j for j in range(i + 2, len(lines)) if lines[j].strip() == '```'), len(lines))
    blocks.append(Block(str(page.relative_to(REPO)), i + 2, commands_of(lines[i + 2 : end])))
  return blocks


BLOCKS = [block for page in doc_pages() for block in marked_blocks(page)]


def test_marked_blocks_are_found():
  assert BLOCKS, f'No ```bash block is marked {MARKER!r} in README.md or docs/*.md.'
  assert any(b.page == 'README.md' for b in BLOCKS), f'README.md has no block marked {MARKER!r}.'
  for block in BLOCKS:
    assert block.commands, f'{block.id}: the marked block has no command.'
    prompts = [c for c in block.commands if c.startswith('$ ')]
    assert not prompts, f'{block.id}: a marked block holds commands, not a transcript: {prompts[0]}'


def test_every_marker_marks_a_bash_block():
  for page in doc_pages():
    lines = page.read_text(encoding='utf-8').splitlines()
    for i, line in enumerate(lines):
      if line.strip() == MARKER:
        following = lines[i + 1].strip() if i + 1 < len(lines) else '(end of file)'
        assert following == '```bash', (
          f'{page.relative_to(REPO)}:{i + 1}: the marker must be directly above a ```bash fence, '
          f'not {following!r}.'
        )


@pytest.fixture(scope='session')
def reader_env(tmp_path_factory) -> dict[str, str]:
  """A reader's environment: CPU, one device, the repository importable, one TFDS data dir."""
  bin_dir = tmp_path_factory.mktemp('bin')
  for name in ('python', 'python3'):
    # A wrapper, not a link: a venv's interpreter finds its site-packages from the path it runs as.
    wrapper = bin_dir / name
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update(
    JAX_PLATFORMS='cpu',
    TFDS_DATA_DIR=str(tmp_path_factory.mktemp('tfds_data')),
    PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get('PYTHONPATH', '')) if p),
    PATH=os.pathsep.join([str(bin_dir), env.get('PATH', '')]),
  )
  return env


@pytest.fixture(scope='session')
def page_workdirs(tmp_path_factory):
  """page -> its working directory, made on first use: fresh, with `configs` and `experiments` linked."""
  made = {}

  def workdir(page: str) -> pathlib.Path:
    if page not in made:
      path = tmp_path_factory.mktemp('docs_' + page.replace('/', '_').replace('.', '_'))
      for name in LINKED:
        (path / name).symlink_to(REPO / name, target_is_directory=True)
      made[page] = path
    return made[page]

  return workdir


@pytest.mark.parametrize('block', BLOCKS, ids=[b.id for b in BLOCKS])
def test_marked_block_runs_verbatim(block, reader_env, page_workdirs):
  cwd = page_workdirs(block.page)
  for command in block.commands:
    done = subprocess.run(
      ['bash', '-o', 'pipefail', '-c', command],
      cwd=cwd,
      env=reader_env,
      capture_output=True,
      text=True,
      timeout=COMMAND_TIMEOUT_S,
      check=False,
    )
    assert done.returncode == 0, (
      f'{block.page}, block at line {block.line}: `{command}` exited with {done.returncode} '
      f'(in {cwd}).\n--- stdout (end) ---\n{done.stdout[-2000:]}\n'
      f'--- stderr (end) ---\n{done.stderr[-4000:]}'
    )
