"""Builds the HTML API reference of codajax from its docstrings with pdoc; fails on any warning.

    python docs/build_api.py docs/api        # then open docs/api/index.html
    python docs/build_api.py OUT PACKAGE     # another package (the tests check the checker)

Equivalent to ``python -m pdoc -o docs/api codajax``, with two differences: every warning pdoc
reports (an unresolvable name, an annotation it cannot evaluate, a module that does not import,
a docstring include it cannot read) is printed and makes the exit status 1; and two things pdoc 16
does not follow are resolved first, so the reference is complete:

* names a package serves lazily through a module ``__getattr__`` (e.g. ``codajax.convert``'s
  B-cos converter) are looked up once, as ``from package import *`` would;
* a ``NamedTuple``'s generated constructor is attributed to the class's module, so pdoc evaluates
  its field annotations there (pdoc otherwise finds no module for them).

``tests/test_docs.py`` runs this script.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import sys
import types
import warnings
from pathlib import Path

PACKAGE = "codajax"


def _submodule_names(module: types.ModuleType) -> list[str]:
  """The submodules pdoc documents: those in ``__all__``, else every public one."""
  if not hasattr(module, "__path__"):
    return []
  found = {info.name for info in pkgutil.iter_modules(module.__path__)}
  if hasattr(module, "__all__"):
    return [name for name in module.__all__ if name in found]
  return sorted(name for name in found if not name.startswith("_"))


def _resolve_lazy_exports(module: types.ModuleType) -> None:
  """Binds each ``__all__`` name the module's ``__getattr__`` serves (pdoc reports the others)."""
  if "__getattr__" not in vars(module):
    return
  submodules = set(_submodule_names(module))
  for name in getattr(module, "__all__", ()):
    if name not in vars(module) and name not in submodules:
      try:
        setattr(module, name, getattr(module, name))
      except AttributeError:
        pass


def _home_namedtuple_constructors(module: types.ModuleType) -> None:
  """Gives each NamedTuple in ``module`` a constructor whose ``__module__`` is the class's."""
  for value in list(vars(module).values()):
    if inspect.isclass(value) and issubclass(value, tuple) and hasattr(value, "_fields"):
      if value.__new__.__module__ == f"namedtuple_{value.__name__}":
        value.__new__.__module__ = value.__module__


def prepare(name: str) -> None:
  """Imports ``name`` and every submodule pdoc will document, preparing each as described above."""
  module = importlib.import_module(name)
  for sub in _submodule_names(module):
    prepare(f"{name}.{sub}")
  _resolve_lazy_exports(module)
  _home_namedtuple_constructors(module)


def build(output_dir: Path, package: str = PACKAGE) -> list[str]:
  """Writes the reference of ``package`` into ``output_dir``; returns pdoc's warnings."""
  # matplotlib may run fc-list on its first import; pdoc suppresses (and warns about) processes
  # started during an import unless this is set.
  os.environ.setdefault("PDOC_ALLOW_EXEC", "1")
  import pdoc  # pylint: disable=import-outside-toplevel

  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    prepare(package)
    pdoc.pdoc(package, output_directory=output_dir)
  return [f"{w.category.__name__}: {w.message}" for w in caught if _from_pdoc(w.filename)]


def _from_pdoc(filename: str) -> bool:
  return f"{os.sep}pdoc{os.sep}" in filename


def main(argv: list[str]) -> int:
  if len(argv) not in (2, 3):
    print("usage: python docs/build_api.py OUTPUT_DIR [PACKAGE]", file=sys.stderr)
    return 2
  problems = build(Path(argv[1]), *argv[2:])
  for problem in problems:
    print(f"pdoc: {problem}", file=sys.stderr)
  if problems:
    print(f"{len(problems)} pdoc warning(s): the API reference is not clean", file=sys.stderr)
    return 1
  print(f"API reference written to {argv[1]}/index.html")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
