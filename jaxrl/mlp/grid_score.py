"""Scoring and result assembly of :func:`jaxrl.mlp.grid.fit_grid`: everything after the compiled loop.

Each run's fitted sklearn attributes from the stacked final state (:func:`_set_fitted`), the divergence and
``max_iter`` warnings (:func:`_report_stopping`), every run's ``estimator.score`` in one device call per
kind of run (:func:`_run_scores`) and the ``GridSearchCV.cv_results_``-style table (:func:`_results_table`).
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from scipy.stats import rankdata
from sklearn.base import is_classifier
from sklearn.exceptions import ConvergenceWarning

from jaxrl.mlp import core
from jaxrl.mlp.estimators import NON_FINITE_MESSAGE
from jaxrl.mlp.grid_loop import GridState
from jaxrl.mlp.grid_prepare import _GRID_KEYS

__all__ = ["run_hits", "run_outputs"]


def _take(tree, index):
    """Run ``index`` of a stacked pytree."""
    return jax.tree.map(lambda leaf: leaf[index], tree)


def _set_fitted(runs, host: GridState, curves: np.ndarray, early_stopping: bool):
    """Write sklearn's fitted attributes of every run's estimator from the stacked host state."""
    for i, run in enumerate(runs):
        est = run.estimator
        final_params = _take(host.best_params if early_stopping else host.params, i)
        est.coefs_, est.intercepts_ = core.params_to_numpy(final_params)
        est.n_iter_ = int(host.ends.n_iter[i])
        losses, scores = curves[0, :, i], curves[1, :, i]
        trained = np.isfinite(losses)  # the epochs this run trained
        est.loss_curve_ = [float(v) for v in losses[trained]]
        est.loss_ = est.loss_curve_[-1] if est.loss_curve_ else np.nan
        if early_stopping:
            est.validation_scores_ = [float(v) for v in scores[trained]]
            est.best_validation_score_ = float(host.ends.best_score[i])
        else:
            est.best_loss_ = float(host.ends.best_loss[i])
        est.t_ = len(run.train) * len(est.loss_curve_)
        est._no_improvement_count = int(host.ends.no_improvement[i])
        est._opt_state = _take(host.opt_state, i)


def _report_stopping(runs, host: GridState, max_iter: int, error_score: str):
    """Divergence (warning or ``ValueError``) and sklearn's max_iter ``ConvergenceWarning``, once per grid."""
    diverged = [run.params for run, bad in zip(runs, host.diverged) if bad]
    if diverged:
        message = (
            f"{NON_FINITE_MESSAGE} {len(diverged)} of {len(runs)} runs diverged (non-finite loss or weights), "
            f"e.g. {diverged[0]}; they keep the weights of their last finite epoch and score nan. "
            "Lower learning_rate_init or scale the data."
        )
        if error_score == "raise":
            raise ValueError(message)
        warnings.warn(message, RuntimeWarning)
    n_max_iter = int(np.sum((host.ends.n_iter >= max_iter) & ~host.diverged))
    if n_max_iter:
        warnings.warn(
            f"Stochastic Optimizer: Maximum iterations ({max_iter}) reached and the optimization hasn't converged "
            f"yet in {n_max_iter} of {len(runs)} runs.",
            ConvergenceWarning,
        )


def _map_runs(fn, params, x, rows):
    """``lax.map`` of ``fn(run_params, x_rows, run_index)`` over runs; ``rows`` ``[m]`` (gathered once) or
    ``[R, m]`` (gathered per run, one run at a time)."""
    index = jnp.arange(jax.tree.leaves(params)[0].shape[0])
    if rows.ndim == 1:
        x_rows = x[rows]
        return lax.map(lambda pi: fn(pi[0], x_rows, pi[1]), (params, index))
    return lax.map(lambda pri: fn(pri[0], x[pri[1]], pri[2]), (params, rows, index))


@functools.partial(jax.jit, static_argnames=("spec",))
def run_outputs(params, x, rows, *, spec: core.MLPSpec) -> jax.Array:
    """Network outputs of many runs in one compiled call, one run at a time on the device.

    Args:
      params: stacked parameters, leading axis ``R``.
      x: ``[n, d]`` data (on the device once).
      rows: ``[m]`` rows of ``x`` shared by all runs, or ``[R, m]`` rows per run.

    Returns:
      ``[R, m, n_outputs]``.
    """
    return _map_runs(lambda p, x_rows, _: core.forward(p, x_rows, spec.activation, spec.out_activation),
                     params, x, rows)


@functools.partial(jax.jit, static_argnames=("spec",))
def run_hits(params, x, y, rows, valid, *, spec: core.MLPSpec):
    """Classifiers: per run, how many of its rows are predicted right, in one compiled call.

    A row is right when the predicted label is the target's: the output's argmax (softmax) or every
    output thresholded at 0.5 (logistic: binary and multi-label), as ``LabelBinarizer.inverse_transform``.

    Args:
      params: stacked parameters, leading axis ``R``; x: ``[n, d]``; y: ``[n, k]`` encoded targets.
      rows: ``[m]`` or ``[R, m]`` rows of ``x``; valid: same shape, False on padding.

    Returns:
      ``(hits [R] int32, finite [R] bool)``: finite is False when an output on a valid row is not finite.
    """
    def one(p, x_rows, i):
        r = rows if rows.ndim == 1 else rows[i]
        v = valid if valid.ndim == 1 else valid[i]
        output, target = core.forward(p, x_rows, spec.activation, spec.out_activation), y[r]
        if spec.out_activation == "softmax":
            right = jnp.argmax(output, -1) == jnp.argmax(target, -1)
        else:
            right = jnp.all((output > 0.5) == (target > 0.5), axis=-1)
        finite = jnp.all(jnp.isfinite(output) | ~v[:, None])
        return jnp.sum(right & v, dtype=jnp.int32), finite

    return _map_runs(one, params, x, rows)


def _run_scores(runs, host: GridState, x, y_encoded, y, spec: core.MLPSpec, early_stopping: bool,
                n_fold_runs: int):
    """Each run's ``estimator.score``: on its test fold (cv runs), on all rows (full-data fits).

    One device call per kind of run, with no per-model host round trip or copy of ``x``: classifiers
    count their right rows there (:func:`run_hits`; accuracy = hits / rows on the host, as
    ``accuracy_score``); regressors bring their outputs back and score them as ``estimator.score``.

    Returns:
      ``[R]`` float scores (nan for a run whose output is not finite).
    """
    params = jax.tree.map(jnp.asarray, host.best_params if early_stopping else host.params)
    classifier = is_classifier(runs[0].estimator)
    scores = np.full(len(runs), np.nan)

    def score(run_slice, rows, valid, n_rows, targets):
        run_params = jax.tree.map(lambda a: a[run_slice], params)
        if classifier:
            hits, finite = run_hits(run_params, x, y_encoded, jnp.asarray(rows), jnp.asarray(valid), spec=spec)
            return np.where(np.asarray(finite), np.asarray(hits) / np.asarray(n_rows, float), np.nan)
        outputs = np.asarray(run_outputs(run_params, x, jnp.asarray(rows), spec=spec))
        return [runs[i].estimator._score_output(out[:n], t)
                for i, out, n, t in zip(range(len(runs))[run_slice], outputs, n_rows, targets)]

    if n_fold_runs:
        tests = [runs[i].test for i in range(n_fold_runs)]
        width = max(len(t) for t in tests)
        rows, valid = np.zeros((n_fold_runs, width), np.int32), np.zeros((n_fold_runs, width), bool)
        for i, test in enumerate(tests):
            rows[i, : len(test)], valid[i, : len(test)] = test, True
        scores[:n_fold_runs] = score(slice(0, n_fold_runs), rows, valid, [len(t) for t in tests],
                                     [y[t] for t in tests])
    if n_fold_runs < len(runs):
        n, n_final = x.shape[0], len(runs) - n_fold_runs
        scores[n_fold_runs:] = score(slice(n_fold_runs, None), np.arange(n, dtype=np.int32), np.ones(n, bool),
                                     [n] * n_final, [y] * n_final)
    return scores


def _results_table(grid, runs, final, diverged, n_folds, scores):
    """``GridSearchCV.cv_results_``-style dict (one entry per grid point); ``scores``: ``[R]`` run scores."""
    n_points = len(grid)
    results: dict = {"params": list(grid)}
    for name in _GRID_KEYS:
        results[f"param_{name}"] = np.ma.MaskedArray([p[name] for p in grid], dtype=object)
    if n_folds:
        split_scores = np.full((n_folds, n_points), np.nan)
        for i, run in enumerate(runs[: n_folds * n_points]):
            if not diverged[i]:
                split_scores[run.fold, i % n_points] = scores[i]
        for k in range(n_folds):
            results[f"split{k}_test_score"] = split_scores[k]
        results["mean_test_score"] = split_scores.mean(axis=0)
        results["std_test_score"] = split_scores.std(axis=0)
        # as GridSearchCV: rankdata(-mean, method="min"), nan (diverged) ranked last
        means = np.where(np.isnan(results["mean_test_score"]), -np.inf, results["mean_test_score"])
        results["rank_test_score"] = rankdata(-means, method="min").astype(np.int32)
    if not final:  # refit=False: fold averages
        fold_runs = [runs[k * n_points:(k + 1) * n_points] for k in range(n_folds)]
        results["n_iter"] = np.mean([[run.estimator.n_iter_ for run in row] for row in fold_runs], axis=0)
        results["final_loss"] = np.mean([[run.estimator.loss_ for run in row] for row in fold_runs], axis=0)
        results["diverged"] = np.asarray(diverged).reshape(n_folds, n_points).any(axis=0)
        return results
    offset = len(runs) - n_points
    results["train_score"] = np.array(
        [np.nan if diverged[offset + j] else scores[offset + j] for j in range(len(final))]
    )
    results["n_iter"] = np.array([run.estimator.n_iter_ for run in final])
    results["final_loss"] = np.array([run.estimator.loss_ for run in final], dtype=float)
    results["diverged"] = np.array([bool(diverged[offset + j]) for j in range(n_points)])
    return results


def _best_index(cv_results: dict, n_folds: int) -> tuple[int, str]:
    """``(index, key)`` of the best grid point: by ``mean_test_score`` with cv, else ``train_score`` (nan last)."""
    key = "mean_test_score" if n_folds else "train_score"
    return int(np.argmax(np.where(np.isnan(cv_results[key]), -np.inf, cv_results[key]))), key
