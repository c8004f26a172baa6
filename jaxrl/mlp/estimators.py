"""scikit-learn-compatible ``MLPClassifier`` / ``MLPRegressor`` on the JAX core.

Drop-in replacements for ``sklearn.neural_network.MLPClassifier`` /
``MLPRegressor`` (scikit-learn 1.9): same constructor parameters and defaults,
same fitted attributes (NumPy arrays with sklearn's shapes), same validation
and, for float64 input and the same ``random_state``, the same numbers for the
stochastic solvers (sklearn's NumPy ``RandomState`` drives the initial weights,
the early-stopping split and the per-epoch shuffles).

The estimator is only a shell: every epoch is one call of the jitted
:func:`jaxrl.mlp.core.train_epoch` (a ``lax.scan`` over minibatches of data
placed on the device once per fit); the host only does what sklearn does at
epoch ends (loss bookkeeping, stopping rules, learning-rate schedules: :func:`jaxrl.mlp.epoch_end.epoch_end`,
the same function as :func:`jaxrl.mlp.grid.fit_grid`'s compiled loop).
float64 input is trained under ``jax.enable_x64(True)``; float32 stays float32.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real
from typing import NamedTuple

import jax
import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils import shuffle as sklearn_shuffle
from sklearn.utils.metaestimators import available_if

# Private scikit-learn helpers (the same ones sklearn's MLPs use; no public equivalent): pyproject.toml pins
# scikit-learn below its next minor release.
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.multiclass import _check_partial_fit_first_call, type_of_target, unique_labels
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from jaxrl.mlp import core, optim
from jaxrl.mlp.epoch_end import EpochEndConfig, EpochEndState, epoch_end, schedule_code
from jaxrl.mlp.lbfgs import lbfgs_fit

__all__ = ["MLPClassifier", "MLPRegressor", "NON_FINITE_MESSAGE"]

# scikit-learn's own sentence (``BaseMultilayerPerceptron._fit``); every divergence error starts with it.
NON_FINITE_MESSAGE = (
    "Solver produced non-finite parameter weights. The input data may contain large values and need to be "
    "preprocessed."
)

_STOCHASTIC_SOLVERS = ("sgd", "adam")
_SMALL_DATA = 2048  # up to this many training rows, row/batch shapes are padded to buckets
_SMALL_FEATURES = 64  # up to this many features, the input width is padded to a power of two

# Compiled once per (shapes, dtype, static config) and shared by every estimator.
_train_epoch = jax.jit(core.train_epoch, static_argnames=("optimizer", "spec"))
_forward = jax.jit(core.forward, static_argnames=("activation", "out_activation"))


def _bucket(size: int) -> int:
    """Shape bucket for small data: next power of two, so tiny fits share compiles."""
    return 1 << max(int(size) - 1, 0).bit_length()


def _padded_layout(n_samples: int, batch_size: int):
    """``(rows_to, n_batches_to, batch_size_to)``: exact for large data, bucketed when small.

    Small fits (``n_samples <= _SMALL_DATA``) all use ``_SMALL_DATA`` rows and
    batches at least 256 wide, so that e.g. ``check_estimator``'s many tiny fits
    share a handful of compiled epochs. Padding rows are masked (weight 0).
    """
    n_batches = -(-n_samples // batch_size)
    if n_samples > _SMALL_DATA:
        return n_samples, n_batches, batch_size
    return _SMALL_DATA, _bucket(n_batches), max(256, _bucket(batch_size))


def _padded_features(n_features: int) -> int:
    """Input width used on the device: few features are zero-padded to a power of two.

    The extra input columns are 0 and the matching rows of ``W0`` start at 0; their
    gradient is then exactly 0 (also the L2 term), so they stay 0 under SGD and
    Adam and the real parameters follow sklearn's arithmetic.
    """
    return max(32, _bucket(n_features)) if n_features <= _SMALL_FEATURES else n_features


def _device_params(coefs, intercepts, dtype, n_features_to=None):
    """Parameter pytree on the device from NumPy lists; ``W0`` zero-padded to ``n_features_to`` rows.

    Casting and padding are done in NumPy so that no eager JAX op (and no
    compilation per shape) is needed.
    """
    coefs = [np.asarray(w, dtype) for w in coefs]
    intercepts = [np.asarray(b, dtype) for b in intercepts]
    if n_features_to is not None and n_features_to > coefs[0].shape[0]:
        coefs[0] = np.pad(coefs[0], ((0, n_features_to - coefs[0].shape[0]), (0, 0)))
    return tuple((jax.device_put(w), jax.device_put(b)) for w, b in zip(coefs, intercepts))


def _host_params(params, n_features):
    """``(coefs_, intercepts_)`` NumPy lists from a device pytree, ``W0`` cut to ``n_features`` rows."""
    coefs = [np.array(w) for w, _ in params]
    intercepts = [np.array(b) for _, b in params]
    coefs[0] = coefs[0][:n_features].copy()
    return coefs, intercepts


def _pad_2d(array: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Zero-pad a 2-D array at the end to ``[rows, cols]`` (no copy when already that shape)."""
    if array.shape == (rows, cols):
        return array
    return np.pad(array, ((0, rows - array.shape[0]), (0, cols - array.shape[1])))


class _EpochData(NamedTuple):
    """One fit's training data on the device, padded to the minibatch layout of :func:`_padded_layout`."""

    x: jax.Array  # [rows_to, n_features_to]
    y: jax.Array  # [rows_to, n_outputs]
    weight: jax.Array  # [rows_to] sample weights, 0 on padding rows
    n_samples: int  # real training rows
    batch_size: int  # sklearn's minibatch size
    n_batches_to: int  # padded batches per epoch
    batch_size_to: int  # padded batch width


def _place_epoch_data(X, y, sample_weight, batch_size: int, n_features_to: int) -> _EpochData:
    """Put the training data on the device once per fit (each epoch then only sends its batch layout).

    Args:
      X: ``[n_samples, n_features]``; y: ``[n_samples, n_outputs]``; sample_weight: ``[n_samples]`` or None.
    """
    n_samples, dtype = X.shape[0], X.dtype
    rows_to, n_batches_to, batch_size_to = _padded_layout(n_samples, batch_size)
    weight = np.ones(n_samples, dtype) if sample_weight is None else sample_weight.astype(dtype)
    return _EpochData(
        x=jax.device_put(_pad_2d(X, rows_to, n_features_to)),
        y=jax.device_put(_pad_2d(y.astype(dtype), rows_to, y.shape[1])),
        weight=jax.device_put(np.pad(weight, (0, rows_to - n_samples))),
        n_samples=n_samples,
        batch_size=batch_size,
        n_batches_to=n_batches_to,
        batch_size_to=batch_size_to,
    )


def _x64(dtype):
    """Context manager: JAX 64-bit mode exactly when the data are float64."""
    return jax.enable_x64(bool(np.dtype(dtype) == np.float64))


def _to_host(tree):
    return jax.tree.map(np.asarray, tree)


def _lbfgs_convergence_message(n_iter: int, n_fun: int, max_iter: int, max_fun: int) -> str:
    """scikit-learn's ``ConvergenceWarning`` text for an L-BFGS run stopped by ``max_iter`` or ``max_fun``.

    The wording of ``sklearn.utils.optimize._check_optimize_result`` with SciPy's L-BFGS-B stop message
    (the iteration limit is checked first, as SciPy does).
    """
    if n_iter >= max_iter:
        status, stop = 1, "STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT"
    elif n_fun > max_fun:
        status, stop = 1, "STOP: TOTAL NO. OF F,G EVALUATIONS EXCEEDS LIMIT"
    else:
        status, stop = 2, "ABNORMAL: "
    message = f"lbfgs failed to converge after {n_iter} iteration(s) (status={status}):\n{stop}\n"
    if n_iter == max_iter:
        message += f"\nIncrease the number of iterations to improve the convergence (max_iter={max_iter})."
    return message + (
        "\nYou might also want to scale the data as shown in:\n"
        "    https://scikit-learn.org/stable/modules/preprocessing.html"
    )


class _BaseMLP(BaseEstimator):
    """Shared machinery of :class:`MLPClassifier` and :class:`MLPRegressor`."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
    }

    # ------------------------------------------------------------------ helpers
    def _loss_name(self) -> str:
        raise NotImplementedError

    def _spec(self) -> core.MLPSpec:
        loss_name = self._loss_name()
        if loss_name == "log_loss" and self.out_activation_ == "logistic":
            loss_name = "binary_log_loss"
        return core.MLPSpec(activation=self.activation, out_activation=self.out_activation_, loss=loss_name)

    def _initialize(self, y, layer_units, dtype, random_state):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        if not is_classifier(self):
            self.out_activation_ = "exp" if self._loss_name() == "poisson" else "identity"
        elif self._label_binarizer.y_type_ == "multiclass":
            self.out_activation_ = "softmax"
        else:
            self.out_activation_ = "logistic"
        params = core.init_params_numpy(random_state, layer_units, self.activation, dtype)
        self.coefs_ = [w for w, _ in params]
        self.intercepts_ = [b for _, b in params]
        if self.solver in _STOCHASTIC_SOLVERS:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    # ---------------------------------------------------------------------- fit
    def _fit(self, X, y, sample_weight=None, incremental=False):
        hidden_layer_sizes = self.hidden_layer_sizes
        if not hasattr(hidden_layer_sizes, "__iter__"):
            hidden_layer_sizes = [hidden_layer_sizes]
        hidden_layer_sizes = list(hidden_layer_sizes)
        if np.any(np.array(hidden_layer_sizes) <= 0):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {hidden_layer_sizes}.")
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)

        X, y = self._validate_input(X, y, incremental, reset=first_pass)
        if sp.issparse(X):
            X = X.toarray()
        n_features = X.shape[1]
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        self.n_outputs_ = y.shape[1]
        layer_units = [n_features] + hidden_layer_sizes + [self.n_outputs_]
        random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(y, layer_units, X.dtype, random_state)

        with _x64(X.dtype):
            if self.solver in _STOCHASTIC_SOLVERS:
                params = self._fit_stochastic(X, y, sample_weight, random_state, incremental)
            else:
                params = self._fit_lbfgs(X, y, sample_weight, _device_params(self.coefs_, self.intercepts_, X.dtype))
            self.coefs_, self.intercepts_ = _host_params(params, n_features)

        if not all(np.isfinite(w).all() for w in self.coefs_ + self.intercepts_):
            raise ValueError(NON_FINITE_MESSAGE)
        return self

    def _fit_lbfgs(self, X, y, sample_weight, params):
        dtype = X.dtype
        weight = np.ones(X.shape[0], dtype) if sample_weight is None else sample_weight.astype(dtype)
        batch = core.Batch(x=jax.device_put(X), y=jax.device_put(y.astype(dtype)), weight=jax.device_put(weight))
        result = lbfgs_fit(
            params, batch, self.alpha, self.tol, self.max_iter, self.max_fun, spec=self._spec()
        )
        self.n_iter_ = int(result.n_iter)
        self.loss_ = float(result.loss)
        if not np.isfinite(self.loss_):
            raise ValueError(
                f"{NON_FINITE_MESSAGE} lbfgs diverged at iteration {self.n_iter_}: the loss is {self.loss_}. "
                "Scale the input data (e.g. StandardScaler) or increase alpha."
            )
        if not bool(result.converged):
            warnings.warn(
                _lbfgs_convergence_message(self.n_iter_, int(result.n_fun), self.max_iter, self.max_fun),
                ConvergenceWarning,
            )
        return result.params

    def _make_opt_state(self, params, dtype, incremental, on_device=True):
        """The optimizer and its state (kept from the last call for partial_fit).

        The state is built on the host (zeros of the right shapes from
        ``jax.eval_shape``), so a new data shape costs no extra compilation;
        ``on_device=False`` leaves it there (NumPy leaves, e.g. to stack many runs' states first).
        """
        def to_device(leaf):
            leaf = np.asarray(leaf)
            leaf = leaf.astype(dtype) if np.issubdtype(leaf.dtype, np.floating) else leaf
            return jax.device_put(leaf) if on_device else leaf

        if incremental and getattr(self, "_opt_state", None) is not None:
            return optim.make_optimizer(*self._optimizer_key), jax.tree.map(to_device, self._opt_state)
        self._optimizer_key = (self.solver, bool(self.nesterovs_momentum))
        optimizer = optim.make_optimizer(*self._optimizer_key)
        if self.solver == "sgd":
            hyper = dict(learning_rate=self.learning_rate_init, momentum=self.momentum)
        else:
            hyper = dict(learning_rate=self.learning_rate_init, b1=self.beta_1, b2=self.beta_2, eps=self.epsilon)
        shapes = optim.state_shapes(optimizer, params)
        opt_state = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), shapes)
        hyperparams = {name: np.asarray(value, dtype) for name, value in hyper.items()}
        opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, **hyperparams})
        return optimizer, jax.tree.map(to_device, opt_state)

    def _fit_stochastic(self, X, y, sample_weight, random_state, incremental):
        """sklearn's ``_fit_stochastic``: jitted epochs (:func:`core.train_epoch`) until a stopping rule fires.

        Each epoch: shuffle (sklearn's ``RandomState``), train, check the loss, score the validation split
        (``early_stopping``), then sklearn's epoch-end bookkeeping (:func:`epoch_end`).

        Returns:
          the fitted parameters on the device (the best-validation ones with ``early_stopping``).
        """
        n_features_to = _padded_features(X.shape[1])
        params = _device_params(self.coefs_, self.intercepts_, X.dtype, n_features_to)
        optimizer, opt_state = self._make_opt_state(params, X.dtype, incremental)
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        (X_train, y_train, sample_weight_train), validation = self._split_validation(
            X, y, sample_weight, random_state, n_features_to
        )
        data = _place_epoch_data(X_train, y_train, sample_weight_train,
                                 self._minibatch_size(X_train.shape[0]), n_features_to)
        spec, config, ends = self._spec(), self._epoch_end_config(), self._epoch_end_state(opt_state)
        sample_idx = np.arange(data.n_samples, dtype=int)
        best_params = params
        try:
            self.n_iter_ = 0
            for _ in range(self.max_iter):
                if self.shuffle:
                    sample_idx = sklearn_shuffle(sample_idx, random_state=random_state)
                params, opt_state, loss = self._train_one_epoch(params, opt_state, optimizer, spec, data, sample_idx)
                val_score = None if validation is None else self._score_params(params, *validation)
                previous, ends = ends, epoch_end(ends, loss, data.n_samples, config, val_score)
                self._record_epoch(ends, loss, val_score)
                if ends.improved:
                    best_params = params
                if ends.learning_rate != previous.learning_rate:
                    opt_state = optim.set_learning_rate(opt_state, ends.learning_rate)
                if self._stops(previous, ends) or incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn(
                        "Stochastic Optimizer: Maximum iterations (%d) reached and the optimization hasn't "
                        "converged yet." % self.max_iter,
                        ConvergenceWarning,
                    )
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        finally:
            self._opt_state = _to_host(opt_state)  # kept in the padded layout for partial_fit
            self.coefs_, self.intercepts_ = _host_params(params, X.shape[1])
        return best_params if self.early_stopping else params

    def _split_validation(self, X, y, sample_weight, random_state, n_features_to):
        """sklearn's early-stopping split: ``((X, y, sample_weight) to train on, validation)``.

        ``validation`` is ``(x_val [n_val, n_features_to] on the device, y_val labels, sample_weight_val)``,
        the arguments of :meth:`_score_params`, or None without ``early_stopping``.
        """
        if not self.early_stopping:
            return (X, y, sample_weight), None
        # sklearn stratifies on the binarized y when it has a single column.
        stratify = y if is_classifier(self) and self.n_outputs_ == 1 else None
        arrays = (X, y) if sample_weight is None else (X, y, sample_weight)
        split = train_test_split(
            *arrays, random_state=random_state, test_size=self.validation_fraction, stratify=stratify
        )
        X_train, X_val, y_train, y_val = split[:4]
        sample_weight_train, sample_weight_val = (None, None) if sample_weight is None else split[4:]
        if X_val.shape[0] < 2:
            raise ValueError(
                "The validation set is too small. Increase 'validation_fraction' or the size of your dataset."
            )
        if is_classifier(self):
            y_val = self._label_binarizer.inverse_transform(y_val)
        x_val_device = jax.device_put(_pad_2d(X_val, X_val.shape[0], n_features_to))
        return (X_train, y_train, sample_weight_train), (x_val_device, y_val, sample_weight_val)

    def _minibatch_size(self, n_samples: int) -> int:
        """sklearn's minibatch size: ``min(200, n)`` for ``"auto"``, else clipped to ``[1, n]`` with a warning."""
        if self.batch_size == "auto":
            return min(200, n_samples)
        if self.batch_size > n_samples:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped")
        return int(np.clip(self.batch_size, 1, n_samples))

    def _epoch_end_config(self) -> EpochEndConfig:
        return EpochEndConfig(
            tol=self.tol,
            n_iter_no_change=self.n_iter_no_change,
            schedule=schedule_code(self.solver, self.learning_rate),
            learning_rate_init=float(self.learning_rate_init),
            power_t=self.power_t,
        )

    def _epoch_end_state(self, opt_state) -> EpochEndState:
        """The epoch-end state of this call from the fitted attributes (``n_iter_`` restarts at 0, as sklearn)."""
        return EpochEndState(
            n_iter=0,
            samples_seen=self.t_,
            best_loss=np.inf if self.best_loss_ is None else self.best_loss_,
            best_score=-np.inf if self.best_validation_score_ is None else self.best_validation_score_,
            no_improvement=self._no_improvement_count,
            learning_rate=np.asarray(opt_state.hyperparams["learning_rate"]),  # its dtype, as the optimizer sees it
            improved=False,
            stopped=False,
        )

    def _train_one_epoch(self, params, opt_state, optimizer, spec, data, sample_idx):
        """One jitted epoch over ``data`` in the order ``sample_idx``: ``(params, opt_state, loss)``.

        Raises:
          ValueError: the loss or the new weights are not finite (the old ``params`` stay the fitted ones).
        """
        batch_rows, batch_mask = core.make_batches(sample_idx, data.batch_size, data.n_batches_to, data.batch_size_to)
        new_params, new_opt_state, metrics = _train_epoch(
            params, opt_state, data.x, data.y, data.weight, batch_rows, batch_mask, self.alpha,
            optimizer=optimizer, spec=spec,
        )
        loss = float(metrics["loss"])
        if not (np.isfinite(loss) and bool(metrics["finite"])):
            self.n_iter_ += 1
            raise ValueError(
                f"{NON_FINITE_MESSAGE} Solver diverged at iteration {self.n_iter_}: the training loss is "
                f"{loss} (non-finite loss or weights). Try a lower learning_rate_init "
                f"(currently {self.learning_rate_init}) or scale the input data "
                "(e.g. with StandardScaler). The weights of the last finite iteration are kept."
            )
        return new_params, new_opt_state, loss

    def _record_epoch(self, ends: EpochEndState, loss: float, val_score):
        """sklearn's fitted attributes after an epoch (``loss_curve_``, ``n_iter_``, ``t_``, best loss / score)."""
        self.n_iter_ = int(ends.n_iter)
        self.t_ = int(ends.samples_seen)
        self.loss_ = loss
        self.loss_curve_.append(loss)
        if self.verbose:
            print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
        if self.early_stopping:
            self.validation_scores_.append(val_score)
            if self.verbose:
                print("Validation score: %f" % val_score)
            self.best_validation_score_ = float(ends.best_score)
        else:
            self.best_loss_ = float(ends.best_loss)
        self._no_improvement_count = int(ends.no_improvement)

    def _stops(self, previous: EpochEndState, ends: EpochEndState) -> bool:
        """Whether training stops after this epoch, with sklearn's verbose messages when it is stuck."""
        adaptive = self.solver == "sgd" and self.learning_rate == "adaptive"
        lowered = adaptive and ends.learning_rate < previous.learning_rate
        if self.verbose and (ends.stopped or lowered):
            quantity = "Validation score" if self.early_stopping else "Training loss"
            msg = "%s did not improve more than tol=%f for %d consecutive epochs." % (
                quantity, self.tol, self.n_iter_no_change
            )
            if lowered:
                print(msg + " Setting learning rate to %f" % (float(previous.learning_rate) / 5.0))
            else:
                print(msg + (" Learning rate too small. Stopping." if adaptive else " Stopping."))
        return bool(ends.stopped)

    def _score_params(self, params, x_device, y, sample_weight):
        output = np.array(_forward(params, x_device, activation=self.activation, out_activation=self.out_activation_))
        return self._score_output(output, y, sample_weight)

    def _score_output(self, output, y, sample_weight=None):
        """``score`` from the network output ``[n_samples, n_outputs]`` (nan when it is not finite)."""
        if not np.isfinite(output).all():
            return np.nan
        y_pred = self._output_to_prediction(output)
        score_function = accuracy_score if is_classifier(self) else r2_score
        return score_function(y, y_pred, sample_weight=sample_weight)

    # ------------------------------------------------------------------ predict
    def _forward_pass_fast(self, X, check_input=True):
        """Network output ``[n_samples, n_outputs]`` as a NumPy array."""
        if check_input:
            X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        if sp.issparse(X):
            X = X.toarray()
        dtype = np.result_type(np.asarray(X).dtype, self.coefs_[0].dtype)
        if not np.issubdtype(dtype, np.floating):
            dtype = np.float64
        n_samples, n_features = X.shape
        # Pad small inputs to bucketed shapes (zero rows/columns) so predictions reuse compiles.
        rows_to = max(64, _bucket(n_samples)) if n_samples <= _SMALL_DATA else n_samples
        n_features_to = _padded_features(n_features)
        x_padded = np.zeros((rows_to, n_features_to), dtype)
        x_padded[:n_samples, :n_features] = X
        with _x64(dtype):
            params = _device_params(self.coefs_, self.intercepts_, dtype, n_features_to)
            output = _forward(params, jax.device_put(x_padded), activation=self.activation, out_activation=self.out_activation_)
            return np.array(output)[:n_samples]

    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix X and target(s) y.

        Args:
          X: ``[n_samples, n_features]`` array-like or sparse matrix (densified).
          y: ``[n_samples]`` or ``[n_samples, n_outputs]`` targets (class labels or reals).
          sample_weight: ``[n_samples]`` or None.

        Returns:
          self, fitted.
        """
        self._validate_params()
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def _check_solver(self):
        if self.solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError(
                "partial_fit is only available for stochastic optimizers. %s is not stochastic." % self.solver
            )
        return True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


def _partial_fit_available(estimator):
    return estimator._check_solver()


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier: scikit-learn's ``MLPClassifier`` in JAX.

    Same parameters, defaults, attributes and results as
    ``sklearn.neural_network.MLPClassifier`` (scikit-learn 1.9); see its
    documentation. Output: softmax for multi-class, logistic for binary and
    multi-label indicator ``y``; loss: (binary) log-loss.

    Attributes (after fit): ``classes_``, ``coefs_``, ``intercepts_``, ``loss_``,
    ``loss_curve_``, ``best_loss_``, ``validation_scores_``,
    ``best_validation_score_``, ``n_iter_``, ``t_``, ``n_layers_``,
    ``n_outputs_``, ``out_activation_``, ``n_features_in_``, ``feature_names_in_``.
    """

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun

    def _loss_name(self):
        return "log_loss"

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(
            self, X, y, accept_sparse=["csr", "csc"], multi_output=True, dtype=(np.float64, np.float32), reset=reset
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if (not hasattr(self, "classes_")) or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in the previous call to "
                        f"fit. Previously got {self.classes_}, `y` has {classes}"
                    )
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. 'y' has {classes}."
                )
        if not self._label_binarizer.y_type_.startswith("multilabel") and len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the data, but the data contains "
                f"only one class: {self.classes_[0]!r}."
            )
        y = self._label_binarizer.transform(y).astype(bool)
        return X, y

    def _output_to_prediction(self, output):
        if self.n_outputs_ == 1:
            output = output.ravel()
        return self._label_binarizer.inverse_transform(output)

    def predict(self, X):
        """Predicted class labels ``[n_samples]`` (or ``[n_samples, n_classes]`` multi-label)."""
        check_is_fitted(self)
        return self._output_to_prediction(self._forward_pass_fast(X))

    @available_if(_partial_fit_available)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y); ``classes`` is required on the first call.

        Args:
          X: ``[n_samples, n_features]``.
          y: ``[n_samples]`` labels (or indicator matrix).
          sample_weight: ``[n_samples]`` or None.
          classes: all classes across calls (first call only).

        Returns:
          self.
        """
        self._validate_params()
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict_proba(self, X):
        """Class probabilities ``[n_samples, n_classes]``, columns ordered as ``classes_``."""
        check_is_fitted(self)
        y_pred = self._forward_pass_fast(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        if y_pred.ndim == 1:
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def predict_log_proba(self, X):
        """``log(predict_proba(X))``, ``[n_samples, n_classes]``."""
        return np.log(self.predict_proba(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor: scikit-learn's ``MLPRegressor`` in JAX.

    Same parameters, defaults, attributes and results as
    ``sklearn.neural_network.MLPRegressor`` (scikit-learn 1.9). ``loss`` is
    ``"squared_error"`` (identity output) or ``"poisson"`` (exp output, half
    Poisson deviance, ``y >= 0``).
    """

    _parameter_constraints: dict = {
        **_BaseMLP._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
    ):
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun

    def _loss_name(self):
        return self.loss

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=["csr", "csc"],
            multi_output=True,
            y_numeric=True,
            dtype=(np.float64, np.float32),
            reset=reset,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and np.any(y < 0):
            raise ValueError("Some value(s) of y are negative which is not allowed for Poisson regression.")
        return X, y

    def _output_to_prediction(self, output):
        return output.ravel() if output.shape[1] == 1 else output

    def predict(self, X):
        """Predicted values ``[n_samples]`` (or ``[n_samples, n_outputs]``)."""
        check_is_fitted(self)
        return self._output_to_prediction(self._forward_pass_fast(X))

    @available_if(_partial_fit_available)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y) with the stochastic solver (sgd or adam).

        Args:
          X: ``[n_samples, n_features]``.
          y: ``[n_samples]`` or ``[n_samples, n_outputs]``.
          sample_weight: ``[n_samples]`` or None.

        Returns:
          self.
        """
        self._validate_params()
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)
