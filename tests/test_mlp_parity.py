"""Numerical parity of jaxrl's MLP estimators with scikit-learn itself.

Same ``random_state``, float64 input, several epochs: ``coefs_`` / ``intercepts_``
must match scikit-learn's within 1e-6 (relative), and so must the loss curve and
the held-out predictions. lbfgs (a different line search) must reach a loss
within 1% of scikit-learn's.
"""

import warnings

import numpy as np
import pytest
from sklearn import neural_network as sk
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

from jaxrl import MLPClassifier, MLPRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

RTOL = 1e-6


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    # 437 training rows: with batch_size=50 the last batch has 37 rows (ragged)
    return x[:437], y[:437], x[437:600], y[437:600]


@pytest.fixture(scope="module")
def regression():
    rng = np.random.RandomState(0)
    x = rng.randn(160, 6)
    y = np.stack([np.sin(x[:, 0]) + 0.5 * x[:, 1], x[:, 2] * x[:, 3]], axis=1)
    return x[:123], y[:123], x[123:], y[123:]


def assert_same_fit(ours, theirs, rtol=RTOL):
    assert ours.n_iter_ == theirs.n_iter_ and ours.t_ == theirs.t_
    assert ours.out_activation_ == theirs.out_activation_ and ours.n_layers_ == theirs.n_layers_
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        assert a.shape == b.shape and a.dtype == b.dtype == np.float64
        scale = np.abs(b).max()
        np.testing.assert_allclose(a / scale, b / scale, rtol=0, atol=rtol)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=rtol)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=rtol)
    if theirs.best_loss_ is not None:
        assert ours.best_loss_ == pytest.approx(theirs.best_loss_, rel=rtol)
    if theirs.validation_scores_ is not None:
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_, rtol=rtol)


CLASSIFIER_CASES = [
    dict(solver="sgd", learning_rate="constant", learning_rate_init=0.05, nesterovs_momentum=True),
    dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.3, nesterovs_momentum=False),
    # tol=10 makes every epoch "stuck": adaptive divides the learning rate by 5 each time
    dict(solver="sgd", learning_rate="adaptive", learning_rate_init=0.1, n_iter_no_change=1, tol=10.0),
    dict(solver="sgd", learning_rate="constant", momentum=0.0, learning_rate_init=0.1, activation="tanh"),
    dict(solver="adam", learning_rate_init=0.01),
    dict(solver="adam", activation="logistic", alpha=0.1),
    # tol=10 with n_iter_no_change=2: training stops after 4 epochs (before max_iter=6), as sklearn's
    dict(solver="adam", learning_rate_init=0.01, tol=10.0, n_iter_no_change=2),
    # multiclass early stopping: sklearn's (unstratified, as its one-hot y has 10 columns) split, best weights
    dict(solver="adam", learning_rate_init=0.01, early_stopping=True, validation_fraction=0.2),
]


@pytest.mark.parametrize("params", CLASSIFIER_CASES, ids=lambda p: "-".join(str(v) for v in p.values()))
def test_classifier_matches_sklearn(digits, params):
    x, y, x_test, y_test = digits
    kwargs = dict(hidden_layer_sizes=(17, 9), batch_size=50, max_iter=6, random_state=3, **params)
    ours = MLPClassifier(**kwargs).fit(x, y)
    theirs = sk.MLPClassifier(**kwargs).fit(x, y)
    assert_same_fit(ours, theirs)
    np.testing.assert_allclose(ours.predict_proba(x_test), theirs.predict_proba(x_test), rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(ours.predict(x_test), theirs.predict(x_test))


def test_adaptive_stops_when_learning_rate_is_tiny(digits):
    x, y, _, _ = digits
    kwargs = dict(hidden_layer_sizes=(5,), solver="sgd", learning_rate="adaptive", learning_rate_init=1e-4,
                  n_iter_no_change=1, tol=10.0, max_iter=50, random_state=0)
    ours = MLPClassifier(**kwargs).fit(x, y)
    theirs = sk.MLPClassifier(**kwargs).fit(x, y)
    assert ours.n_iter_ == theirs.n_iter_ < 50
    assert_same_fit(ours, theirs)


def test_binary_classifier_with_sample_weight_and_early_stopping(digits):
    x, y, x_test, _ = digits
    labels = y % 2
    weight = np.random.RandomState(0).rand(len(y)) + 0.5
    kwargs = dict(hidden_layer_sizes=(7,), max_iter=8, random_state=0, early_stopping=True,
                  validation_fraction=0.2, n_iter_no_change=3, learning_rate_init=0.01)
    ours = MLPClassifier(**kwargs).fit(x, labels, sample_weight=weight)
    theirs = sk.MLPClassifier(**kwargs).fit(x, labels, sample_weight=weight)
    assert ours.out_activation_ == "logistic" and ours.coefs_[-1].shape == (7, 1)
    np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_, rtol=RTOL)
    assert ours.best_validation_score_ == theirs.best_validation_score_ and ours.best_loss_ is None
    assert_same_fit(ours, theirs)
    np.testing.assert_allclose(ours.predict_proba(x_test), theirs.predict_proba(x_test), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_regressor_multi_output_ragged_batch_matches_sklearn(regression, solver):
    x, y, x_test, _ = regression
    kwargs = dict(hidden_layer_sizes=(8,), solver=solver, batch_size=20, max_iter=7, random_state=1,
                  learning_rate_init=0.01, activation="relu")
    ours = MLPRegressor(**kwargs).fit(x, y)  # 123 rows: last batch has 3
    theirs = sk.MLPRegressor(**kwargs).fit(x, y)
    assert_same_fit(ours, theirs)
    np.testing.assert_allclose(ours.predict(x_test), theirs.predict(x_test), rtol=1e-6, atol=1e-9)


def test_poisson_regressor_matches_sklearn(regression):
    x, y, x_test, _ = regression
    y = np.abs(y[:, 0])
    kwargs = dict(loss="poisson", hidden_layer_sizes=(8,), max_iter=5, random_state=0, learning_rate_init=0.01)
    ours = MLPRegressor(**kwargs).fit(x, y)
    theirs = sk.MLPRegressor(**kwargs).fit(x, y)
    assert ours.out_activation_ == "exp"
    assert_same_fit(ours, theirs)
    np.testing.assert_allclose(ours.predict(x_test), theirs.predict(x_test), rtol=1e-6)


def test_partial_fit_sequence_matches_sklearn(digits):
    x, y, x_test, _ = digits
    classes = np.arange(10)
    kwargs = dict(hidden_layer_sizes=(17, 9), solver="sgd", learning_rate="invscaling",
                  learning_rate_init=0.3, batch_size=50, random_state=3)
    ours, theirs = MLPClassifier(**kwargs), sk.MLPClassifier(**kwargs)
    chunks = [slice(0, 200), slice(200, 437), slice(0, 437)]
    for i, chunk in enumerate(chunks):
        extra = {"classes": classes} if i == 0 else {}
        ours.partial_fit(x[chunk], y[chunk], **extra)
        theirs.partial_fit(x[chunk], y[chunk], **extra)
    assert_same_fit(ours, theirs)
    np.testing.assert_array_equal(ours.predict(x_test), theirs.predict(x_test))


def test_warm_start_matches_sklearn(regression):
    x, y, _, _ = regression
    kwargs = dict(hidden_layer_sizes=(8,), max_iter=3, random_state=0, warm_start=True, learning_rate_init=0.01)
    ours, theirs = MLPRegressor(**kwargs), sk.MLPRegressor(**kwargs)
    for _ in range(2):
        ours.fit(x, y)
        theirs.fit(x, y)
    assert len(ours.loss_curve_) == 6
    assert_same_fit(ours, theirs)


@pytest.mark.parametrize("estimator", ["classifier", "regressor"])
def test_lbfgs_loss_within_one_percent_of_sklearn(digits, regression, estimator):
    if estimator == "classifier":
        x, y, x_test, y_test = digits
        ours_cls, theirs_cls = MLPClassifier, sk.MLPClassifier
    else:
        x, y, x_test, y_test = regression
        ours_cls, theirs_cls = MLPRegressor, sk.MLPRegressor
    kwargs = dict(hidden_layer_sizes=(10,), solver="lbfgs", max_iter=60, alpha=1e-2, random_state=0)
    ours = ours_cls(**kwargs).fit(x, y)
    theirs = theirs_cls(**kwargs).fit(x, y)
    assert ours.n_iter_ <= 60
    assert ours.loss_ <= theirs.loss_ * 1.01, (ours.loss_, theirs.loss_)
    assert ours.score(x_test, y_test) >= theirs.score(x_test, y_test) - 0.05
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        ours_cls(**{**kwargs, "max_iter": 3}).fit(x, y)


def test_float32_stays_float32_and_close_to_sklearn(digits):
    x, y, x_test, _ = digits
    x32 = x.astype(np.float32)
    kwargs = dict(hidden_layer_sizes=(17, 9), batch_size=50, max_iter=3, random_state=3, learning_rate_init=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPClassifier(**kwargs).fit(x32, y)
        theirs = sk.MLPClassifier(**kwargs).fit(x32, y)
    assert all(a.dtype == np.float32 for a in ours.coefs_ + ours.intercepts_)
    assert ours.predict_proba(x_test.astype(np.float32)).dtype == np.float32
    for a, b in zip(ours.coefs_, theirs.coefs_):
        np.testing.assert_allclose(a, b, atol=1e-4)
