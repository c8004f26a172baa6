"""Host preparation of :func:`jaxrl.mlp.grid.fit_grid`: everything before the compiled loop.

Validation (the grid's value lists, the estimator's settings, the data, as the estimator's ``fit``), the
runs (one initialized estimator clone per grid point and split, with its NumPy ``RandomState``, initial
weights, optimizer state and early-stopping split, drawn in sklearn's order), their stacked initial
:class:`~jaxrl.mlp.grid_loop.GridState` and constants, their placement on the device(s), and each run's
per-epoch sklearn shuffles as padded minibatch rows (:func:`_shuffled_rows`).
"""

from __future__ import annotations

import copy
import functools
import itertools
from numbers import Integral, Real
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.model_selection import check_cv, train_test_split
from sklearn.utils import check_random_state
from sklearn.utils import shuffle as sklearn_shuffle
from sklearn.utils.validation import _check_sample_weight

from jaxrl.mlp import core
from jaxrl.mlp import parallel as mlp_parallel
from jaxrl.mlp.epoch_end import init_epoch_end, schedule_code
from jaxrl.mlp.estimators import MLPClassifier, MLPRegressor
from jaxrl.mlp.grid_loop import GridState, _RunConfig, _SharedConfig

__all__ = ["GridData", "PreparedGrid", "grid_batches", "param_grid", "prepare_grid", "validate_data"]

_GRID_KEYS = ("alpha", "learning_rate_init", "random_state")
_INDEX_BUDGET_BYTES = 256 << 20  # at most this much int32 minibatch index data per compiled call

class _Run(NamedTuple):
    """One training run: a grid point on one split."""

    params: dict  # grid point
    train: np.ndarray  # [n_train] row indices into X
    test: np.ndarray | None  # [n_test] row indices (cv folds), None for full-data fits
    fold: int  # -1 for full-data fits
    estimator: Any  # clone with the run's params, initialized (coefs_ = initial weights)
    random_state: np.random.RandomState  # continues after the init draws: the shuffles
    batch_size: int
    val: np.ndarray  # [n_val] early-stopping validation rows into X (empty without early_stopping)


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


def _check_arguments(estimator, *, error_score, epochs_per_call, refit, cv, data_parallel, shard_runs):
    """``fit_grid``'s argument checks (clear ``ValueError`` / ``TypeError``), before any work."""
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


class GridData(NamedTuple):
    """A grid's data, validated once with a clone, exactly as the estimator's ``fit`` does (host NumPy)."""

    template: Any  # the validating clone (classes_, label binarizer)
    x: np.ndarray  # [n, d] validated X (dense)
    y: np.ndarray  # [n, k] encoded targets (one-hot / indicator for classifiers)
    weight: np.ndarray  # [n] training sample weights (ones when None), dtype of x
    splits: list  # [(train rows [n_train], test rows [n_test] or None)]: cv folds, then the full-data fit
    n_folds: int  # cv folds (0 without cv)


def validate_data(estimator, X, y, sample_weight, *, cv, refit: bool) -> GridData:
    """Validate ``X``, ``y``, ``sample_weight`` as ``estimator.fit`` and list the splits to train on."""
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
    return GridData(template, X_valid, y_valid, weight, splits, n_folds)


class PreparedGrid(NamedTuple):
    """Everything the compiled loop needs, on the device(s)."""

    runs: list  # [R] _Run: the cv-fold runs (fold-major), then the full-data fits
    data: tuple  # (x [n, d], y [n, k], weight [n]) on the device once, shared by all runs
    state: GridState  # the initial training state, leaves [R (+ shard padding), ...]
    config: _RunConfig  # per-run constants
    shared: _SharedConfig  # settings shared by all runs
    static: dict  # optimizer, spec, mesh, early_stopping: the compile-time settings
    layout: _Layout  # padded minibatch layout shared by all runs
    epochs_per_call: int  # epochs per compiled call
    place_runs: Callable  # NumPy [R, ...] -> device (split over the devices with shard_runs)
    place_shared: Callable  # NumPy array used by all runs -> device (replicated on a mesh)
    held_runs: list  # the runs whose per-epoch shuffles this process makes (all, unless split over processes)
    place_held: Callable  # NumPy [len(held_runs), ...] -> the same array as place_runs of all runs' values


def prepare_grid(estimator, grid, data: GridData, y, *, data_parallel: bool, shard_runs: bool,
                 epochs_per_call: int | None) -> PreparedGrid:
    """Make the runs (:func:`_make_runs`), choose the device layout and place the data, state and constants."""
    runs, run_params, opt_states, optimizer = _make_runs(estimator, data.template, grid, data.splits, y, data.x, data.y)
    mesh = mlp_parallel.batch_mesh() if data_parallel else mlp_parallel.runs_mesh() if shard_runs else None
    layout = _Layout.of(runs, mesh.size if data_parallel else 1)
    if epochs_per_call is None:
        per_epoch = len(runs) * layout.n_batches * layout.batch_width * 4
        epochs_per_call = max(1, _INDEX_BUDGET_BYTES // per_epoch)
    place, per_run, place_active = _placement(mesh, shard_runs, len(runs))
    held, place_held = _held_runs(mesh, shard_runs, len(runs), per_run)
    dtype, early_stopping = data.x.dtype, bool(estimator.early_stopping)
    return PreparedGrid(
        runs=runs,
        data=tuple(place(a) for a in (data.x, np.asarray(data.y, dtype), data.weight)),
        state=_initial_state(run_params, opt_states, per_run, place_active, early_stopping),
        config=_run_config(runs, data.weight, dtype, layout, per_run),
        shared=_shared_config(estimator, dtype, place),
        static=dict(optimizer=optimizer, spec=runs[-1].estimator._spec(), mesh=mesh if data_parallel else None,
                    early_stopping=early_stopping),
        layout=layout,
        epochs_per_call=min(int(epochs_per_call), int(estimator.max_iter)),
        place_runs=per_run,
        place_shared=place,
        held_runs=held,
        place_held=place_held,
    )


def _held_runs(mesh, shard_runs: bool, n_runs: int, place_runs):
    """``(held, place_held)``: the runs whose data this process makes, and how it places them.

    With runs split over the devices of several processes, a process holds the runs its own devices hold (and
    the last run, when it holds padding copies of it): it makes only their shuffles, and ``place_held`` puts
    its rows ``[len(held), ...]`` in place (``jax.make_array_from_callback`` asks only for local slices).
    Otherwise every run is held and ``place_held`` is ``place_runs``.
    """
    if not shard_runs or mlp_parallel.leading_axis_sharding(mesh).is_fully_addressable:
        return list(range(n_runs)), place_runs
    sharding, n_total = mlp_parallel.leading_axis_sharding(mesh), n_runs + (-n_runs) % mesh.size
    local = set()
    for index in sharding.addressable_devices_indices_map((n_total,)).values():
        local.update(min(i, n_runs - 1) for i in range(*index[0].indices(n_total)))
    held = sorted(local)
    position = {run: k for k, run in enumerate(held)}

    def place_held(rows):
        rows = np.asarray(rows)

        def block(index):
            runs = [position[min(i, n_runs - 1)] for i in range(*index[0].indices(n_total))]
            return rows[runs][(slice(None),) + tuple(index[1:])]

        return jax.make_array_from_callback((n_total,) + rows.shape[1:], sharding, block)

    return held, place_held


def _placement(mesh, shard_runs: bool, n_runs: int):
    """``(place, place_runs, place_active)``: NumPy -> device for shared arrays, per-run arrays, ``active``.

    Without ``shard_runs`` all three replicate (or just copy to the one device); with it, the per-run arrays
    are split over the devices, padded with copies of the last run that never train (``active`` False).
    """
    # jax.device_put, not jnp.asarray: the latter dispatches a primitive per array (~4x slower for ~50 arrays)
    place = (lambda a: mlp_parallel.put(a, mlp_parallel.replicated(mesh))) if mesh is not None else jax.device_put
    if not shard_runs:
        return place, place, place
    sharding, n_pad = mlp_parallel.leading_axis_sharding(mesh), (-n_runs) % mesh.size
    return (place, functools.partial(_place_runs, n_pad=n_pad, sharding=sharding),
            functools.partial(_place_runs, n_pad=n_pad, sharding=sharding, fill=False))


def _run_config(runs, weight, dtype, layout: _Layout, place) -> _RunConfig:
    """Per-run constants: the grid values, training rows, batch masks and early-stopping validation rows."""
    n_val = max(1, max(len(r.val) for r in runs))
    val_rows = np.zeros((len(runs), n_val), np.int32)
    val_weight = np.zeros((len(runs), n_val), dtype)
    for i, run in enumerate(runs):
        val_rows[i, : len(run.val)] = run.val
        val_weight[i, : len(run.val)] = weight[run.val]
    return _RunConfig(
        alpha=place(np.array([r.estimator.alpha for r in runs], dtype)),
        learning_rate_init=place(np.array([r.estimator.learning_rate_init for r in runs], dtype)),
        n_train=place(np.array([len(r.train) for r in runs], np.int32)),
        batch_mask=place(np.stack([_batch_mask(len(r.train), r.batch_size, *layout) for r in runs])),
        val_rows=place(val_rows),
        val_weight=place(val_weight),
    )


def _shared_config(estimator, dtype, place) -> _SharedConfig:
    """The template's stopping rule and schedule, traced so that one compile serves many grids."""
    return _SharedConfig(
        tol=place(np.asarray(estimator.tol, dtype)),
        n_iter_no_change=place(np.asarray(estimator.n_iter_no_change, dtype)),
        max_iter=place(np.asarray(int(estimator.max_iter), np.int32)),
        power_t=place(np.asarray(estimator.power_t, dtype)),
        schedule=place(np.asarray(schedule_code(estimator.solver, estimator.learning_rate), np.int32)),
    )


def _stack(trees):
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]), *trees)


def _make_runs(estimator, template, grid, splits, y, X_valid, y_valid):
    """One initialized estimator clone per (split, grid point), as its own ``fit`` would start.

    ``template`` / ``X_valid`` / ``y_valid`` are :func:`validate_data`'s: the template was validated on the
    user's ``X, y`` exactly as ``est.fit(X, y)`` validates, so the full-data fits take its result instead of
    validating again; the cv folds validate their rows of ``X_valid`` and ``y``.

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
                if test is None:  # a full-data fit: the template's validation is est.fit(X, y)'s
                    for name, value in vars(template).items():
                        if name not in unset:
                            setattr(est, name, copy.deepcopy(value))
                    y_train = y_valid
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
                             est._minibatch_size(len(fit_rows)), val_rows))
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


def _initial_state(run_params, opt_states, place, place_active, early_stopping: bool) -> GridState:
    """The runs' stacked initial parameters and optimizer states, fresh epoch-end bookkeeping, all active."""
    params, opt_state = _stack(run_params), _stack(opt_states)
    n_runs = len(run_params)
    return GridState(
        params=jax.tree.map(place, params),
        opt_state=jax.tree.map(place, opt_state),
        best_params=jax.tree.map(place, params) if early_stopping else None,  # a copy: the state is donated
        ends=jax.tree.map(place, init_epoch_end(opt_state.hyperparams["learning_rate"])),
        active=place_active(np.ones(n_runs, bool)),
        diverged=place(np.zeros(n_runs, bool)),
    )


def _shuffled_rows(runs, orders, n_epochs: int, layout: _Layout, which=None) -> np.ndarray:
    """Host: the next ``n_epochs`` sklearn shuffles of the runs ``which`` (default: all) as padded minibatch rows.

    ``orders[i]`` (each run's current ``sample_idx``) is advanced in place with
    ``sklearn.utils.shuffle(..., random_state=run.random_state)``, as the estimator does.

    Returns:
      ``[len(which), n_epochs, n_batches, batch_width]`` int32 rows of ``X``.
    """
    which = range(len(runs)) if which is None else which
    rows = np.empty((len(which), n_epochs, *layout), np.int32)
    for k, i in enumerate(which):
        run = runs[i]
        epoch_orders = np.empty((n_epochs, len(run.train)), np.int64)
        for e in range(n_epochs):
            if run.estimator.shuffle:
                orders[i] = sklearn_shuffle(orders[i], random_state=run.random_state)
            epoch_orders[e] = run.train[orders[i]]
        rows[k] = grid_batches(epoch_orders, len(run.train), run.batch_size, *layout)
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
