"""scikit-learn's end-of-epoch bookkeeping of the stochastic MLP solvers, written once.

After every epoch, ``BaseMultilayerPerceptron._fit_stochastic`` (scikit-learn 1.9) counts the samples seen
(``t_``), tracks the best training loss or, with ``early_stopping``, the best validation score, counts the
epochs that did not improve on it by more than ``tol`` (``_update_no_improvement_count``), updates the sgd
learning rate (``SGDOptimizer.iteration_ends``: ``invscaling``) and, after more than ``n_iter_no_change``
such epochs, either stops or, for sgd's ``adaptive`` rate, divides the rate by 5 and goes on
(``SGDOptimizer.trigger_stopping``, which stops once the rate is ``<= 1e-6``).

:func:`epoch_end` is that step as one pure function ``(state, loss, ...) -> state``, used by both training
loops: the estimator's host loop (:mod:`jaxrl.mlp.estimators`) calls it on NumPy scalars (no device round
trip, no JAX dispatch per epoch), and :func:`jaxrl.mlp.grid.fit_grid`'s compiled loop calls it on ``[R]``
arrays of runs under ``jit`` (elementwise, so every field may carry a leading run axis). The arithmetic uses
the array module of its inputs: NumPy for NumPy / Python numbers, ``jax.numpy`` for JAX arrays and tracers.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["SCHEDULES", "EpochEndConfig", "EpochEndState", "epoch_end", "init_epoch_end", "schedule_code"]

# sgd's ``learning_rate`` schedules; adam's rate is constant (code 0).
SCHEDULES = {"constant": 0, "invscaling": 1, "adaptive": 2}
_INVSCALING, _ADAPTIVE = SCHEDULES["invscaling"], SCHEDULES["adaptive"]
_SMALLEST_ADAPTIVE_RATE = 1e-6  # SGDOptimizer.trigger_stopping stops at or below this rate


class EpochEndConfig(NamedTuple):
    """The stopping rule and learning-rate schedule (Python / NumPy numbers on the host, arrays under jit)."""

    tol: Any  # () float, the improvement that counts
    n_iter_no_change: Any  # () float (may be inf), epochs without improvement tolerated
    schedule: Any  # () int, SCHEDULES code: 0 constant (and adam), 1 invscaling, 2 adaptive
    learning_rate_init: Any  # () or [R] float, invscaling's numerator
    power_t: Any  # () float, invscaling's exponent


class EpochEndState(NamedTuple):
    """sklearn's epoch-end attributes of one run (every field ``()``) or of ``R`` runs (every field ``[R]``)."""

    n_iter: Any  # int, epochs run (sklearn's n_iter_)
    samples_seen: Any  # int, training samples seen (sklearn's t_)
    best_loss: Any  # float, lowest training loss (best_loss_; inf before the first epoch)
    best_score: Any  # float, best validation score (best_validation_score_; -inf at first; early_stopping)
    no_improvement: Any  # int, epochs in a row without improvement (sklearn's _no_improvement_count)
    learning_rate: Any  # float, the optimizer's learning rate for the next epoch (dtype of the parameters)
    improved: Any  # bool, this epoch's validation score is the best so far: keep its parameters
    stopped: Any  # bool, the stopping rule fired (trigger_stopping returned True)


def schedule_code(solver: str, learning_rate: str) -> int:
    """The ``SCHEDULES`` code of an estimator's ``solver`` / ``learning_rate`` (adam: constant)."""
    return SCHEDULES[learning_rate] if solver == "sgd" else SCHEDULES["constant"]


def init_epoch_end(learning_rate) -> EpochEndState:
    """The state before the first epoch, shaped like ``learning_rate`` (``()`` or ``[R]``, NumPy).

    Args:
      learning_rate: ``()`` or ``[R]`` float, the initial learning rate (its dtype is kept).
    """
    learning_rate = np.asarray(learning_rate)
    shape = learning_rate.shape
    return EpochEndState(
        n_iter=np.zeros(shape, np.int32),
        samples_seen=np.zeros(shape, np.int32),
        best_loss=np.full(shape, np.inf, learning_rate.dtype),
        best_score=np.full(shape, -np.inf, learning_rate.dtype),
        no_improvement=np.zeros(shape, np.int32),
        learning_rate=learning_rate,
        improved=np.zeros(shape, bool),
        stopped=np.zeros(shape, bool),
    )


def _array_module(*values):
    """``jax.numpy`` when any value is a JAX array (or tracer), else NumPy."""
    return jnp if any(isinstance(v, jax.Array) for v in jax.tree.leaves(values)) else np


def epoch_end(state: EpochEndState, loss, n_samples, config: EpochEndConfig, val_score=None) -> EpochEndState:
    """sklearn's bookkeeping after one finished epoch (``_fit_stochastic``'s loop body after the updates).

    Args:
      state: the bookkeeping before this epoch.
      loss: ``()`` / ``[R]`` float, this epoch's (finite) training loss.
      n_samples: ``()`` / ``[R]`` int, training rows of the epoch (added to ``samples_seen``).
      config: tol, n_iter_no_change and the learning-rate schedule.
      val_score: ``()`` / ``[R]`` float validation score (``early_stopping``: the improvement is
        measured on it, ``nan`` never improves), or None (measured on the training loss).

    Returns:
      The state after the epoch. ``learning_rate`` is the rate for the next epoch; ``stopped`` is True when
      training ends here (the caller also stops at ``max_iter``).
    """
    xp = _array_module(state, loss, n_samples, config, val_score)
    n_iter = state.n_iter + 1
    samples_seen = state.samples_seen + n_samples

    # _update_no_improvement_count (comparisons with nan are False, as in Python)
    if val_score is None:
        worse = loss > state.best_loss - config.tol
        best_loss = xp.where(loss < state.best_loss, loss, state.best_loss)
        best_score, improved = state.best_score, xp.zeros(xp.shape(loss), bool)
    else:
        worse = val_score < state.best_score + config.tol
        improved = xp.asarray(val_score > state.best_score)
        best_loss, best_score = state.best_loss, xp.where(improved, val_score, state.best_score)
    no_improvement = xp.where(worse, state.no_improvement + 1, 0)

    # SGDOptimizer.iteration_ends: invscaling after every epoch
    learning_rate = state.learning_rate
    inverse_scaled = xp.asarray(config.learning_rate_init / (samples_seen + 1) ** config.power_t,
                                dtype=learning_rate.dtype)
    learning_rate = xp.where(xp.asarray(config.schedule == _INVSCALING), inverse_scaled, learning_rate)

    # SGDOptimizer.trigger_stopping once stuck: stop, or (adaptive, rate above 1e-6) divide the rate by 5
    stuck = xp.asarray(no_improvement > config.n_iter_no_change)
    adaptive = xp.asarray(config.schedule == _ADAPTIVE)
    too_small = xp.asarray(learning_rate <= _SMALLEST_ADAPTIVE_RATE)
    lower = stuck & adaptive & ~too_small
    return EpochEndState(
        n_iter=n_iter,
        samples_seen=samples_seen,
        best_loss=best_loss,
        best_score=best_score,
        no_improvement=xp.where(lower, 0, no_improvement),
        learning_rate=xp.where(lower, learning_rate / 5.0, learning_rate),
        improved=improved,
        stopped=stuck & ~lower,
    )
