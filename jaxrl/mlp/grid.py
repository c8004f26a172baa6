"""Fit a whole hyper-parameter grid of MLPs in one vmapped, compiled call.

:func:`fit_grid` trains every combination of ``alpha`` x ``learning_rate_init`` x
``random_state`` (and, with ``cv=k``, every cross-validation fold) of one
``MLPClassifier`` / ``MLPRegressor`` (solver ``sgd`` or ``adam``) at once: the
runs are stacked on a leading axis and :func:`jaxrl.mlp.core.train_epoch` is
``jax.vmap``-ed over it, inside one jitted ``lax.while_loop`` over epochs. There
is no second training loop: the minibatch step, loss and optimizer are the
core's; this module only adds sklearn's epoch-end bookkeeping (loss curve,
``tol`` / ``n_iter_no_change`` stopping, ``invscaling`` / ``adaptive`` learning
rates) as array code, masking the runs that have stopped.

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

import copy
import functools
import itertools
import time
import warnings
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from scipy.stats import rankdata
from sklearn.base import clone, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import check_cv, train_test_split
from sklearn.utils import check_random_state
from sklearn.utils import shuffle as sklearn_shuffle
from sklearn.utils.validation import _check_sample_weight

from jaxrl.mlp import core
from jaxrl.mlp import parallel as mlp_parallel
from jaxrl.mlp.estimators import NON_FINITE_MESSAGE

__all__ = ["GridState", "GridResult", "fit_grid", "grid_batches", "param_grid"]

_GRID_KEYS = ("alpha", "learning_rate_init", "random_state")
_INDEX_BUDGET_BYTES = 256 << 20  # at most this much int32 minibatch index data per compiled call


class GridState(NamedTuple):
    """Training state of ``R`` stacked runs (leading axis of every leaf is ``R``)."""

    params: Any  # tuple of (W [R, fan_in, fan_out], b [R, fan_out])
    opt_state: Any  # the optimizer state, leaves [R, ...]
    best_loss: jax.Array  # [R] float, sklearn's best_loss_
    no_improvement: jax.Array  # [R] int32, sklearn's _no_improvement_count
    n_iter: jax.Array  # [R] int32, epochs run (sklearn's n_iter_)
    active: jax.Array  # [R] bool, False once the run has stopped
    diverged: jax.Array  # [R] bool, a non-finite loss or weight stopped the run
    best_score: jax.Array  # [R] float, sklearn's best_validation_score_ (-inf; early_stopping only)
    best_params: Any  # like params: the best-validation parameters (early_stopping), else None


class _RunConfig(NamedTuple):
    """Per-run constants (traced, leading axis ``R``)."""

    alpha: jax.Array  # [R] float
    learning_rate_init: jax.Array  # [R] float
    n_train: jax.Array  # [R] float, training rows (sklearn's t_ increment per epoch)
    batch_mask: jax.Array  # [R, n_batches, batch_width] bool
    val_rows: jax.Array  # [R, n_val] int32 validation rows of x (early_stopping; padding rows weigh 0)
    val_weight: jax.Array  # [R, n_val] float, validation sample weights, 0 on padding


class _SharedConfig(NamedTuple):
    """Settings shared by all runs, traced (not static) so that one compile serves many grids."""

    tol: jax.Array  # () float
    n_iter_no_change: jax.Array  # () float (may be inf)
    max_iter: jax.Array  # () int32
    power_t: jax.Array  # () float
    schedule: jax.Array  # () int32: 0 constant (and adam), 1 invscaling, 2 adaptive


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


def param_grid(estimator, alpha=None, learning_rate_init=None, random_state=None) -> list[dict]:
    """Validate the three value lists and return their product (``ParameterGrid`` order).

    ``None`` for a list means "the estimator's own value".

    Raises:
      ValueError: an empty list, ``alpha < 0``, ``learning_rate_init <= 0``, a
        ``random_state`` that is not an int or None.
      TypeError: a scalar or string instead of a list.
    """
    lists = {}
    for name, values in zip(_GRID_KEYS, (alpha, learning_rate_init, random_state)):
        if values is None:
            values = [estimator.get_params()[name]]
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise TypeError(f"{name} must be a list of values, got {values!r}.")
        values = list(values)
        if not values:
            raise ValueError(f"{name} must be a non-empty list of values, got an empty list.")
        for value in values:
            if name == "random_state":
                if value is not None and not (isinstance(value, Integral) and not isinstance(value, bool)):
                    raise ValueError(
                        f"random_state values must be ints or None (one NumPy RandomState per model), got {value!r}."
                    )
            else:
                if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value):
                    raise ValueError(f"{name} values must be finite real numbers, got {value!r}.")
                if name == "alpha" and value < 0:
                    raise ValueError(f"alpha values must be >= 0, got {value!r}.")
                if name == "learning_rate_init" and value <= 0:
                    raise ValueError(f"learning_rate_init values must be > 0, got {value!r}.")
        lists[name] = values
    # sklearn.model_selection.ParameterGrid: keys sorted, product with the last key varying fastest.
    names = sorted(lists)
    return [dict(zip(names, combo)) for combo in itertools.product(*(lists[name] for name in names))]


def _check_estimator(estimator):
    from jaxrl.mlp.estimators import MLPClassifier, MLPRegressor

    if not isinstance(estimator, (MLPClassifier, MLPRegressor)):
        raise TypeError(
            "fit_grid needs a jaxrl.MLPClassifier or jaxrl.MLPRegressor (unfitted template), "
            f"got {type(estimator).__name__}."
        )
    estimator._validate_params()
    if estimator.solver not in ("sgd", "adam"):
        raise ValueError(
            f"fit_grid trains the stochastic solvers 'sgd' and 'adam' only, got solver={estimator.solver!r} "
            "(lbfgs is a full-batch line search: fit those models one by one)."
        )
    if estimator.warm_start:
        raise ValueError("fit_grid starts every model from scratch: set warm_start=False.")


def grid_batches(orders: np.ndarray, n_train: int, batch_size: int, n_batches_to: int, batch_width: int) -> np.ndarray:
    """Minibatch rows of several epochs of one run: :func:`core.make_batches`, vectorized over epochs.

    Args:
      orders: ``[E, n_train]`` row indices (into the full ``X``) per epoch.
      n_train: training rows of this run.
      batch_size: this run's sklearn batch size.
      n_batches_to, batch_width: padded layout shared by all runs.

    Returns:
      ``rows [E, n_batches_to, batch_width]`` int32 (padding rows point at row 0).
    """
    n_epochs = orders.shape[0]
    n_batches = -(-n_train // batch_size)
    flat = np.zeros((n_epochs, n_batches * batch_size), np.int32)
    flat[:, :n_train] = orders
    rows = np.zeros((n_epochs, n_batches_to, batch_width), np.int32)
    rows[:, :n_batches, :batch_size] = flat.reshape(n_epochs, n_batches, batch_size)
    return rows


def _batch_mask(n_train: int, batch_size: int, n_batches_to: int, batch_width: int) -> np.ndarray:
    _, mask = core.make_batches(np.zeros(n_train, np.int32), batch_size, n_batches_to, batch_width)
    return mask


def validation_score(params, x, y, rows, weight, spec: core.MLPSpec) -> jax.Array:
    """sklearn's early-stopping score of one run: ``accuracy_score`` (classifiers) or ``r2_score``.

    Args:
      params: one run's parameters.
      x: ``[n, d]``; y: ``[n, k]`` (one-hot / indicator for classifiers).
      rows: ``[n_val]`` int32 validation rows; weight: ``[n_val]`` (0 on padding rows).
      spec: softmax output -> argmax accuracy; logistic -> 0.5-threshold exact-match
        accuracy (binary, multi-label, as ``LabelBinarizer.inverse_transform``);
        identity / exp -> ``r2_score`` averaged over outputs (``force_finite``).

    Returns:
      ``()`` the score, ``nan`` when the output is not finite (as the estimator).
    """
    output = core.forward(params, x[rows], spec.activation, spec.out_activation)
    target = y[rows]
    weight_sum = jnp.sum(weight)
    if spec.out_activation == "softmax":
        score = jnp.sum(weight * (jnp.argmax(output, -1) == jnp.argmax(target, -1))) / weight_sum
    elif spec.out_activation == "logistic":
        score = jnp.sum(weight * jnp.all((output > 0.5) == (target > 0.5), axis=-1)) / weight_sum
    else:
        mean = jnp.sum(weight[:, None] * target, 0) / weight_sum
        numerator = jnp.sum(weight[:, None] * (target - output) ** 2, 0)
        denominator = jnp.sum(weight[:, None] * (target - mean) ** 2, 0)
        safe = jnp.where(denominator != 0, denominator, 1)
        r2 = jnp.where(denominator != 0, 1 - numerator / safe, jnp.where(numerator == 0, 1.0, 0.0))
        score = jnp.mean(r2)
    return jnp.where(jnp.all(jnp.isfinite(output)), score, jnp.nan).astype(x.dtype)


def _epoch_end(state: GridState, new_params, new_opt_state, metrics, val_score, config: _RunConfig,
               shared: _SharedConfig):
    """sklearn's end-of-epoch bookkeeping (``_fit_stochastic``), vectorized over runs.

    Args:
      val_score: ``[R]`` validation scores of ``new_params`` (early_stopping), or None.

    Returns:
      ``(state, epoch_loss [R], val_score [R])``, ``nan`` for runs that did not train.
    """
    epoch_loss = metrics["loss"]
    dtype = epoch_loss.dtype
    ok = jnp.isfinite(epoch_loss) & metrics["finite"]
    stepped = state.active & ok
    diverged = state.diverged | (state.active & ~ok)

    def select(new, old):
        mask = stepped.reshape(stepped.shape + (1,) * (new.ndim - 1))
        return jnp.where(mask, new, old)

    params = jax.tree.map(select, new_params, state.params)
    opt_state = jax.tree.map(select, new_opt_state, state.opt_state)
    n_iter = state.n_iter + state.active.astype(jnp.int32)

    # _update_no_improvement_count
    best_loss, best_score, best_params = state.best_loss, state.best_score, state.best_params
    if val_score is None:  # on the training loss
        worse = epoch_loss > state.best_loss - shared.tol
        best_loss = jnp.where(stepped, jnp.minimum(state.best_loss, epoch_loss), state.best_loss)
    else:  # on the validation score (nan compares False, as in Python)
        worse = val_score < state.best_score + shared.tol
        improved = stepped & (val_score > state.best_score)
        best_score = jnp.where(improved, val_score, state.best_score)
        best_params = jax.tree.map(
            lambda new, old: jnp.where(improved.reshape(improved.shape + (1,) * (new.ndim - 1)), new, old),
            params, state.best_params,
        )
    no_improvement = jnp.where(stepped, jnp.where(worse, state.no_improvement + 1, 0), state.no_improvement)

    # sgd learning-rate schedules (schedule is 0 for adam): invscaling after every epoch ...
    hyper = dict(opt_state.hyperparams)
    samples_seen = n_iter.astype(dtype) * config.n_train
    inverse_scaled = (config.learning_rate_init / (samples_seen + 1) ** shared.power_t).astype(dtype)
    invscaling = stepped & (shared.schedule == 1)
    hyper["learning_rate"] = jnp.where(invscaling, inverse_scaled, hyper["learning_rate"])

    # ... and adaptive when stuck (SGDOptimizer.trigger_stopping): divide by 5, stop at <= 1e-6.
    stuck = no_improvement.astype(dtype) > shared.n_iter_no_change
    current = hyper["learning_rate"]
    too_small = current <= 1e-6
    adaptive = shared.schedule == 2
    stop = jnp.where(adaptive, stuck & too_small, stuck)
    lower = adaptive & stepped & stuck & ~too_small
    hyper["learning_rate"] = jnp.where(lower, current / 5.0, current)
    no_improvement = jnp.where(lower, 0, no_improvement)
    opt_state = opt_state._replace(hyperparams=hyper)
    active = stepped & ~stop & (n_iter < shared.max_iter)
    state = GridState(params, opt_state, best_loss, no_improvement, n_iter, active, diverged, best_score, best_params)
    val_out = jnp.full_like(epoch_loss, jnp.nan) if val_score is None else jnp.where(stepped, val_score, jnp.nan)
    return state, jnp.where(stepped, epoch_loss, jnp.nan), val_out


def _train_chunk(state: GridState, x, y, weight, batch_rows, config: _RunConfig, shared: _SharedConfig, *,
                 optimizer, spec, mesh, early_stopping):
    """Up to ``E`` epochs of all ``R`` runs: ``while_loop`` over epochs of a vmapped ``core.train_epoch``.

    Args:
      state: :class:`GridState`, leaves ``[R, ...]``.
      x: ``[n, d]``, y: ``[n, k]``, weight: ``[n]`` (shared by all runs, on device once).
      batch_rows: ``[R, E, n_batches, batch_width]`` int32 rows of ``x`` per run, epoch and batch, or
        ``[1, E, n_batches, batch_width]`` when every run draws the same minibatches (same training rows,
        batch size and shuffle seed, e.g. an ``alpha`` sweep): each batch is then gathered once and the
        first layer of all runs is one matrix product ``[B, d] @ [d, R * h]`` instead of R small ones.
      config: per-run constants; shared: settings common to all runs.

    Returns:
      ``(state, (loss_curve [E, R], validation_curve [E, R]))``; the loop exits early once every run stopped.
    """
    n_epochs = batch_rows.shape[1]
    n_runs = config.alpha.shape[0]
    assert config.batch_mask.shape[0] == n_runs and batch_rows.shape[0] in (1, n_runs), batch_rows.shape
    shared_rows = batch_rows.shape[0] == 1
    epoch = functools.partial(core.train_epoch, optimizer=optimizer, spec=spec)
    batch_axis = None if shared_rows else 0
    epoch_all = jax.vmap(epoch, in_axes=(0, 0, None, None, None, batch_axis, batch_axis, 0))
    score_all = jax.vmap(functools.partial(validation_score, spec=spec), in_axes=(0, None, None, 0, 0))
    curve = jnp.full((2, n_epochs, n_runs), jnp.nan, x.dtype)

    def cond(carry):
        e, state, _ = carry
        return (e < n_epochs) & jnp.any(state.active)

    def body(carry):
        e, state, curve = carry
        rows = lax.dynamic_index_in_dim(batch_rows, e, axis=1, keepdims=False)  # [R or 1, n_batches, width]
        mask = config.batch_mask[:1] if shared_rows else config.batch_mask
        if mesh is not None:
            rows = mlp_parallel.constrain_batch_axis(rows, mesh, axis=2)
            mask = mlp_parallel.constrain_batch_axis(mask, mesh, axis=2)
        if shared_rows:
            rows, mask = rows[0], mask[0]
        new_params, new_opt_state, metrics = epoch_all(
            state.params, state.opt_state, x, y, weight, rows, mask, config.alpha
        )
        val_score = score_all(new_params, x, y, config.val_rows, config.val_weight) if early_stopping else None
        state, epoch_loss, val_score = _epoch_end(state, new_params, new_opt_state, metrics, val_score, config,
                                                  shared)
        return e + 1, state, curve.at[:, e].set(jnp.stack([epoch_loss, val_score]))

    _, state, curve = lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), state, curve))
    return state, curve


_STATIC = ("optimizer", "spec", "mesh", "early_stopping")
_train_chunk_jit = jax.jit(_train_chunk, static_argnames=_STATIC, donate_argnums=(0,))
_compiled: dict = {}


def _compile(args, static):
    """AOT-compile :func:`_train_chunk` (cached by shapes, dtypes, shardings and static config)."""
    leaves = jax.tree.leaves(args)
    key = (
        jax.tree.structure(args),
        tuple((leaf.shape, leaf.dtype, getattr(leaf, "sharding", None)) for leaf in leaves),
        tuple(sorted(static.items(), key=lambda kv: kv[0])),
        jax.config.jax_enable_x64,
    )
    if key in _compiled:
        return _compiled[key], 0.0
    start = time.perf_counter()
    compiled = _train_chunk_jit.lower(*args, **static).compile()
    seconds = time.perf_counter() - start
    _compiled[key] = compiled
    return compiled, seconds


def _stack(trees):
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]), *trees)


def _take(tree, index):
    return jax.tree.map(lambda leaf: leaf[index], tree)


class _Run(NamedTuple):
    params: dict  # grid point
    train: np.ndarray  # [n_train] row indices into X
    test: np.ndarray | None  # [n_test] row indices (cv folds), None for full-data fits
    fold: int  # -1 for full-data fits
    estimator: Any  # clone with the run's params, initialized (coefs_ = initial weights)
    random_state: np.random.RandomState  # continues after the init draws: the shuffles
    batch_size: int
    val: np.ndarray  # [n_val] early-stopping validation rows into X (empty without early_stopping)


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
    _check_estimator(estimator)
    if error_score not in ("nan", "raise"):
        raise ValueError(f"error_score must be 'nan' or 'raise', got {error_score!r}.")
    if epochs_per_call is not None and (not isinstance(epochs_per_call, Integral) or epochs_per_call < 1):
        raise ValueError(f"epochs_per_call must be a positive int, got {epochs_per_call!r}.")
    if not isinstance(refit, bool):
        raise TypeError(f"refit must be True or False, got {refit!r}.")
    if data_parallel and shard_runs:
        raise ValueError("choose one of data_parallel=True (split minibatches) and shard_runs=True (split models).")
    if not refit and cv is None:
        raise ValueError("refit=False only makes sense with cv: without cv the full-data fits are the grid.")
    grid = param_grid(estimator, alpha, learning_rate_init, random_state)

    # Validate once with a clone, exactly as the estimator's fit does.
    template = clone(estimator)
    X_valid, y_valid = template._validate_input(X, y, incremental=False, reset=True)
    X_valid = X_valid.toarray() if hasattr(X_valid, "toarray") else np.asarray(X_valid)
    n_samples, dtype = X_valid.shape[0], X_valid.dtype
    if sample_weight is not None:
        sample_weight = _check_sample_weight(sample_weight, X_valid)
    weight = np.ones(n_samples, dtype) if sample_weight is None else sample_weight.astype(dtype)
    y_valid = y_valid.reshape((-1, 1)) if y_valid.ndim == 1 else y_valid

    splits = [(np.arange(n_samples), None)] if refit else []  # the full-data fits come last
    n_folds = 0
    if cv is not None:
        cv_splitter = check_cv(cv, y, classifier=is_classifier(estimator))
        folds = [(np.asarray(tr), np.asarray(te)) for tr, te in cv_splitter.split(X_valid, y)]
        splits, n_folds = folds + splits, len(folds)
    max_iter = int(estimator.max_iter)

    with jax.enable_x64(bool(dtype == np.float64)):
        runs, run_params, opt_states, optimizer = _make_runs(estimator, template, grid, splits, X, y, X_valid)
        mesh = mlp_parallel.batch_mesh() if data_parallel else mlp_parallel.runs_mesh() if shard_runs else None
        layout = _Layout.of(runs, mesh.size if data_parallel else 1)
        n_runs, n_pad = len(runs), (-len(runs)) % mesh.size if shard_runs else 0
        if epochs_per_call is None:
            per_epoch = len(runs) * layout.n_batches * layout.batch_width * 4
            epochs_per_call = max(1, _INDEX_BUDGET_BYTES // per_epoch)
        epochs_per_call = min(int(epochs_per_call), max_iter)

        place = (lambda a: mlp_parallel.put(a, mlp_parallel.replicated(mesh))) if mesh is not None else jnp.asarray
        per_run = place_active = place  # arrays with a leading run axis
        if shard_runs:  # padding runs are copies of the last run that never train
            sharding = mlp_parallel.leading_axis_sharding(mesh)
            per_run = functools.partial(_place_runs, n_pad=n_pad, sharding=sharding)
            place_active = functools.partial(_place_runs, n_pad=n_pad, sharding=sharding, fill=False)
        data = tuple(place(a) for a in (X_valid, np.asarray(y_valid, dtype), weight))  # on the device once
        early_stopping = bool(estimator.early_stopping)
        state = _initial_state(run_params, opt_states, dtype, per_run, place_active, early_stopping)
        n_val = max(1, max(len(r.val) for r in runs))
        val_rows = np.zeros((len(runs), n_val), np.int32)
        val_weight = np.zeros((len(runs), n_val), dtype)
        for i, run in enumerate(runs):
            val_rows[i, : len(run.val)] = run.val
            val_weight[i, : len(run.val)] = weight[run.val]
        config = _RunConfig(
            alpha=per_run(np.array([r.estimator.alpha for r in runs], dtype)),
            learning_rate_init=per_run(np.array([r.estimator.learning_rate_init for r in runs], dtype)),
            n_train=per_run(np.array([len(r.train) for r in runs], dtype)),
            batch_mask=per_run(np.stack([_batch_mask(len(r.train), r.batch_size, *layout) for r in runs])),
            val_rows=per_run(val_rows),
            val_weight=per_run(val_weight),
        )
        shared = _SharedConfig(
            tol=place(np.asarray(estimator.tol, dtype)),
            n_iter_no_change=place(np.asarray(estimator.n_iter_no_change, dtype)),
            max_iter=place(np.asarray(max_iter, np.int32)),
            power_t=place(np.asarray(estimator.power_t, dtype)),
            schedule=place(np.asarray(_SCHEDULES[estimator.learning_rate] if estimator.solver == "sgd" else 0,
                                      np.int32)),
        )
        static = dict(optimizer=optimizer, spec=runs[-1].estimator._spec(), mesh=mesh if data_parallel else None,
                      early_stopping=early_stopping)
        prepare_seconds = time.perf_counter() - start_total

        start_train = time.perf_counter()
        host, curve, compile_seconds = _train(state, data, config, shared, static, runs, layout, epochs_per_call,
                                              max_iter, per_run, place)
        host, curve = jax.tree.map(lambda a: a[:n_runs], host), curve[:, :, :n_runs]  # drop shard padding
        train_seconds = time.perf_counter() - start_train - compile_seconds
        _set_fitted(runs, host, curve, early_stopping)
        start_score = time.perf_counter()
        x_local, y_local = (mlp_parallel.local_replica(a) for a in data[:2])  # this process's copy
        scores = _run_scores(runs, host, x_local, y_local, np.asarray(y), static["spec"], early_stopping,
                             n_folds * len(grid))
        score_seconds = time.perf_counter() - start_score

    _report_stopping(runs, host, max_iter, error_score)
    final = runs[n_folds * len(grid):]  # the full-data fits ([] when refit=False)
    cv_results = _results_table(grid, runs, final, host.diverged, n_folds, scores)
    key = "mean_test_score" if n_folds else "train_score"
    best_index = int(np.argmax(np.where(np.isnan(cv_results[key]), -np.inf, cv_results[key])))
    return GridResult(
        estimators=[run.estimator for run in final],
        params=grid,
        cv_results=cv_results,
        best_index=best_index,
        best_params=grid[best_index],
        best_estimator=final[best_index].estimator if final else None,
        best_score=float(cv_results[key][best_index]),
        timings=dict(prepare=prepare_seconds, compile=compile_seconds, train=train_seconds, score=score_seconds,
                     total=time.perf_counter() - start_total),
        n_runs=len(runs),
    )


_SCHEDULES = {"constant": 0, "invscaling": 1, "adaptive": 2}


class _Layout(NamedTuple):
    """Padded minibatch layout shared by all runs."""

    n_batches: int  # batches per epoch of the largest training set
    batch_width: int  # largest batch size, rounded up to a multiple of the device count

    @classmethod
    def of(cls, runs, n_devices: int) -> "_Layout":
        batch_width = max(r.batch_size for r in runs)
        return cls(
            n_batches=max(-(-len(r.train) // r.batch_size) for r in runs),
            batch_width=-(-batch_width // n_devices) * n_devices,
        )


def _batch_size(estimator, n_train: int) -> int:
    """sklearn's minibatch size: ``min(200, n)`` for ``"auto"``, else clipped to ``[1, n]`` with a warning."""
    if estimator.batch_size == "auto":
        return min(200, n_train)
    if estimator.batch_size > n_train:
        warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped")
    return int(np.clip(estimator.batch_size, 1, n_train))


def _make_runs(estimator, template, grid, splits, X, y, X_valid):
    """One initialized estimator clone per (split, grid point), as its own ``fit`` would start.

    Returns:
      ``(runs, params, opt_states, optimizer)``: lists of :class:`_Run`, initial
      parameter pytrees and optimizer states, and the (shared) optax transform.
    """
    y_array = np.asarray(y)
    runs, run_params, opt_states, optimizer = [], [], [], None
    dtype = X_valid.dtype
    for fold, (train, test) in enumerate(splits):
        fitted_by_validation, y_train = None, None
        for point in grid:
            est = clone(estimator).set_params(**point)
            if fitted_by_validation is None:  # validate once per split; the grid's values do not enter it
                unset = set(vars(est))
                if test is None:  # a full-data fit: validated exactly as est.fit(X, y) would
                    _, y_train = est._validate_input(X, y, incremental=False, reset=True)
                else:
                    _, y_train = est._validate_input(X_valid[train], y_array[train], incremental=False, reset=True)
                    if is_classifier(est) and not np.array_equal(est.classes_, template.classes_):
                        raise ValueError(
                            f"cv fold {fold} lacks some classes ({est.classes_} in training vs "
                            f"{template.classes_}); use a stratified splitter or fewer folds."
                        )
                fitted_by_validation = {k: v for k, v in vars(est).items() if k not in unset}
                y_train = y_train.reshape((-1, 1)) if y_train.ndim == 1 else y_train
            else:  # the other grid points of this split: the same validation result, each its own copy
                for name, value in fitted_by_validation.items():
                    setattr(est, name, copy.deepcopy(value))
            hidden = est.hidden_layer_sizes
            hidden = list(hidden) if hasattr(hidden, "__iter__") else [hidden]
            rng = check_random_state(est.random_state)
            est._initialize(y_train, [X_valid.shape[1], *hidden, y_train.shape[1]], dtype, rng)  # draws the init
            params = tuple((np.asarray(w), np.asarray(b)) for w, b in zip(est.coefs_, est.intercepts_))
            optimizer, opt_state = est._make_opt_state(params, dtype, incremental=False, on_device=False)
            fit_rows, val_rows = train, np.zeros(0, int)
            if est.early_stopping:  # the estimator's split, drawn next from the same RandomState
                stratify = y_train if is_classifier(est) and y_train.shape[1] == 1 else None
                fit_index, val_index = train_test_split(
                    np.arange(len(train)), random_state=rng, test_size=est.validation_fraction, stratify=stratify
                )
                if len(val_index) < 2:
                    raise ValueError(
                        "The validation set is too small. Increase 'validation_fraction' or the size of your dataset."
                    )
                fit_rows, val_rows = train[fit_index], train[val_index]
            runs.append(_Run(point, fit_rows, test, fold if test is not None else -1, est, rng,
                             _batch_size(est, len(fit_rows)), val_rows))
            run_params.append(params)
            opt_states.append(opt_state)
    return runs, run_params, opt_states, optimizer


def _place_runs(array, *, n_pad: int, sharding, fill=None):
    """Pad the leading (run) axis with ``n_pad`` copies of the last run (or ``fill``) and shard it."""
    array = np.asarray(array)
    if n_pad:
        extra = np.repeat(array[-1:], n_pad, axis=0)
        if fill is not None:
            extra = np.full_like(extra, fill)
        array = np.concatenate([array, extra])
    return mlp_parallel.put(array, sharding)


def _initial_state(run_params, opt_states, dtype, place, place_active, early_stopping: bool) -> GridState:
    n_runs = len(run_params)
    return GridState(
        best_score=place(np.full(n_runs, -np.inf, dtype)),
        best_params=jax.tree.map(place, _stack(run_params)) if early_stopping else None,
        params=jax.tree.map(place, _stack(run_params)),
        opt_state=jax.tree.map(place, _stack(opt_states)),
        best_loss=place(np.full(n_runs, np.inf, dtype)),
        no_improvement=place(np.zeros(n_runs, np.int32)),
        n_iter=place(np.zeros(n_runs, np.int32)),
        active=place_active(np.ones(n_runs, bool)),
        diverged=place(np.zeros(n_runs, bool)),
    )


def _shuffled_rows(runs, orders, n_epochs: int, layout: _Layout) -> np.ndarray:
    """Host: each run's next ``n_epochs`` sklearn shuffles as padded minibatch rows.

    ``orders[i]`` (each run's current ``sample_idx``) is advanced in place with
    ``sklearn.utils.shuffle(..., random_state=run.random_state)``, as the estimator does.

    Returns:
      ``[R, n_epochs, n_batches, batch_width]`` int32 rows of ``X``.
    """
    rows = np.empty((len(runs), n_epochs, *layout), np.int32)
    for i, run in enumerate(runs):
        epoch_orders = np.empty((n_epochs, len(run.train)), np.int64)
        for e in range(n_epochs):
            if run.estimator.shuffle:
                orders[i] = sklearn_shuffle(orders[i], random_state=run.random_state)
            epoch_orders[e] = run.train[orders[i]]
        rows[i] = grid_batches(epoch_orders, len(run.train), run.batch_size, *layout)
    return rows


def _same_minibatches(runs) -> bool:
    """Whether every run will draw the same minibatch rows in every epoch: the same training rows and batch
    size, and either no shuffling or shuffle generators in the same state (e.g. an ``alpha`` sweep with one
    integer ``random_state``)."""
    first = runs[0]
    if any(r.batch_size != first.batch_size or not np.array_equal(r.train, first.train) for r in runs):
        return False
    shuffles = {bool(r.estimator.shuffle) for r in runs}
    if shuffles == {False}:
        return True
    if shuffles != {True}:
        return False
    state = first.random_state.get_state(legacy=False)
    return all(_same_rng_state(r.random_state.get_state(legacy=False), state) for r in runs[1:])


def _same_rng_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        _same_rng_state(a[k], b[k]) if isinstance(a[k], dict) else np.array_equal(a[k], b[k]) for k in a
    )


def _train(state, data, config, shared, static, runs, layout, epochs_per_call, max_iter, place, place_shared):
    """Chunks of ``epochs_per_call`` epochs until every run stopped; the host shuffles ahead of the device.

    When every run draws the same minibatches (:func:`_same_minibatches`), only one run's shuffles are made
    and sent (``[1, E, ...]``, see ``_train_chunk``).

    Returns:
      ``(host_state, curves [2, epochs, R] (loss, validation score), compile_seconds)``.
    """
    curves, epochs_done, compile_seconds = [], 0, 0.0
    if len(runs) > 1 and _same_minibatches(runs):
        runs, place = runs[:1], place_shared  # shuffle for run 0 only
    orders = [np.arange(len(r.train), dtype=int) for r in runs]
    rows = place(_shuffled_rows(runs, orders, epochs_per_call, layout))
    while True:
        args = (state, *data, rows, config, shared)
        compiled, seconds = _compile(args, static)
        compile_seconds += seconds
        state, curve = compiled(*args)  # asynchronous: the host prepares the next chunk meanwhile
        epochs_done += epochs_per_call
        remaining = max_iter - epochs_done
        next_rows = _shuffled_rows(runs, orders, min(epochs_per_call, remaining), layout) if remaining > 0 else None
        curve, active = mlp_parallel.to_host((curve, state.active))  # gathered from every process
        curves.append(curve)
        if next_rows is None or not bool(active.any()):
            break
        pad = epochs_per_call - next_rows.shape[1]  # keep one compiled shape: pad the last chunk (never run)
        rows = place(np.pad(next_rows, ((0, 0), (0, pad), (0, 0), (0, 0))) if pad else next_rows)
    return mlp_parallel.to_host(state), np.concatenate(curves, axis=1), compile_seconds


def _set_fitted(runs, host: GridState, curves: np.ndarray, early_stopping: bool):
    """Write sklearn's fitted attributes of every run's estimator from the stacked host state."""
    for i, run in enumerate(runs):
        est = run.estimator
        final_params = _take(host.best_params if early_stopping else host.params, i)
        est.coefs_, est.intercepts_ = core.params_to_numpy(final_params)
        est.n_iter_ = int(host.n_iter[i])
        losses, scores = curves[0, :, i], curves[1, :, i]
        trained = np.isfinite(losses)  # the epochs this run trained
        est.loss_curve_ = [float(v) for v in losses[trained]]
        est.loss_ = est.loss_curve_[-1] if est.loss_curve_ else np.nan
        if early_stopping:
            est.validation_scores_ = [float(v) for v in scores[trained]]
            est.best_validation_score_ = float(host.best_score[i])
        else:
            est.best_loss_ = float(host.best_loss[i])
        est.t_ = len(run.train) * len(est.loss_curve_)
        est._no_improvement_count = int(host.no_improvement[i])
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
    n_max_iter = int(np.sum((host.n_iter >= max_iter) & ~host.diverged))
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
