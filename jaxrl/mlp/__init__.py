"""Multi-layer perceptrons: a pure functional core and scikit-learn-compatible estimators."""

from jaxrl.mlp.core import (
    Batch,
    MLPSpec,
    forward,
    forward_logits,
    init_params,
    init_params_numpy,
    loss,
    make_batches,
    objective,
    train_epoch,
    train_step,
)
from jaxrl.mlp.estimators import MLPClassifier, MLPRegressor
from jaxrl.mlp.grid import GridResult, fit_grid
from jaxrl.mlp.lbfgs import LBFGSResult, lbfgs_fit
from jaxrl.mlp.optim import (
    get_learning_rate,
    init_optimizer,
    make_optimizer,
    set_learning_rate,
    sklearn_adam,
    sklearn_sgd,
)

__all__ = [
    "Batch",
    "MLPSpec",
    "forward",
    "forward_logits",
    "init_params",
    "init_params_numpy",
    "loss",
    "objective",
    "train_step",
    "make_batches",
    "train_epoch",
    "lbfgs_fit",
    "LBFGSResult",
    "make_optimizer",
    "init_optimizer",
    "get_learning_rate",
    "set_learning_rate",
    "sklearn_sgd",
    "sklearn_adam",
    "MLPClassifier",
    "MLPRegressor",
    "fit_grid",
    "GridResult",
]
