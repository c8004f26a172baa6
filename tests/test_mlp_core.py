"""The pure MLP core: init, loss, gradient, optimizers, train_step/train_epoch, L-BFGS.

Expected values come from scikit-learn itself (its loss functions, its
back-propagation and its optimizer classes). float64 runs inside
``jax.enable_x64(True)``; x64 is never turned on globally.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor
from sklearn.neural_network._base import LOSS_FUNCTIONS
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer, SGDOptimizer

from jaxrl.mlp import core, optim
from jaxrl.mlp.lbfgs import lbfgs_fit

x64 = jax.enable_x64
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _data(n=23, d=4, k=3, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, d)
    labels = rng.randint(k, size=n)
    y = np.eye(k)[labels]
    return x, y


def _tree_allclose(a, b, rtol=1e-12, atol=1e-14):
    for left, right in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(left), np.asarray(right), rtol=rtol, atol=atol)


def test_init_params_numpy_reproduces_sklearn_draw_order():
    layer_units = [5, 4, 3]
    params = core.init_params_numpy(np.random.RandomState(7), layer_units, "relu")
    rng = np.random.RandomState(7)
    for (w, b), (fan_in, fan_out) in zip(params, [(5, 4), (4, 3)]):
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        np.testing.assert_array_equal(w, rng.uniform(-bound, bound, (fan_in, fan_out)))
        np.testing.assert_array_equal(b, rng.uniform(-bound, bound, fan_out))
    # logistic uses factor 2 instead of 6
    (w0, _), _ = core.init_params_numpy(np.random.RandomState(0), [5, 4, 3], "logistic")
    assert np.abs(w0).max() <= np.sqrt(2.0 / 9) and np.abs(w0).max() > np.sqrt(6.0 / 9) / 2


def test_init_params_jax_shapes_dtype_and_bounds():
    params = core.init_params(jax.random.key(0), [6, 5, 2], "tanh", jnp.float32)
    assert [(w.shape, b.shape) for w, b in params] == [((6, 5), (5,)), ((5, 2), (2,))]
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    assert float(jnp.abs(params[0][0]).max()) <= np.sqrt(6.0 / 11)


@pytest.mark.parametrize(
    "loss_name, out_activation, k",
    [("log_loss", "softmax", 3), ("binary_log_loss", "logistic", 2), ("log_loss", "logistic", 1),
     ("squared_error", "identity", 2), ("poisson", "exp", 2)],
)
def test_loss_equals_sklearn_loss_functions(loss_name, out_activation, k):
    with x64(True):
        x, y = _data(k=max(k, 2))
        y = y[:, :k]
        if loss_name in ("squared_error", "poisson"):
            y = np.abs(np.random.RandomState(1).randn(len(x), k))
        weight = np.random.RandomState(3).rand(len(x)) + 0.5
        params = core.init_params_numpy(np.random.RandomState(0), [4, 6, k], "tanh")
        spec = core.MLPSpec("tanh", out_activation, loss_name)
        got = core.loss(params, core.Batch(x, y, weight), 0.01, spec)
        output = np.asarray(core.forward(params, x, "tanh", out_activation))
        penalty = 0.5 * 0.01 * sum((w**2).sum() for w, _ in params) / weight.sum()
        expected = LOSS_FUNCTIONS[loss_name](y, output, weight) + penalty
        np.testing.assert_allclose(float(got), expected, rtol=1e-12)


@pytest.mark.parametrize("kind", ["multiclass", "binary", "regression2"])
def test_gradient_equals_sklearn_backprop(kind):
    x, y = _data(n=17, d=4, k=3, seed=2)
    weight = np.random.RandomState(5).rand(17) + 0.1
    if kind == "regression2":
        y = np.random.RandomState(4).randn(17, 2)
        sk = SkMLPRegressor(hidden_layer_sizes=(5,), activation="logistic", alpha=0.3, max_iter=1, random_state=0)
        sk.fit(x, y)
        spec = core.MLPSpec("logistic", "identity", "squared_error")
    else:
        labels = y.argmax(1) % (2 if kind == "binary" else 3)
        sk = SkMLPClassifier(hidden_layer_sizes=(5,), activation="relu", alpha=0.3, max_iter=1, random_state=0)
        sk.fit(x, labels)
        y = sk._label_binarizer.transform(labels).astype(float)
        spec = core.MLPSpec("relu", sk.out_activation_, "binary_log_loss" if kind == "binary" else "log_loss")
    units = [4, 5, y.shape[1]]
    activations = [x, None, None]
    deltas = [None, None]
    coef_grads = [np.empty((a, b)) for a, b in zip(units[:-1], units[1:])]
    intercept_grads = [np.empty(b) for b in units[1:]]
    sk_loss, coef_grads, intercept_grads = sk._backprop(x, y, weight, activations, deltas, coef_grads, intercept_grads)
    params = tuple(zip(sk.coefs_, sk.intercepts_))
    with x64(True):
        grads, reported = jax.grad(core.objective, has_aux=True)(params, core.Batch(x, y, weight), 0.3, spec)
    np.testing.assert_allclose(float(reported), sk_loss, rtol=1e-12)
    _tree_allclose(grads, tuple(zip(coef_grads, intercept_grads)))


def test_sgd_and_adam_transforms_match_sklearn_optimizers():
    rng = np.random.RandomState(0)
    params = [rng.randn(3, 2), rng.randn(2)]
    grads_seq = [[rng.randn(3, 2), rng.randn(2)] for _ in range(4)]
    with x64(True):
        for solver, nesterov in [("sgd", True), ("sgd", False), ("adam", True)]:
            sk_params = [p.copy() for p in params]
            if solver == "sgd":
                sk_opt = SGDOptimizer(sk_params, 0.1, "constant", 0.8, nesterov)
                hyper = dict(learning_rate=0.1, momentum=0.8)
            else:
                sk_opt = AdamOptimizer(sk_params, 0.01, 0.8, 0.95, 1e-6)
                hyper = dict(learning_rate=0.01, b1=0.8, b2=0.95, eps=1e-6)
            optimizer = optim.make_optimizer(solver, nesterov)
            state = optim.init_optimizer(optimizer, tuple(params), jnp.float64, **hyper)
            ours = tuple(jnp.asarray(p) for p in params)
            for step, grads in enumerate(grads_seq):
                if step == 2 and solver == "sgd":  # a learning-rate change keeps the old velocity
                    sk_opt.learning_rate = 0.03
                    state = optim.set_learning_rate(state, 0.03)
                sk_opt.update_params(sk_params, grads)
                updates, state = optimizer.update(tuple(jnp.asarray(g) for g in grads), state, ours)
                ours = tuple(p + u for p, u in zip(ours, updates))
            _tree_allclose(ours, sk_params, rtol=1e-13)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_state_shapes_equals_eval_shape_and_is_traced_once_per_architecture(solver):
    optimizer = optim.make_optimizer(solver)
    params = core.init_params_numpy(np.random.RandomState(0), [5, 4, 3], "relu", np.float32)
    expected = jax.eval_shape(optimizer.init, params)
    got = optim.state_shapes(optimizer, params)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    assert [(a.shape, a.dtype) for a in jax.tree.leaves(got)] == [(a.shape, a.dtype) for a in jax.tree.leaves(expected)]
    hits = optim._state_shapes.cache_info().hits
    other = core.init_params_numpy(np.random.RandomState(1), [5, 4, 3], "relu", np.float32)  # same shapes
    assert optim.state_shapes(optimizer, other) is got
    assert optim._state_shapes.cache_info().hits == hits + 1
    wider = core.init_params_numpy(np.random.RandomState(0), [5, 6, 3], "relu", np.float32)
    shapes = lambda state: [a.shape for a in jax.tree.leaves(state)]
    assert shapes(optim.state_shapes(optimizer, wider)) == shapes(jax.eval_shape(optimizer.init, wider)) != shapes(got)


def test_invscaling_learning_rate_formula():
    assert optim.invscaling_learning_rate(0.1, 99, 0.5) == pytest.approx(0.01)


def test_make_batches_layout_and_padding():
    rows, mask = core.make_batches(np.arange(7)[::-1], 3)
    np.testing.assert_array_equal(rows, [[6, 5, 4], [3, 2, 1], [0, 0, 0]])
    np.testing.assert_array_equal(mask.sum(1), [3, 3, 1])
    rows, mask = core.make_batches(np.arange(7), 3, n_batches_to=4, batch_size_to=4)
    assert rows.shape == (4, 4) and mask.sum() == 7 and not mask[3].any() and not mask[:, 3].any()
    with pytest.raises(ValueError):
        core.make_batches(np.arange(7), 3, n_batches_to=2)


def _epoch_setup(dtype=jnp.float64):
    x, y = _data(n=23, d=4, k=3)
    params = core.init_params_numpy(np.random.RandomState(0), [4, 6, 3], "relu")
    optimizer = optim.make_optimizer("adam")
    opt_state = optim.init_optimizer(optimizer, params, dtype, learning_rate=0.01)
    return x, y, params, optimizer, opt_state


def test_train_step_jitted_equals_not_jitted():
    with x64(True):
        x, y, params, _, _ = _epoch_setup()
        optimizer = optim.make_optimizer("sgd", True)
        opt_state = optim.init_optimizer(optimizer, params, jnp.float64, learning_rate=0.1, momentum=0.9)
        batch = core.Batch(x, y, np.random.RandomState(0).rand(len(x)))
        eager = core.train_step(params, opt_state, batch, 1e-2, optimizer=optimizer)
        jitted = jax.jit(core.train_step, static_argnames=("optimizer", "spec"))(
            params, opt_state, batch, 1e-2, optimizer=optimizer
        )
        _tree_allclose(eager, jitted, rtol=1e-12)


@pytest.mark.parametrize("empty_batch_skip, unroll", [("auto", 1), ("cond", 1), ("select", 1), ("select", 3)])
def test_train_epoch_ragged_batch_equals_step_by_step_loop(empty_batch_skip, unroll):
    # "select" (what "auto" picks off the CPU) and unrolling must give the cond path's exact results
    with x64(True):
        x, y, params, optimizer, opt_state = _epoch_setup()
        order = np.random.RandomState(1).permutation(23)
        rows, mask = core.make_batches(order, 10, n_batches_to=4, batch_size_to=16)  # 10, 10, 3 rows + padding
        spec = core.MLPSpec()
        epoch = jax.jit(core.train_epoch, static_argnames=("optimizer", "spec", "unroll", "empty_batch_skip"))
        new_params, new_state, metrics = epoch(params, opt_state, x, y, np.ones(23), rows, mask, 1e-3,
                                               optimizer=optimizer, spec=spec, unroll=unroll,
                                               empty_batch_skip=empty_batch_skip)
        # reference: sklearn's gen_batches over the same order, one unpadded train_step each
        step = jax.jit(core.train_step, static_argnames=("optimizer", "spec"))
        p, s, total = params, opt_state, 0.0
        for start in range(0, 23, 10):
            idx = order[start:start + 10]
            p, s, step_metrics = step(p, s, core.Batch(x[idx], y[idx], np.ones(len(idx))), 1e-3,
                                      optimizer=optimizer, spec=spec)
            total += float(step_metrics["loss"]) * len(idx)
        _tree_allclose(new_params, p, rtol=1e-12)
        _tree_allclose(new_state, s, rtol=1e-12)  # the empty 4th batch took no optimizer step
        assert float(metrics["loss"]) == pytest.approx(total / 23, rel=1e-12)
        assert float(metrics["batch_loss"][3]) == 0.0
        assert bool(metrics["finite"])


def test_train_epoch_rejects_unknown_skip_mode():
    x, y, params, optimizer, opt_state = _epoch_setup(jnp.float32)
    rows, mask = core.make_batches(np.arange(23), 10)
    with pytest.raises(ValueError, match="empty_batch_skip"):
        core.train_epoch(params, opt_state, x, y, np.ones(23), rows, mask, 1e-3, optimizer=optimizer,
                         empty_batch_skip="maybe")


def test_vmap_over_two_parameter_sets():
    with x64(True):
        x, y, _, optimizer, _ = _epoch_setup()
        params_a = core.init_params_numpy(np.random.RandomState(0), [4, 6, 3], "relu")
        params_b = core.init_params_numpy(np.random.RandomState(1), [4, 6, 3], "relu")
        states = [optim.init_optimizer(optimizer, p, jnp.float64, learning_rate=0.01) for p in (params_a, params_b)]
        stacked_params = jax.tree.map(lambda a, b: jnp.stack([a, b]), params_a, params_b)
        stacked_states = jax.tree.map(lambda a, b: jnp.stack([a, b]), *states)
        batch = core.Batch(x, y, np.ones(len(x)))
        alphas = jnp.array([1e-4, 1.0])
        step = jax.vmap(
            lambda p, s, a: core.train_step(p, s, batch, a, optimizer=optimizer), in_axes=(0, 0, 0)
        )
        new_params, _, metrics = jax.jit(step)(stacked_params, stacked_states, alphas)
        for i, (p, s) in enumerate(zip((params_a, params_b), states)):
            single, _, single_metrics = core.train_step(p, s, batch, alphas[i], optimizer=optimizer)
            _tree_allclose(jax.tree.map(lambda leaf: leaf[i], new_params), single)
            assert float(metrics["loss"][i]) == pytest.approx(float(single_metrics["loss"]), rel=1e-12)


def test_train_step_float32_stays_float32():
    x, y, params, optimizer, _ = _epoch_setup(jnp.float32)
    params32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    state = optim.init_optimizer(optimizer, params32, jnp.float32, learning_rate=0.01)
    batch = core.Batch(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), jnp.ones(len(x), jnp.float32))
    new_params, new_state, metrics = jax.jit(core.train_step, static_argnames=("optimizer", "spec"))(
        params32, state, batch, 1e-4, optimizer=optimizer
    )
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(new_params))
    assert metrics["loss"].dtype == jnp.float32


def test_lbfgs_fit_reduces_loss_and_respects_max_iter():
    with x64(True):
        x, y, params, _, _ = _epoch_setup()
        batch = core.Batch(x, y, np.ones(len(x)))
        spec = core.MLPSpec()
        start = float(core.loss(params, batch, 1e-4, spec))
        result = lbfgs_fit(params, batch, 1e-4, 1e-4, 200, 15000, spec=spec)
        assert float(result.loss) < 0.2 * start
        assert int(result.n_fun) >= int(result.n_iter) >= 1
        short = lbfgs_fit(params, batch, 1e-4, 1e-4, 3, 15000, spec=spec)
        assert int(short.n_iter) == 3 and not bool(short.converged)
        few_fun = lbfgs_fit(params, batch, 1e-4, 1e-4, 200, 5, spec=spec)
        assert int(few_fun.n_fun) <= 5 + 20  # stops at the first iteration that passes max_fun
