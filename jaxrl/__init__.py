"""jaxrl: scikit-learn's multi-layer perceptrons and a classic DQN agent as pure, jitted JAX functions.

Public names (re-exported explicitly): the estimators `MLPClassifier`, `MLPRegressor`, the grid fitter
`fit_grid` / `GridResult`, the DQN config `DQNConfig`, and the modules `jaxrl.datasets`, `jaxrl.mlp`
(functional MLP core), `jaxrl.dqn` (pure DQN core and its shells).
"""

__version__ = "0.1.0"

from jaxrl import datasets as datasets  # noqa: E402
from jaxrl.dqn.config import DQNConfig as DQNConfig  # noqa: E402
from jaxrl.mlp.estimators import MLPClassifier as MLPClassifier  # noqa: E402
from jaxrl.mlp.estimators import MLPRegressor as MLPRegressor  # noqa: E402
from jaxrl.mlp.grid import GridResult as GridResult  # noqa: E402
from jaxrl.mlp.grid import fit_grid as fit_grid  # noqa: E402

__all__ = ["DQNConfig", "GridResult", "MLPClassifier", "MLPRegressor", "datasets", "fit_grid"]
