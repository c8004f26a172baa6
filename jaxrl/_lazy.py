"""Lazy public names for a package (PEP 562): a name's module is imported on its first access.

Used by ``jaxrl``, ``jaxrl.mlp`` and ``jaxrl.dqn`` so that importing them (and building the command line's
parsers) does not import JAX, scikit-learn or envpool.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Iterable, Mapping


def lazy_names(package: str, exports: Mapping[str, str],
               submodules: Iterable[str] = ()) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``(__getattr__, __dir__)`` of ``package``.

    Args:
      package: the package's ``__name__``.
      exports: public name -> the module that defines it.
      submodules: names of subpackages / submodules resolved as modules.
    """
    submodules = tuple(submodules)

    def __getattr__(name: str) -> Any:
        if name in submodules:
            value = importlib.import_module(f"{package}.{name}")
        elif name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)  # cached: later accesses skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports) | set(submodules))

    return __getattr__, __dir__
