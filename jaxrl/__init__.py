"""jaxrl: scikit-learn's multi-layer perceptrons and a classic DQN agent as pure, jitted JAX functions.

Public names (re-exported explicitly): the estimators `MLPClassifier`, `MLPRegressor`, the grid fitter
`fit_grid` / `GridResult`, the DQN config `DQNConfig`, and the modules `jaxrl.datasets`, `jaxrl.mlp`
(functional MLP core), `jaxrl.dqn` (pure DQN core and its shells), `jaxrl.distributed` (joining a
multi-process run: `jaxrl.distributed.initialize()`).

The names are resolved on first access (PEP 562 module `__getattr__`), so `import jaxrl` and the command
line's `--help` do not import JAX, scikit-learn or NumPy; `from jaxrl import MLPClassifier` works as usual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jaxrl._lazy import lazy_names

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

__getattr__, __dir__ = lazy_names(__name__, _EXPORTS, _SUBMODULES)
