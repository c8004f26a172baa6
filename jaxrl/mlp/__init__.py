"""Multi-layer perceptrons: a pure functional core and scikit-learn-compatible estimators."""

from jaxrl.mlp.core import (
    Batch,
    MLPSpec,
    forward,
    forward_logits,
    init_params,
    init_params_numpy,
    loss,
    objective,
    train_epoch,
    train_step,
)
from jaxrl.mlp.estimators import MLPClassifier, MLPRegressor
from jaxrl.mlp.lbfgs import LBFGSResult, lbfgs_fit
from jaxrl.mlp.optim import make_optimizer, sklearn_adam, sklearn_sgd

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
    "train_epoch",
    "lbfgs_fit",
    "LBFGSResult",
    "make_optimizer",
    "sklearn_sgd",
    "sklearn_adam",
    "MLPClassifier",
    "MLPRegressor",
]
