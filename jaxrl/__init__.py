"""jaxrl: scikit-learn's multi-layer perceptrons and a classic DQN agent as pure, jitted JAX functions.

Public names (re-exported explicitly): the estimators `MLPClassifier`, `MLPRegressor`, the grid fitter
`fit_grid` / `GridResult`, the DQN config `DQNConfig`, and the modules `jaxrl.datasets`, `jaxrl.mlp`
(functional MLP core), `jaxrl.dqn` (pure DQN core and its shells), `jaxrl.distributed` (joining a
multi-process run: `jaxrl.distributed.initialize()`).

The names are resolved on first access (PEP 562 module `__getattr__`), so `import jaxrl` and the command
line's `--help` do not import JAX, scikit-learn or NumPy; `from jaxrl import MLPClassifier` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it (a module itself when the name is a submodule)
_EXPORTS = {
    "DQNConfig": "jaxrl.dqn.config",
    "GridResult": "jaxrl.mlp.grid",
    "MLPClassifier": "jaxrl.mlp.estimators",
    "MLPRegressor": "jaxrl.mlp.estimators",
    "fit_grid": "jaxrl.mlp.grid",
}
_SUBMODULES = ("datasets", "distributed", "dqn", "mlp")

__all__ = ["DQNConfig", "GridResult", "MLPClassifier", "MLPRegressor", "datasets", "fit_grid"]

if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from jaxrl import datasets, distributed, dqn, mlp
    from jaxrl.dqn.config import DQNConfig
    from jaxrl.mlp.estimators import MLPClassifier, MLPRegressor
    from jaxrl.mlp.grid import GridResult, fit_grid


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access and cache the name in this module."""
    if name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))
