"""The import graph of a package, read from its source (nothing is imported): edges and cycles.

  python tests/import_graph.py            # every edge of hybrid_jax, one 'a -> b' per line
  python tests/import_graph.py --cycles   # the cycles (none expected)

An edge a -> b means module a imports module b when a is imported (a module-level import, also one
inside a module-level `if` or `try`); importing a submodule also imports its packages, so
`import hybrid_jax.data.decoders` gives the edges to `hybrid_jax.data` and `hybrid_jax.data.decoders`.
Imports inside functions run later and are not edges (tests/test_package_structure.py lists them).
"""

import ast
import os
import sys
from typing import Iterator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def modules(package: str = 'hybrid_jax') -> dict[str, str]:
  """{dotted module name: file path} of every .py file of `package` (packages by __init__)."""
  out = {}
  root = os.path.join(REPO, package)
  for dirpath, _, names in os.walk(root):
    for name in names:
      if not name.endswith('.py'):
        continue
      rel = os.path.relpath(os.path.join(dirpath, name), REPO)[: -len('.py')]
      parts = rel.split(os.sep)
      if parts[-1] == '__init__':
        parts = parts[:-1]
      out['.'.join(parts)] = os.path.join(dirpath, name)
  return out


def module_level_statements(tree: ast.Module) -> Iterator[ast.stmt]:
  """Statements that run when the module is imported (descending into if/try/with, not defs)."""
  stack = list(tree.body)
  while stack:
    node = stack.pop(0)
    yield node
    if isinstance(node, (ast.If, ast.Try, ast.With)):
      for field in ('body', 'orelse', 'finalbody', 'handlers'):
        for child in getattr(node, field, []):
          stack.extend(child.body if isinstance(child, ast.ExceptHandler) else [child])


def imported_names(node: ast.stmt, module: str, is_package: bool) -> list[str]:
  """Dotted names an import statement brings in (absolute; `from a import b` gives a and a.b)."""
  if isinstance(node, ast.Import):
    return [alias.name for alias in node.names]
  if isinstance(node, ast.ImportFrom):
    if node.level:
      base = module.split('.') if is_package else module.split('.')[:-1]
      base = base[: len(base) - (node.level - 1)]
      source = '.'.join(base + ([node.module] if node.module else []))
    else:
      source = node.module or ''
    return [source] + [f'{source}.{alias.name}' for alias in node.names]
  return []


def edges(package: str = 'hybrid_jax') -> set[tuple[str, str]]:
  """(importer, imported) pairs between the package's own modules."""
  known = modules(package)
  out = set()
  for module, path in known.items():
    with open(path, encoding='utf-8') as f:
      tree = ast.parse(f.read(), path)
    is_package = path.endswith('__init__.py')
    for node in module_level_statements(tree):
      for name in imported_names(node, module, is_package):
        parts = name.split('.')
        for i in range(1, len(parts) + 1):  # Importing a.b.c imports a and a.b first.
          target = '.'.join(parts[:i])
          if target in known and target != module and not module.startswith(target + '.'):
            out.add((module, target))
  return out


def cycles(graph_edges: set[tuple[str, str]]) -> list[list[str]]:
  """Every strongly connected component with more than one module (Tarjan's algorithm)."""
  graph: dict[str, list[str]] = {}
  for a, b in graph_edges:
    graph.setdefault(a, []).append(b)
    graph.setdefault(b, [])
  index, low, on_stack, stack, found = {}, {}, set(), [], []

  def visit(node: str) -> None:
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for nxt in graph[node]:
      if nxt not in index:
        visit(nxt)
        low[node] = min(low[node], low[nxt])
      elif nxt in on_stack:
        low[node] = min(low[node], index[nxt])
    if low[node] == index[node]:
      component = []
      while True:
        top = stack.pop()
        on_stack.discard(top)
        component.append(top)
        if top == node:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for node in sorted(graph):
    if node not in index:
      visit(node)
  return found


if __name__ == '__main__':
  all_edges = edges()
  if '--cycles' in sys.argv:
    print('\n'.join(' <-> '.join(c) for c in cycles(all_edges)) or 'no cycle')
  else:
    print('\n'.join(f'{a} -> {b}' for a, b in sorted(all_edges)))
