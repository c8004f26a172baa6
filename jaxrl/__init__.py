"""jaxrl: scikit-learn's multi-layer perceptrons and a classic DQN agent as pure, jitted JAX functions."""

__version__ = "0.1.0"

from jaxrl.mlp.estimators import MLPClassifier as MLPClassifier  # noqa: E402
from jaxrl.mlp.estimators import MLPRegressor as MLPRegressor  # noqa: E402
from jaxrl import datasets as datasets  # noqa: E402
from jaxrl.mlp.grid import GridResult as GridResult  # noqa: E402
from jaxrl.mlp.grid import fit_grid as fit_grid  # noqa: E402
from jaxrl.dqn.config import DQNConfig as DQNConfig  # noqa: E402
