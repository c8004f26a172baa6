"""Data placed once, no host transfers inside an epoch; data-parallel (2 CPU devices) == one device."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl.mlp import core, optim


def _tiny_problem(dtype=np.float32, n=50, d=6, k=3):
    rng = np.random.RandomState(0)
    x = rng.randn(n, d).astype(dtype)
    y = np.eye(k, dtype=dtype)[rng.randint(0, k, n)]
    params = core.init_params_numpy(np.random.RandomState(1), [d, 8, k], "relu", dtype)
    return x, y, params


def test_train_epoch_runs_without_host_transfers():
    """Data, params and the epoch's batch layout go to the device first; the epoch itself transfers nothing."""
    x, y, params = _tiny_problem()
    optimizer = optim.make_optimizer("adam")
    epoch = jax.jit(core.train_epoch, static_argnames=("optimizer", "spec"))
    rows, mask = core.make_batches(np.random.RandomState(2).permutation(len(x)), 16)  # ragged last batch
    device = jax.devices()[0]
    params = jax.device_put(params, device)
    opt_state = jax.device_put(optim.init_optimizer(optimizer, params, jnp.float32, learning_rate=1e-2), device)
    args = [jax.device_put(a, device) for a in (x, y, np.ones(len(x), np.float32), rows, mask, np.float32(1e-3))]
    epoch(params, opt_state, *args, optimizer=optimizer)  # compile outside the guard
    with jax.transfer_guard("disallow"):  # any implicit host<->device copy inside would raise
        new_params, _, metrics = epoch(params, opt_state, *args, optimizer=optimizer)
        new_params, _, metrics = epoch(new_params, opt_state, *args, optimizer=optimizer)
    assert np.isfinite(float(metrics["loss"])) and bool(metrics["finite"])
    assert not np.allclose(np.asarray(new_params[0][0]), params[0][0])


def test_data_parallel_epoch_on_one_device_equals_train_epoch():
    """Same code path as the multi-device test, on this process's single device."""
    from jaxrl.mlp import parallel

    x, y, params = _tiny_problem()
    optimizer = optim.make_optimizer("adam")
    mesh = parallel.batch_mesh()
    rows, mask = core.make_batches(np.arange(len(x)), 16, batch_size_to=parallel.padded_batch_width(16, mesh))
    opt_state = optim.init_optimizer(optimizer, params, jnp.float32, learning_rate=1e-2)
    x, y, weight = jnp.asarray(x), jnp.asarray(y), jnp.ones(len(x), jnp.float32)  # the core takes device arrays
    expected = core.train_epoch(params, opt_state, x, y, weight, rows, mask, 1e-3, optimizer=optimizer)
    got = parallel.make_data_parallel_epoch(mesh, optimizer=optimizer)(params, opt_state, x, y, weight, rows, mask,
                                                                       np.float32(1e-3))
    for a, b in zip(jax.tree.leaves(got[0]), jax.tree.leaves(expected[0])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


_TWO_DEVICE_SCRIPT = textwrap.dedent(
    """
    import json, warnings
    import jax, jax.numpy as jnp, numpy as np
    from sklearn.datasets import load_digits
    from jaxrl import MLPClassifier
    from jaxrl.mlp import core, optim, parallel
    from jaxrl.mlp.grid import fit_grid

    out = {"device_count": jax.device_count()}
    mesh = parallel.batch_mesh()
    out["mesh_size"] = mesh.size

    # 1. one data-parallel epoch of the core == one single-device epoch
    X, y = load_digits(return_X_y=True)
    X = (X[:130] / 16).astype(np.float32)
    Y = np.eye(10, dtype=np.float32)[y[:130]]
    params = core.init_params_numpy(np.random.RandomState(0), [64, 16, 10], "relu", np.float32)
    optimizer = optim.make_optimizer("adam")
    opt_state = optim.init_optimizer(optimizer, params, jnp.float32, learning_rate=1e-2)
    order = np.random.RandomState(1).permutation(130)
    rows, mask = core.make_batches(order, 25, batch_size_to=parallel.padded_batch_width(25, mesh))  # 25 -> 26
    weight = np.ones(130, np.float32)
    single = jax.jit(core.train_epoch, static_argnames=("optimizer", "spec"))(
        params, opt_state, X, Y, weight, rows, mask, np.float32(1e-3), optimizer=optimizer)
    x_rep = jax.device_put(X, parallel.replicated(mesh))  # placed once on each device
    sharded_rows = jax.device_put(rows, parallel.batch_sharding(mesh, 2, 1))
    out["rows_shards"] = len(sharded_rows.addressable_shards)
    out["rows_shard_shape"] = list(sharded_rows.addressable_shards[0].data.shape)
    epoch = parallel.make_data_parallel_epoch(mesh, optimizer=optimizer)
    multi = epoch(params, opt_state, x_rep, Y, weight, rows, mask, np.float32(1e-3))
    out["epoch_max_abs_diff"] = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                                    for a, b in zip(jax.tree.leaves(multi[0]), jax.tree.leaves(single[0])))
    out["epoch_loss"] = [float(single[2]["loss"]), float(multi[2]["loss"])]
    out["params_on_devices"] = len(jax.tree.leaves(multi[0])[0].devices())
    try:
        epoch(params, opt_state, X, Y, weight, rows[:, :25], mask[:, :25], np.float32(1e-3))
        out["odd_width_error"] = None
    except ValueError as error:
        out["odd_width_error"] = str(error)

    # 2. fit_grid with data_parallel=True == fit_grid on one device
    template = MLPClassifier(hidden_layer_sizes=(16,), batch_size=25, max_iter=6, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = fit_grid(template, X, y[:130], alpha=[1e-4, 1.0], epochs_per_call=3)
        two = fit_grid(template, X, y[:130], alpha=[1e-4, 1.0], epochs_per_call=3, data_parallel=True)
    out["grid_max_abs_diff"] = max(float(np.max(np.abs(a - b))) for e1, e2 in zip(one.estimators, two.estimators)
                                   for a, b in zip(e1.coefs_ + e1.intercepts_, e2.coefs_ + e2.intercepts_))
    out["grid_n_iter"] = [[e.n_iter_ for e in one.estimators], [e.n_iter_ for e in two.estimators]]

    # 3. fit_grid with shard_runs=True (3 runs -> padded to 4, 2 per device) == one device
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        three = fit_grid(template, X, y[:130], alpha=[1e-4, 1.0, 3.0], epochs_per_call=3)
        split = fit_grid(template, X, y[:130], alpha=[1e-4, 1.0, 3.0], epochs_per_call=3, shard_runs=True)
    out["runs_max_abs_diff"] = max(float(np.max(np.abs(a - b))) for e1, e2 in zip(three.estimators, split.estimators)
                                   for a, b in zip(e1.coefs_ + e1.intercepts_, e2.coefs_ + e2.intercepts_))
    out["runs_n_estimators"] = len(split.estimators)
    out["runs_scores_equal"] = bool(np.allclose(three.cv_results["train_score"], split.cv_results["train_score"]))
    from jaxrl.mlp import grid as grid_module
    hlo = [c.as_text() for c in list(grid_module._compiled.values())[:2]]  # single device, then data parallel
    out["grid_programs"] = len(grid_module._compiled)
    out["grid_has_all_reduce"] = ["all-reduce" in text for text in hlo]
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def two_device_run():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", _TWO_DEVICE_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def test_two_cpu_devices_are_used(two_device_run):
    assert two_device_run["device_count"] == 2 and two_device_run["mesh_size"] == 2
    assert two_device_run["rows_shards"] == 2 and two_device_run["rows_shard_shape"] == [6, 13]
    assert two_device_run["params_on_devices"] == 2  # replicated result


def test_data_parallel_epoch_equals_single_device(two_device_run):
    assert two_device_run["epoch_max_abs_diff"] < 1e-5
    single_loss, multi_loss = two_device_run["epoch_loss"]
    assert multi_loss == pytest.approx(single_loss, rel=1e-5)
    assert "multiple of the 2 devices" in two_device_run["odd_width_error"]


def test_data_parallel_fit_grid_equals_single_device(two_device_run):
    assert two_device_run["grid_max_abs_diff"] < 1e-5
    assert two_device_run["grid_n_iter"][0] == two_device_run["grid_n_iter"][1]
    # one single-device program and one SPMD program, and only the latter all-reduces gradients
    assert two_device_run["grid_programs"] == 4  # + the 3-run and the run-sharded 4-run programs
    assert two_device_run["grid_has_all_reduce"] == [False, True]


def test_run_sharded_fit_grid_equals_single_device(two_device_run):
    assert two_device_run["runs_max_abs_diff"] < 1e-6
    assert two_device_run["runs_n_estimators"] == 3  # the padding run is dropped
    assert two_device_run["runs_scores_equal"]


def test_flag_does_not_leak_into_this_process():
    assert "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", "")
