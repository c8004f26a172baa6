"""scikit-learn API of jaxrl's MLPClassifier / MLPRegressor.

check_estimator, meta-estimators (Pipeline, GridSearchCV, clone,
cross_val_score), pickle, bad input, divergence (scikit-learn's message), lbfgs's
max_fun budget and determinism.
"""

import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

from jaxrl import MLPClassifier, MLPRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def iris():
    x, y = load_iris(return_X_y=True)
    order = np.random.RandomState(0).permutation(len(y))
    return x[order], y[order]


@pytest.mark.parametrize("estimator", [MLPClassifier(max_iter=100), MLPRegressor(max_iter=100)], ids=lambda e: type(e).__name__)
def test_check_estimator(estimator):
    # max_iter=100 as scikit-learn's own test suite sets for its MLPs (PER_ESTIMATOR_CHECK_PARAMS).
    results = check_estimator(estimator, on_fail=None, on_skip=None)
    failed = [(r["check_name"], repr(r["exception"])) for r in results if r["status"] == "failed"]
    assert not failed, failed
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    # only checks that need pandas / array-api / decision_function may skip
    allowed = {"check_sample_weights_pandas_series", "check_array_api_input", "check_classifier_data_not_an_array",
               "check_regressor_data_not_an_array", "check_classifiers_multilabel_output_format_decision_function"}
    assert skipped <= allowed, skipped - allowed
    assert sum(r["status"] == "passed" for r in results) >= 55


def test_pipeline_grid_search_clone_cross_val_and_pickle(iris):
    x, y = iris
    pipe = make_pipeline(
        StandardScaler(), MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, learning_rate_init=0.05, random_state=0)
    )
    scores = cross_val_score(pipe, x, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.85
    search = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1.0]}, cv=2).fit(x, y)
    assert search.best_params_["mlpclassifier__alpha"] in (1e-4, 1.0)
    assert search.best_estimator_.score(x, y) > 0.6
    fitted = search.best_estimator_
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.predict_proba(x), fitted.predict_proba(x))
    unfitted = clone(fitted.steps[-1][1])
    assert not hasattr(unfitted, "coefs_") and unfitted.get_params() == fitted.steps[-1][1].get_params()
    # a pickled estimator can continue with partial_fit
    restored.steps[-1][1].partial_fit(StandardScaler().fit_transform(x), y)


def test_fitted_attributes_and_shapes(iris):
    x, y = iris
    clf = MLPClassifier(hidden_layer_sizes=(6, 5), max_iter=5, random_state=0).fit(x, y)
    assert [c.shape for c in clf.coefs_] == [(4, 6), (6, 5), (5, 3)]
    assert [b.shape for b in clf.intercepts_] == [(6,), (5,), (3,)]
    assert all(isinstance(a, np.ndarray) for a in clf.coefs_ + clf.intercepts_)
    assert clf.n_layers_ == 4 and clf.n_outputs_ == 3 and clf.out_activation_ == "softmax"
    assert clf.n_iter_ == 5 and clf.t_ == 5 * len(y) and len(clf.loss_curve_) == 5
    assert clf.n_features_in_ == 4 and list(clf.classes_) == [0, 1, 2]
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None
    proba = clf.predict_proba(x)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(clf.predict_log_proba(x), np.log(proba), rtol=1e-6)
    multilabel = np.stack([y == 0, y == 1], axis=1).astype(int)
    clf = MLPClassifier(hidden_layer_sizes=(6,), max_iter=5, random_state=0).fit(x, multilabel)
    assert clf.out_activation_ == "logistic" and clf.predict(x).shape == (150, 2)
    reg = MLPRegressor(hidden_layer_sizes=(6,), max_iter=5, random_state=0).fit(x, np.stack([x[:, 0], y], 1))
    assert reg.predict(x).shape == (150, 2) and reg.out_activation_ == "identity"


def test_sparse_input_is_densified_with_same_result(iris):
    x, y = iris
    dense = MLPClassifier(hidden_layer_sizes=(5,), max_iter=5, random_state=0).fit(x, y)
    sparse = MLPClassifier(hidden_layer_sizes=(5,), max_iter=5, random_state=0).fit(sp.csr_matrix(x), y)
    np.testing.assert_allclose(sparse.predict_proba(sp.csc_matrix(x)), dense.predict_proba(x), rtol=1e-6)


def test_same_seed_gives_identical_parameters(iris):
    x, y = iris
    a = MLPClassifier(hidden_layer_sizes=(5,), max_iter=5, random_state=4).fit(x, y)
    b = MLPClassifier(hidden_layer_sizes=(5,), max_iter=5, random_state=4).fit(x, y)
    for left, right in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_array_equal(left, right)


@pytest.mark.parametrize(
    "make_input, message",
    [
        (lambda x, y: (np.where(x > 6, np.nan, x), y), "Input X contains NaN"),
        (lambda x, y: (np.where(x > 6, np.inf, x), y), "Input X contains infinity"),
        (lambda x, y: (x[:0], y[:0]), "Found array with 0 sample"),
        (lambda x, y: (x, np.zeros_like(y)), "at least 2 classes"),
        (lambda x, y: (x, y[:-1]), "inconsistent numbers of samples"),
    ],
    ids=["nan", "inf", "empty", "one-class", "length-mismatch"],
)
def test_bad_input_raises_sklearn_style_value_error(iris, make_input, message):
    x, y = iris
    with pytest.raises(ValueError, match=message):
        MLPClassifier(max_iter=2).fit(*make_input(x, y))


def test_bad_input_at_predict_and_for_regressor(iris):
    x, y = iris
    clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=2).fit(x, y)
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is expecting 4 features"):
        clf.predict(x[:, :3])
    with pytest.raises(ValueError, match="could not convert string to float"):
        MLPRegressor(max_iter=2).fit(x, np.array(["a", "b", "c"])[y])
    with pytest.raises(ValueError, match="negative"):
        MLPRegressor(loss="poisson", max_iter=2).fit(x, y - 1.0)
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        MLPRegressor(hidden_layer_sizes=(3, 0), max_iter=2).fit(x, y)
    with pytest.raises(ValueError, match="learning_rate_init"):
        MLPRegressor(learning_rate_init=-1.0).fit(x, y)
    with pytest.raises(AttributeError, match="partial_fit"):
        MLPClassifier(solver="lbfgs").partial_fit(x, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="classes"):
        MLPClassifier(max_iter=2).partial_fit(x, y)
    with pytest.raises(ValueError, match="early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(x, y, classes=[0, 1, 2])


def test_divergence_raises_value_error_naming_iteration_and_keeps_finite_weights():
    rng = np.random.RandomState(0)
    x = rng.randn(64, 3) * 1e3
    y = x[:, 0] * 1e6
    reg = MLPRegressor(hidden_layer_sizes=(4,), solver="sgd", learning_rate_init=10.0, max_iter=20, random_state=0)
    with pytest.raises(ValueError, match=r"diverged at iteration \d+.*lower learning_rate_init"):
        reg.fit(x, y)
    assert all(np.isfinite(w).all() for w in reg.coefs_ + reg.intercepts_)


# scikit-learn's own sentence (BaseMultilayerPerceptron._fit), copied here so that a change on either side shows.
SKLEARN_NON_FINITE = (
    "Solver produced non-finite parameter weights. The input data may contain large values and need to be "
    "preprocessed."
)


@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_divergence_message_begins_with_sklearn_sentence(solver):
    rng = np.random.RandomState(0)
    x = rng.randn(64, 3) * 1e200  # finite input whose squared-error loss overflows at the first evaluation
    y = rng.randn(64)
    reg = MLPRegressor(hidden_layer_sizes=(4,), solver=solver, max_iter=5, random_state=0)
    with pytest.raises(ValueError) as error:
        reg.fit(x, y)
    message = str(error.value)
    assert message.startswith(SKLEARN_NON_FINITE + " ")
    expected_where = "lbfgs diverged at iteration 0" if solver == "lbfgs" else "Solver diverged at iteration 1"
    assert expected_where in message


def _lbfgs_data(task):
    rng = np.random.RandomState(0)
    x = rng.randn(120, 5)
    if task == "binary":
        return MLPClassifier, x, (x[:, 0] + x[:, 1] > 0).astype(int)
    if task == "multiclass":
        return MLPClassifier, x, np.digitize(x[:, 0] - x[:, 2], [-0.5, 0.5])
    return MLPRegressor, x, x @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + np.sin(x[:, 1])


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_lbfgs_max_fun_ends_the_fit_with_sklearn_warning(task):
    cls, x, y = _lbfgs_data(task)
    est = cls(hidden_layer_sizes=(8,), solver="lbfgs", max_fun=5, max_iter=500, random_state=0)
    with pytest.warns(ConvergenceWarning) as record:
        est.fit(x, y)
    with warnings.catch_warnings():  # the same fit with scikit-learn's default budget (15,000 evaluations)
        warnings.simplefilter("ignore", ConvergenceWarning)
        full = cls(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=500, random_state=0).fit(x, y)
    # the evaluation budget (5), not convergence, ended the fit: the full-budget fit runs past it
    assert est.n_iter_ >= 1
    assert est.n_iter_ <= 5
    assert full.n_iter_ > 5
    assert est.loss_ > full.loss_
    messages = [str(w.message) for w in record if issubclass(w.category, ConvergenceWarning)]
    # scikit-learn 1.9's text (sklearn.utils.optimize._check_optimize_result + SciPy's L-BFGS-B stop message)
    assert messages == [
        f"lbfgs failed to converge after {est.n_iter_} iteration(s) (status=1):\n"
        "STOP: TOTAL NO. OF F,G EVALUATIONS EXCEEDS LIMIT\n\n"
        "You might also want to scale the data as shown in:\n"
        "    https://scikit-learn.org/stable/modules/preprocessing.html"
    ]
    # a budget of 1 evaluation still allows one iteration, as in scikit-learn (SciPy stops once n_fun > max_fun)
    with pytest.warns(ConvergenceWarning, match="F,G EVALUATIONS EXCEEDS LIMIT"):
        assert cls(hidden_layer_sizes=(8,), solver="lbfgs", max_fun=1, random_state=0).fit(x, y).n_iter_ == 1


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_lbfgs_large_max_fun_does_not_end_the_fit(task):
    cls, x, y = _lbfgs_data(task)
    est = cls(hidden_layer_sizes=(8,), solver="lbfgs", max_fun=15000, max_iter=30, random_state=0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        est.fit(x, y)
    messages = [str(w.message) for w in record if issubclass(w.category, ConvergenceWarning)]
    assert not any("EVALUATIONS" in message for message in messages), messages
    if est.n_iter_ == 30:  # stopped by max_iter: scikit-learn's iteration-limit text instead
        assert messages and "STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT" in messages[0]
        assert "(max_iter=30)" in messages[0]


def test_verbose_prints_sklearn_progress_lines(iris, capsys):
    x, y = iris
    MLPClassifier(hidden_layer_sizes=(5,), max_iter=2, verbose=True, random_state=0).fit(x, y)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Iteration 1, loss = ") and lines[1].startswith("Iteration 2, loss = ")
