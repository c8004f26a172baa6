"""Fit a whole hyper-parameter grid of MLPs in one vmapped, compiled call.

:func:`fit_grid` trains every combination of ``alpha`` x ``learning_rate_init`` x
``random_state`` (and, with ``cv=k``, every cross-validation fold) of one
``MLPClassifier`` / ``MLPRegressor`` (solver ``sgd`` or ``adam``) at once: the
runs are stacked on a leading axis and :func:`jaxrl.mlp.core.train_epoch` is
``jax.vmap``-ed over it, inside one jitted ``lax.while_loop`` over epochs. There
is no second training loop: the minibatch step, loss and optimizer are the
core's, and sklearn's epoch-end bookkeeping (loss curve, ``tol`` /
``n_iter_no_change`` stopping, ``invscaling`` / ``adaptive`` learning rates) is
the estimator's own :func:`jaxrl.mlp.epoch_end.epoch_end`, on arrays of runs,
masking the runs that have stopped.

The steps live in their own modules: :mod:`jaxrl.mlp.grid_prepare` (validation,
the runs and their initial state, data placement, per-epoch shuffles),
:mod:`jaxrl.mlp.grid_loop` (the compiled loop) and :mod:`jaxrl.mlp.grid_score`
(fitted attributes, scores, ``cv_results``); this module runs them in order.

Each run reproduces scikit-learn's semantics for its own parameters: the same
initial weights and the same per-epoch shuffles as ``estimator.set_params(...)
.fit(X, y)`` (both drawn, in sklearn's order, from that run's NumPy
``RandomState``), the same ragged last batch, the same stopping epoch. The
fitted estimators therefore carry the same ``coefs_`` as individual fits, within
float tolerance.

Data placement: ``X``, ``y`` and the sample weights go to the device once; each
call of the compiled loop receives the minibatch row indices of a *chunk* of
epochs (one host-to-device copy per chunk, none per batch), and the host
prepares the next chunk's shuffles while the device trains on the current one.

With ``data_parallel=True`` the minibatch axis is split over a
``jax.sharding.Mesh`` of all devices (data replicated once per device,
gradients summed by XLA); with ``shard_runs=True`` the *runs* are split over the
devices instead (each device trains its share of the models, no communication
but the "all stopped?" test). See :mod:`jaxrl.mlp.parallel`.

Several processes (``jaxrl.distributed.initialize()``, e.g. under ``jaxrl launch``):
every process calls ``fit_grid`` with the same arguments; the mesh then spans the
devices of all processes, and every process gets the same :class:`GridResult` as a
one-process call. Each process prepares every run on its host (initial weights,
shuffles: cheap next to training) and copies only its own devices' slices to them;
the fitted state is gathered to every process at the end (the stopping test each
chunk), and each process scores the models on its own devices.

``early_stopping=True`` works per run as in the estimator: the validation split is
drawn from the run's ``RandomState``, the validation score (accuracy or R^2) is
computed inside the loop every epoch, and the best-scoring parameters are kept.

Not supported (clear ``ValueError``): ``solver="lbfgs"``, ``warm_start=True``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from jaxrl.mlp import parallel as mlp_parallel
from jaxrl.mlp.grid_loop import GridState, _compile, _compiled, validation_score  # noqa: F401 (re-exported)
from jaxrl.mlp.grid_prepare import (  # noqa: F401 (grid_batches, param_grid re-exported)
    PreparedGrid,
    _check_arguments,
    _shuffled_rows,
    _same_minibatches,
    grid_batches,
    param_grid,
    prepare_grid,
    validate_data,
)
from jaxrl.mlp.grid_score import (  # noqa: F401 (run_hits, run_outputs re-exported)
    _best_index,
    _report_stopping,
    _results_table,
    _run_scores,
    _set_fitted,
    run_hits,
    run_outputs,
)

__all__ = ["GridState", "GridResult", "fit_grid", "grid_batches", "param_grid"]


@dataclass
class GridResult:
    """What :func:`fit_grid` returns.

    Attributes:
      estimators: one fitted estimator per grid point (on all of ``X`` when
        ``cv`` is None, refitted on all of ``X`` after cross-validation
        otherwise; empty with ``refit=False``), in the order of ``params``.
      params: the grid points, ``[{"alpha": ..., "learning_rate_init": ...,
        "random_state": ...}, ...]``, in ``sklearn.model_selection.ParameterGrid``
        order (keys sorted, last key fastest).
      cv_results: ``GridSearchCV.cv_results_``-style dict of arrays (one entry
        per grid point): ``params``, ``param_<name>``, ``split<k>_test_score``,
        ``mean_test_score``, ``std_test_score``, ``rank_test_score`` (with
        ``cv``), ``train_score`` (of the full-data fits), ``n_iter``, ``final_loss``
        (fold means when ``refit=False``), ``diverged``.
      best_index, best_params, best_estimator, best_score: by
        ``mean_test_score`` with ``cv``, else by the training score
        (``best_estimator`` is None with ``refit=False``).
      timings: seconds spent in ``prepare`` (host: validation, init, shuffles),
        ``compile`` (XLA compilation, 0 when cached), ``train`` (the compiled
        loop, device time plus overlapped host shuffles), ``score`` (every run's
        test-fold / training score: one device call, labels on the host) and ``total``.
      n_runs: number of vmapped training runs (grid points x (folds + refit)).
    """

    estimators: list
    params: list
    cv_results: dict
    best_index: int
    best_params: dict
    best_estimator: Any
    best_score: float
    timings: dict = field(default_factory=dict)
    n_runs: int = 0


def fit_grid(
    estimator,
    X,
    y,
    *,
    alpha=None,
    learning_rate_init=None,
    random_state=None,
    cv=None,
    sample_weight=None,
    data_parallel: bool = False,
    shard_runs: bool = False,
    epochs_per_call: int | None = None,
    error_score="nan",
    refit: bool = True,
) -> GridResult:
    """Fit every ``alpha x learning_rate_init x random_state`` model (x cv folds) in one vmapped call.

    The same as ``[clone(estimator).set_params(**p).fit(X, y) for p in grid]``
    (and, with ``cv``, as ``GridSearchCV(estimator, grid, cv=cv, refit=...)``
    with every grid point refitted), but all runs train together: one compiled
    ``lax.while_loop`` over epochs of ``jax.vmap(core.train_epoch)``.

    Args:
      estimator: an unfitted ``jaxrl.MLPClassifier`` / ``MLPRegressor`` template
        (solver ``"sgd"`` or ``"adam"``; every other parameter is shared).
      X: ``[n_samples, n_features]`` array-like (float32 stays float32, float64
        trains in JAX's 64-bit mode, as the estimator).
      y: ``[n_samples]`` or ``[n_samples, n_outputs]`` targets.
      alpha: list of L2 strengths (``>= 0``); None = the estimator's.
      learning_rate_init: list of initial learning rates (``> 0``); None = the estimator's.
      random_state: list of ints (or None) seeding each model's init and shuffles; None = the estimator's.
      cv: None (fit on all of ``X``), an int k (``StratifiedKFold`` for
        classifiers, ``KFold`` otherwise, as ``GridSearchCV``) or a splitter /
        iterable of ``(train, test)`` index pairs. The folds are vmapped too.
      sample_weight: ``[n_samples]`` or None, used for training (not scoring).
      data_parallel: split each minibatch over all devices (a 1-D ``Mesh``; with
        several processes, the devices of all of them).
      shard_runs: split the runs over all devices, of every process (padded with
        inactive copies to a multiple of the device count); exclusive with ``data_parallel``.
      epochs_per_call: epochs per compiled call (default: as many as fit in a
        256 MiB index budget, up to ``max_iter``).
      error_score: ``"nan"`` (a diverged model scores nan and keeps its last
        finite weights, with a warning) or ``"raise"`` (``ValueError``).
      refit: with ``cv``, also fit every grid point on all of ``X`` (in the
        same call) and return those estimators; ``False`` trains the folds
        only (``estimators == []``, ``best_estimator is None``).

    Returns:
      :class:`GridResult` (``estimators``, ``params``, ``cv_results``, ``best_*``, ``timings``).

    Raises:
      ValueError / TypeError: bad grid values, unsupported estimator settings
        (lbfgs, warm_start), a cv fold missing a class, a validation set under 2 rows.
    """
    start_total = time.perf_counter()
    _check_arguments(estimator, error_score=error_score, epochs_per_call=epochs_per_call, refit=refit, cv=cv,
                     data_parallel=data_parallel, shard_runs=shard_runs)
    grid = param_grid(estimator, alpha, learning_rate_init, random_state)
    data = validate_data(estimator, X, y, sample_weight, cv=cv, refit=refit)
    max_iter, n_fold_runs = int(estimator.max_iter), data.n_folds * len(grid)
    with jax.enable_x64(bool(data.x.dtype == np.float64)):
        prepared = prepare_grid(estimator, grid, data, y, data_parallel=data_parallel, shard_runs=shard_runs,
                                epochs_per_call=epochs_per_call)
        timings = dict(prepare=time.perf_counter() - start_total)

        start_train = time.perf_counter()
        host, curves, timings["compile"] = _train(prepared, max_iter)
        timings["train"] = time.perf_counter() - start_train - timings["compile"]
        early_stopping, spec = prepared.static["early_stopping"], prepared.static["spec"]
        _set_fitted(prepared.runs, host, curves, early_stopping)

        start_score = time.perf_counter()
        x_local, y_local = (mlp_parallel.local_replica(a) for a in prepared.data[:2])  # this process's copy
        scores = _run_scores(prepared.runs, host, x_local, y_local, np.asarray(y), spec, early_stopping, n_fold_runs)
        timings["score"] = time.perf_counter() - start_score

    _report_stopping(prepared.runs, host, max_iter, error_score)
    return _grid_result(grid, prepared.runs, host, scores, data.n_folds, timings, start_total)


def _train(prepared: PreparedGrid, max_iter: int):
    """Chunks of ``epochs_per_call`` epochs until every run stopped; the host shuffles ahead of the device.

    When every run draws the same minibatches (:func:`_same_minibatches`), only one run's shuffles are made
    and sent (``[1, E, ...]``, see ``_train_chunk``).

    Returns:
      ``(host_state, curves [2, epochs, R] (loss, validation score), compile_seconds)``, without the padding
      runs of ``shard_runs``.
    """
    state, runs, layout, epochs_per_call = prepared.state, prepared.runs, prepared.layout, prepared.epochs_per_call
    place, n_runs, held = prepared.place_held, len(runs), prepared.held_runs
    curves, epochs_done, compile_seconds = [], 0, 0.0
    if len(runs) > 1 and _same_minibatches(runs):
        runs, place, held = runs[:1], prepared.place_shared, [0]  # shuffle for run 0 only
    orders = [np.arange(len(r.train), dtype=int) for r in runs]
    rows = place(_shuffled_rows(runs, orders, epochs_per_call, layout, held))
    while True:
        args = (state, *prepared.data, rows, prepared.config, prepared.shared)
        compiled, seconds = _compile(args, prepared.static)
        compile_seconds += seconds
        state, curve = compiled(*args)  # asynchronous: the host prepares the next chunk meanwhile
        epochs_done += epochs_per_call
        remaining = max_iter - epochs_done
        next_rows = (_shuffled_rows(runs, orders, min(epochs_per_call, remaining), layout, held)
                     if remaining > 0 else None)
        curve, active = mlp_parallel.to_host((curve, state.active))  # gathered from every process
        curves.append(curve)
        if next_rows is None or not bool(active.any()):
            break
        pad = epochs_per_call - next_rows.shape[1]  # keep one compiled shape: pad the last chunk (never run)
        rows = place(np.pad(next_rows, ((0, 0), (0, pad), (0, 0), (0, 0))) if pad else next_rows)
    host = jax.tree.map(lambda a: a[:n_runs], mlp_parallel.to_host(state))  # drop shard padding
    return host, np.concatenate(curves, axis=1)[:, :, :n_runs], compile_seconds


def _grid_result(grid, runs, host, scores, n_folds: int, timings: dict, start_total: float) -> GridResult:
    """The :class:`GridResult`: ``cv_results``, the refitted estimators and the best grid point."""
    final = runs[n_folds * len(grid):]  # the full-data fits ([] when refit=False)
    cv_results = _results_table(grid, runs, final, host.diverged, n_folds, scores)
    best_index, key = _best_index(cv_results, n_folds)
    return GridResult(
        estimators=[run.estimator for run in final],
        params=grid,
        cv_results=cv_results,
        best_index=best_index,
        best_params=grid[best_index],
        best_estimator=final[best_index].estimator if final else None,
        best_score=float(cv_results[key][best_index]),
        timings={**timings, "total": time.perf_counter() - start_total},
        n_runs=len(runs),
    )
