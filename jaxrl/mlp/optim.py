"""optax transforms that reproduce scikit-learn's MLP optimizers step for step.

scikit-learn (``sklearn/neural_network/_stochastic_optimizers.py``) updates the
parameters with

* SGD:   ``v <- momentum * v - lr * g``; update ``v`` (or, with Nesterov,
  ``momentum * v - lr * g`` using the *new* ``v``). The learning rate sits
  inside the velocity, so a learning-rate change only affects new gradients.
* Adam:  ``m <- b1 m + (1-b1) g``, ``v <- b2 v + (1-b2) g^2``,
  ``lr_t = lr * sqrt(1-b2^t) / (1-b1^t)``, update ``-lr_t * m / (sqrt(v) + eps)``.
  Epsilon is added to the *uncorrected* ``sqrt(v)`` and the bias correction is
  folded into the step size, which is not ``optax.adam``'s formula.

Both optimizers carry their numeric hyper-parameters in the optimizer state
(``optax.inject_hyperparams``), so the host can change the learning rate between
epochs (``invscaling``, ``adaptive``) without recompiling anything.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "SklearnAdamState",
    "sklearn_sgd",
    "sklearn_adam",
    "make_optimizer",
    "init_optimizer",
    "state_shapes",
    "get_learning_rate",
    "set_learning_rate",
    "invscaling_learning_rate",
]


class SklearnAdamState(NamedTuple):
    """State of :func:`sklearn_adam`."""

    count: jax.Array  # () int32, number of updates done so far (sklearn's ``t``)
    mu: optax.Updates  # first moments, same pytree/shapes as params
    nu: optax.Updates  # second moments, same pytree/shapes as params


def sklearn_adam(
    learning_rate: float = 0.001, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> optax.GradientTransformation:
    """scikit-learn's ``AdamOptimizer`` update, operation for operation.

    ``t <- t + 1``; ``m <- b1 m + (1-b1) g``; ``v <- b2 v + (1-b2) g**2``;
    ``lr_t = lr * sqrt(1 - b2**t) / (1 - b1**t)``; update ``-lr_t * m / (sqrt(v) + eps)``.
    Unlike ``optax.adam``, eps is added to the uncorrected ``sqrt(v)`` and the bias
    correction is folded into the step size (Kingma & Ba 2014, Algorithm 1 end note).

    Args:
      learning_rate: sklearn's ``learning_rate_init``.
      b1: decay of the first moment (sklearn's ``beta_1``).
      b2: decay of the second moment (sklearn's ``beta_2``).
      eps: added to the uncorrected ``sqrt(v)`` (sklearn's ``epsilon``).
    """

    def init_fn(params):
        return SklearnAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=jax.tree.map(jnp.zeros_like, params),
            nu=jax.tree.map(jnp.zeros_like, params),
        )

    def update_fn(updates, state, params=None):
        del params
        count = state.count + 1
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * (g**2), state.nu, updates)
        t = count.astype(jnp.asarray(learning_rate).dtype)
        step_size = learning_rate * jnp.sqrt(1 - b2**t) / (1 - b1**t)
        new_updates = jax.tree.map(lambda m, v: -step_size * m / (jnp.sqrt(v) + eps), mu, nu)
        return new_updates, SklearnAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def sklearn_sgd(learning_rate: float, momentum: float, nesterov: bool) -> optax.GradientTransformation:
    """scikit-learn's ``SGDOptimizer``: ``v <- momentum v - lr g`` (+ Nesterov).

    ``scale_by_learning_rate`` makes ``-lr g``; ``optax.trace`` then keeps
    ``v = -lr g + momentum v`` and returns ``v`` (or ``-lr g + momentum v``
    with Nesterov), which is sklearn's velocity with the learning rate inside.
    """
    return optax.chain(
        optax.scale_by_learning_rate(learning_rate),
        optax.trace(decay=momentum, nesterov=nesterov),
    )


@functools.lru_cache(maxsize=None)
def make_optimizer(solver: str, nesterov: bool = True) -> optax.GradientTransformation:
    """The optax transform for a stochastic solver, hyper-parameters injected.

    Cached so that the same object (a hashable ``static_argnames`` value for
    ``jax.jit``) is returned for the same solver: every fit reuses the compiled
    training epoch. Numeric hyper-parameters are set by :func:`init_optimizer`.

    Args:
      solver: ``"sgd"`` or ``"adam"``.
      nesterov: Nesterov momentum for ``"sgd"`` (ignored for ``"adam"``).
    """
    if solver == "sgd":
        return optax.inject_hyperparams(sklearn_sgd, static_args=("nesterov",))(
            learning_rate=0.1, momentum=0.9, nesterov=bool(nesterov)
        )
    if solver == "adam":
        return optax.inject_hyperparams(sklearn_adam)(learning_rate=0.001, b1=0.9, b2=0.999, eps=1e-8)
    raise ValueError(f"solver must be 'sgd' or 'adam' for a stochastic optimizer, got {solver!r}.")


def state_shapes(optimizer: optax.GradientTransformation, params):
    """``jax.eval_shape(optimizer.init, params)``, cached by the optimizer and the parameters' shapes and dtypes.

    A grid of many runs of one architecture builds one state per run on the host; tracing ``init`` once
    instead of per run keeps that out of ``fit_grid``'s preparation time.
    """
    leaves, treedef = jax.tree.flatten(params)
    return _state_shapes(optimizer, treedef, tuple((np.shape(leaf), np.dtype(leaf.dtype).str) for leaf in leaves))


@functools.lru_cache(maxsize=64)
def _state_shapes(optimizer, treedef, leaf_specs):
    params = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in leaf_specs])
    return jax.eval_shape(optimizer.init, params)


def init_optimizer(optimizer: optax.GradientTransformation, params, dtype, **hyperparams):
    """``optimizer.init(params)`` with the given numeric hyper-parameters.

    Args:
      optimizer: from :func:`make_optimizer`.
      params: the parameter pytree.
      dtype: dtype of the hyper-parameters (the parameters' float dtype).
      **hyperparams: e.g. ``learning_rate=0.01, momentum=0.9`` (sgd) or
        ``learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8`` (adam).
    """
    state = optimizer.init(params)
    values = dict(state.hyperparams)
    for name, value in hyperparams.items():
        if name not in values:
            raise ValueError(f"unknown hyper-parameter {name!r}; expected one of {sorted(values)}.")
        values[name] = jnp.asarray(value, dtype=dtype)
    for name in values:
        values[name] = jnp.asarray(values[name], dtype=dtype)
    return state._replace(hyperparams=values)


def get_learning_rate(opt_state) -> float:
    """The current learning rate held in an injected optimizer state."""
    return float(opt_state.hyperparams["learning_rate"])


def set_learning_rate(opt_state, learning_rate: float):
    """A copy of ``opt_state`` with a new learning rate (no recompilation)."""
    old = opt_state.hyperparams["learning_rate"]
    values = dict(opt_state.hyperparams)
    values["learning_rate"] = jax.device_put(np.asarray(learning_rate, dtype=old.dtype))
    return opt_state._replace(hyperparams=values)


def invscaling_learning_rate(learning_rate_init: float, samples_seen: int, power_t: float) -> float:
    """sklearn's ``invscaling``: ``learning_rate_init / (t + 1) ** power_t``, t = samples seen."""
    return float(learning_rate_init) / (samples_seen + 1) ** power_t
