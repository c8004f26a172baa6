"""fit_grid: vmapped grids equal individual fits, the cv table equals GridSearchCV's, bad grids are refused."""

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, KFold, ParameterGrid, StratifiedKFold
from sklearn.neural_network import MLPClassifier as SklearnMLPClassifier

from jaxrl import MLPClassifier, MLPRegressor
from jaxrl.mlp import core
from jaxrl.mlp import grid as grid_module
from jaxrl.mlp.grid import fit_grid, grid_batches, param_grid


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:150] / 16.0).astype(np.float64), y[:150]


def _fit_quietly(estimator, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y)


def _grid_quietly(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit_grid(*args, **kwargs)


def _assert_same_fit(grid_estimator, single):
    assert grid_estimator.n_iter_ == single.n_iter_
    assert grid_estimator.t_ == single.t_
    np.testing.assert_allclose(grid_estimator.loss_curve_, single.loss_curve_, rtol=1e-9)
    assert grid_estimator.best_loss_ == pytest.approx(single.best_loss_, rel=1e-9)
    for a, b in zip(grid_estimator.coefs_ + grid_estimator.intercepts_, single.coefs_ + single.intercepts_):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)


def test_classifier_grid_equals_individual_fits_with_per_model_stopping(digits):
    X, y = digits
    # 150 rows, batch 64: a ragged last batch; tol large enough that models stop at different epochs.
    # epochs_per_call=4: three compiled calls, the stopping state carried across them.
    template = MLPClassifier(hidden_layer_sizes=(8,), batch_size=64, max_iter=12, tol=2e-2, n_iter_no_change=1)
    grid = {"alpha": [1e-4, 3.0], "learning_rate_init": [1e-3, 1e-2], "random_state": [7]}
    result = _grid_quietly(template, X, y, **grid, epochs_per_call=4)
    assert result.n_runs == 4 and len(result.estimators) == 4
    assert result.params == list(ParameterGrid(grid))
    n_iters = set()
    for point, fitted in zip(result.params, result.estimators):
        single = _fit_quietly(MLPClassifier(hidden_layer_sizes=(8,), batch_size=64, max_iter=12, tol=2e-2,
                                            n_iter_no_change=1, **point), X, y)
        _assert_same_fit(fitted, single)
        np.testing.assert_array_equal(fitted.predict(X), single.predict(X))
        assert fitted.score(X, y) == single.score(X, y)
        n_iters.add(single.n_iter_)
    assert len(n_iters) > 1, "the grid should mix stopped and running models"
    np.testing.assert_array_equal(result.cv_results["n_iter"], [e.n_iter_ for e in result.estimators])
    assert result.best_estimator is result.estimators[result.best_index]


def test_grid_estimator_matches_scikit_learn(digits):
    X, y = digits
    # max_iter=5 with 4 epochs per call: the last call runs a padded chunk that stops after one epoch.
    result = _grid_quietly(MLPClassifier(hidden_layer_sizes=(8,), batch_size=64, max_iter=5), X, y,
                           alpha=[1e-4, 0.5], random_state=[1, 2], epochs_per_call=4)
    for point, fitted in zip(result.params, result.estimators):
        reference = SklearnMLPClassifier(hidden_layer_sizes=(8,), batch_size=64, max_iter=5, **point)
        reference = _fit_quietly(reference, X, y)
        for a, b in zip(fitted.coefs_ + fitted.intercepts_, reference.coefs_ + reference.intercepts_):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_early_stopping_grid_equals_individual_fits(digits):
    X, y = digits
    # validation split, scores, best-params restore and stopping per run, as the estimator
    kwargs = dict(hidden_layer_sizes=(8,), batch_size=64, max_iter=30, early_stopping=True, n_iter_no_change=2,
                  validation_fraction=0.2, learning_rate_init=1e-2)
    result = _grid_quietly(MLPClassifier(**kwargs), X, y, alpha=[1e-4, 1.0], random_state=[0, 5], epochs_per_call=8)
    n_iters = set()
    for point, fitted in zip(result.params, result.estimators):
        single = _fit_quietly(MLPClassifier(**{**kwargs, **point}), X, y)
        assert fitted.best_loss_ is None and single.best_loss_ is None
        assert fitted.validation_scores_ == pytest.approx(single.validation_scores_, rel=1e-12)
        assert fitted.best_validation_score_ == pytest.approx(single.best_validation_score_, rel=1e-12)
        _assert_same_fit_early_stopping(fitted, single)
        n_iters.add(single.n_iter_)
    assert len(n_iters) > 1


def _assert_same_fit_early_stopping(fitted, single):
    assert fitted.n_iter_ == single.n_iter_ and fitted.t_ == single.t_
    np.testing.assert_allclose(fitted.loss_curve_, single.loss_curve_, rtol=1e-9)
    for a, b in zip(fitted.coefs_ + fitted.intercepts_, single.coefs_ + single.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)


@pytest.fixture(scope="module")
def regression():
    X, y = make_regression(n_samples=90, n_features=5, noise=5.0, random_state=0)
    return X, y / 50.0


@pytest.mark.parametrize("learning_rate", ["invscaling", "adaptive"])
def test_sgd_regressor_schedules_equal_individual_fits(regression, learning_rate):
    X, y = regression
    kwargs = dict(hidden_layer_sizes=(6,), solver="sgd", learning_rate=learning_rate, batch_size=32, max_iter=24,
                  tol=1e-2, n_iter_no_change=2, momentum=0.5)
    result = _grid_quietly(MLPRegressor(**kwargs), X, y, alpha=[1e-3], learning_rate_init=[0.05, 0.01],
                           random_state=[0, 1], epochs_per_call=8)
    for point, fitted in zip(result.params, result.estimators):
        single = _fit_quietly(MLPRegressor(**kwargs, **point), X, y)
        _assert_same_fit(fitted, single)
        np.testing.assert_allclose(fitted._opt_state.hyperparams["learning_rate"],
                                   single._opt_state.hyperparams["learning_rate"], rtol=1e-9)


def test_float32_grid_stays_float32_and_close(digits):
    X, y = digits
    X = X.astype(np.float32)
    template = MLPClassifier(hidden_layer_sizes=(8,), batch_size=64, max_iter=4, random_state=2)
    result = _grid_quietly(template, X, y, alpha=[1e-4, 1e-1])
    for point, fitted in zip(result.params, result.estimators):
        single = _fit_quietly(MLPClassifier(hidden_layer_sizes=(8,), batch_size=64, max_iter=4, **point), X, y)
        assert fitted.coefs_[0].dtype == np.float32
        for a, b in zip(fitted.coefs_, single.coefs_):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_cv_table_equals_gridsearchcv(digits):
    X, y = digits
    template = MLPClassifier(hidden_layer_sizes=(8,), batch_size=64, max_iter=4, random_state=0)
    grid = {"alpha": [1e-4, 1.0, 10.0]}
    result = _grid_quietly(template, X, y, alpha=grid["alpha"], cv=3, epochs_per_call=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search = GridSearchCV(template, grid, cv=3).fit(X, y)
    table = result.cv_results
    assert result.n_runs == 3 * (3 + 1)
    for key in ("split0_test_score", "split1_test_score", "split2_test_score", "mean_test_score", "std_test_score"):
        assert table[key].shape == (3,)
        np.testing.assert_allclose(table[key], search.cv_results_[key], rtol=1e-12)
    np.testing.assert_array_equal(table["rank_test_score"], search.cv_results_["rank_test_score"])
    assert result.best_params["alpha"] == search.best_params_["alpha"]
    assert result.best_score == pytest.approx(search.best_score_)
    np.testing.assert_allclose(result.best_estimator.coefs_[0], search.best_estimator_.coefs_[0], rtol=1e-7, atol=1e-9)
    assert list(table["param_alpha"]) == grid["alpha"]

    # refit=False: the same folds (same compiled shapes per fold) and table, no full-data fits
    folds_only = _grid_quietly(template, X, y, alpha=grid["alpha"], cv=3, epochs_per_call=4, refit=False)
    assert folds_only.n_runs == 3 * 3 and folds_only.estimators == [] and folds_only.best_estimator is None
    np.testing.assert_allclose(folds_only.cv_results["mean_test_score"], search.cv_results_["mean_test_score"])
    assert "train_score" not in folds_only.cv_results and folds_only.cv_results["n_iter"].shape == (3,)


def test_grid_batches_is_make_batches_per_epoch():
    rng = np.random.RandomState(0)
    orders = np.stack([rng.permutation(23) for _ in range(3)])
    rows = grid_batches(orders, 23, 5, n_batches_to=6, batch_width=8)
    for epoch in range(3):
        expected_rows, expected_mask = core.make_batches(orders[epoch], 5, 6, 8)
        np.testing.assert_array_equal(rows[epoch][expected_mask], expected_rows[expected_mask])


def test_diverged_model_is_flagged_or_raises(regression):
    X, y = regression
    y = y * 1e4
    # Same shapes and configuration as the schedule test above: the compiled loop is reused.
    template = MLPRegressor(hidden_layer_sizes=(6,), solver="sgd", batch_size=32, max_iter=24, momentum=0.5)
    grid = dict(alpha=[1e-3], learning_rate_init=[1e-9, 50.0], random_state=[0, 1], epochs_per_call=8)
    with pytest.warns(RuntimeWarning, match="diverged"):
        result = _grid_quietly(template, X, y, **grid)
    assert list(result.cv_results["diverged"]) == [False, False, True, True]
    assert np.isnan(result.cv_results["train_score"][2])
    assert all(np.isfinite(w).all() for w in result.estimators[2].coefs_)  # last finite weights kept
    with pytest.raises(ValueError, match=r"^Solver produced non-finite parameter weights\. .* runs diverged"):
        _grid_quietly(template, X, y, **grid, error_score="raise")  # begins with scikit-learn's sentence


@pytest.mark.parametrize(
    ("estimator", "kwargs", "error", "match"),
    [
        (MLPClassifier(solver="lbfgs"), {}, ValueError, "lbfgs"),
        (MLPClassifier(early_stopping=True, validation_fraction=0.005), {}, ValueError, "validation set is too small"),
        (MLPClassifier(warm_start=True), {}, ValueError, "warm_start"),
        (MLPClassifier(), {"alpha": []}, ValueError, "non-empty"),
        (MLPClassifier(), {"alpha": [0.1, -1.0]}, ValueError, "alpha values must be >= 0"),
        (MLPClassifier(), {"learning_rate_init": [0.0]}, ValueError, "learning_rate_init values must be > 0"),
        (MLPClassifier(), {"alpha": [float("nan")]}, ValueError, "finite"),
        (MLPClassifier(), {"random_state": [np.random.RandomState(0)]}, ValueError, "random_state"),
        (MLPClassifier(), {"alpha": 0.1}, TypeError, "list"),
        (MLPClassifier(), {"epochs_per_call": 0}, ValueError, "epochs_per_call"),
        (MLPClassifier(), {"error_score": 0}, ValueError, "error_score"),
        (MLPClassifier(), {"refit": False}, ValueError, "refit=False"),
        (SklearnMLPClassifier(), {}, TypeError, "jaxrl.MLPClassifier"),
        (MLPClassifier(alpha=-1.0), {}, ValueError, "alpha"),
    ],
)
def test_bad_grids_are_refused(digits, estimator, kwargs, error, match):
    X, y = digits
    with pytest.raises(error, match=match):
        fit_grid(estimator, X, y, **kwargs)


def test_param_grid_defaults_to_estimator_values():
    grid = param_grid(MLPClassifier(alpha=0.5, random_state=3), learning_rate_init=[0.1, 0.2])
    assert grid == [
        {"alpha": 0.5, "learning_rate_init": 0.1, "random_state": 3},
        {"alpha": 0.5, "learning_rate_init": 0.2, "random_state": 3},
    ]


def test_binary_classifier_with_sample_weight_equals_individual_fits():
    X, y = make_regression(n_samples=70, n_features=4, random_state=1)
    y = (y > 0).astype(int)  # binary: one logistic output
    sample_weight = np.random.RandomState(0).rand(70)
    kwargs = dict(hidden_layer_sizes=(5,), batch_size=32, max_iter=4)
    result = _grid_quietly(MLPClassifier(**kwargs), X, y, alpha=[1e-4, 0.3], random_state=[0],
                           sample_weight=sample_weight)
    for point, fitted in zip(result.params, result.estimators):
        single = MLPClassifier(**kwargs, **point)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            single.fit(X, y, sample_weight=sample_weight)
        assert fitted.out_activation_ == "logistic" and fitted.coefs_[-1].shape == (5, 1)
        _assert_same_fit(fitted, single)
        np.testing.assert_allclose(fitted.predict_proba(X), single.predict_proba(X), rtol=1e-9)


@pytest.mark.parametrize(
    "grid, shuffle, shared",
    [
        (dict(alpha=[1e-4, 1.0, 3.0]), True, True),  # one random_state: every run draws the same batches
        (dict(alpha=[1e-4], random_state=[0, 1]), True, False),  # different shuffles
        (dict(alpha=[1e-4], random_state=[0, 1]), False, True),  # no shuffling: the seed does not matter
    ],
)
def test_runs_drawing_the_same_minibatches_are_shuffled_once(digits, monkeypatch, grid, shuffle, shared):
    X, y = digits
    calls = []
    original = grid_module._shuffled_rows
    monkeypatch.setattr(grid_module, "_shuffled_rows",
                        lambda runs, *args: calls.append(len(runs)) or original(runs, *args))
    template = MLPClassifier(hidden_layer_sizes=(8,), batch_size=64, max_iter=4, shuffle=shuffle, random_state=0)
    result = _grid_quietly(template, X, y, **grid, epochs_per_call=2)
    n_runs = result.n_runs
    assert calls == [1 if shared else n_runs] * 2
    for i, (point, fitted) in enumerate(zip(result.params, result.estimators)):
        single = _fit_quietly(clone(template).set_params(**point), X, y)
        _assert_same_fit(fitted, single)
        assert result.cv_results["train_score"][i] == single.score(X, y)  # scored in one device call


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel", "regression"])
def test_run_scores_equal_estimator_score(digits, regression, task):
    # fit_grid scores every run in one device call (hit counts for classifiers); each must be estimator.score
    X, y = digits
    if task == "binary":
        y = np.where(y % 2 == 0, "even", "odd")
    elif task == "multilabel":
        y = np.stack([y % 2 == 0, y > 4, y % 3 == 0], axis=1).astype(int)
    elif task == "regression":
        X, y = regression
    estimator_class = MLPRegressor if task == "regression" else MLPClassifier
    template = estimator_class(hidden_layer_sizes=(8,), batch_size=32, max_iter=3, random_state=0)
    result = _grid_quietly(template, X, y, alpha=[1e-4, 1.0], cv=3, epochs_per_call=3)
    compare = (lambda a, b: a == pytest.approx(b, rel=1e-5)) if task == "regression" else (lambda a, b: a == b)
    for i, fitted in enumerate(result.estimators):
        assert compare(result.cv_results["train_score"][i], fitted.score(X, y))
    folds = list(KFold(3).split(X)) if task != "binary" and task != "multiclass" else list(
        StratifiedKFold(3).split(X, y))
    for k, (train, test) in enumerate(folds):
        for j, alpha in enumerate([1e-4, 1.0]):
            single = _fit_quietly(clone(template).set_params(alpha=alpha), X[train], y[train])
            assert compare(result.cv_results[f"split{k}_test_score"][j], single.score(X[test], y[test]))
