"""Multi-layer perceptrons: a pure functional core and scikit-learn-compatible estimators.

The public names below are resolved on first access (PEP 562 module `__getattr__`), so importing
`jaxrl.mlp.cli` to build the command line's parser does not import JAX or scikit-learn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jaxrl._lazy import lazy_names

# public name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(
        (
            "Batch",
            "MLPSpec",
            "forward",
            "forward_logits",
            "init_params",
            "init_params_numpy",
            "loss",
            "make_batches",
            "objective",
            "train_epoch",
            "train_step",
        ),
        "jaxrl.mlp.core",
    ),
    # (the function epoch_end is reached as jaxrl.mlp.epoch_end.epoch_end: the name is its module's)
    **dict.fromkeys(("EpochEndConfig", "EpochEndState", "init_epoch_end"), "jaxrl.mlp.epoch_end"),
    "MLPClassifier": "jaxrl.mlp.estimators",
    "MLPRegressor": "jaxrl.mlp.estimators",
    "GridResult": "jaxrl.mlp.grid",
    "fit_grid": "jaxrl.mlp.grid",
    "LBFGSResult": "jaxrl.mlp.lbfgs",
    "lbfgs_fit": "jaxrl.mlp.lbfgs",
    **dict.fromkeys(
        (
            "get_learning_rate",
            "init_optimizer",
            "make_optimizer",
            "set_learning_rate",
            "sklearn_adam",
            "sklearn_sgd",
        ),
        "jaxrl.mlp.optim",
    ),
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
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
    from jaxrl.mlp.epoch_end import EpochEndConfig, EpochEndState, init_epoch_end
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

__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)
