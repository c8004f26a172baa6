"""Multi-process runs: `jaxrl.distributed.initialize` reads and checks its variables, `jaxrl launch` starts and
stops local processes, and fit_grid / the data-parallel epoch over 2 processes x 2 CPU devices equal one
process on one device."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

from jaxrl import distributed, launch

# --- jaxrl.distributed: the variables ---------------------------------------------------------------------

RUN = {"JAXRL_COORDINATOR": "10.0.0.1:1234", "JAXRL_NUM_PROCESSES": "4", "JAXRL_PROCESS_ID": "3"}


def test_config_from_env_reads_an_explicit_run():
    config = distributed.config_from_env({**RUN, "JAXRL_DEVICES_PER_PROCESS": "2", "JAXRL_LOCAL_DEVICE_IDS": "6,7"})
    assert config == distributed.DistributedConfig("10.0.0.1:1234", 4, 3, 2, (6, 7), False)


def test_config_from_env_auto_leaves_the_rest_to_jax():
    assert distributed.config_from_env({"JAXRL_DISTRIBUTED": "auto"}) == distributed.DistributedConfig(
        None, None, None, None, None, True)
    # auto with one variable given: that one overrides what JAX detects
    assert distributed.config_from_env({"JAXRL_DISTRIBUTED": "AUTO", "JAXRL_NUM_PROCESSES": "8"}).num_processes == 8


def test_initialize_is_a_no_op_without_variables():
    assert distributed.config_from_env({}) is None
    assert distributed.config_from_env({"JAXRL_DISTRIBUTED": "off", "JAXRL_COORDINATOR": ""}) is None
    # in a fresh interpreter with no JAXRL_* variables: returns None and does not even import JAX
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAXRL_") or k == "JAXRL_COMPILATION_CACHE"}
    code = "import sys; from jaxrl import distributed; print(distributed.initialize(), 'jax' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["None", "False"]


@pytest.mark.parametrize("environ, name", [
    ({**RUN, "JAXRL_COORDINATOR": "10.0.0.1"}, "JAXRL_COORDINATOR"),  # no port
    ({**RUN, "JAXRL_COORDINATOR": "host:99999"}, "JAXRL_COORDINATOR"),
    ({**RUN, "JAXRL_NUM_PROCESSES": "two"}, "JAXRL_NUM_PROCESSES"),
    ({**RUN, "JAXRL_NUM_PROCESSES": "0"}, "JAXRL_NUM_PROCESSES"),
    ({**RUN, "JAXRL_PROCESS_ID": "-1"}, "JAXRL_PROCESS_ID"),
    ({**RUN, "JAXRL_PROCESS_ID": "4"}, "JAXRL_PROCESS_ID"),  # id >= count
    ({**RUN, "JAXRL_DEVICES_PER_PROCESS": "0"}, "JAXRL_DEVICES_PER_PROCESS"),
    ({**RUN, "JAXRL_LOCAL_DEVICE_IDS": "0,0"}, "JAXRL_LOCAL_DEVICE_IDS"),
    ({**RUN, "JAXRL_LOCAL_DEVICE_IDS": "gpu0"}, "JAXRL_LOCAL_DEVICE_IDS"),
    ({**RUN, "JAXRL_DISTRIBUTED": "yes"}, "JAXRL_DISTRIBUTED"),
    ({"JAXRL_COORDINATOR": "h:1", "JAXRL_NUM_PROCESSES": "2"}, "JAXRL_PROCESS_ID"),  # one missing
    ({"JAXRL_DEVICES_PER_PROCESS": "2"}, "JAXRL_DEVICES_PER_PROCESS"),  # devices but no run
])
def test_bad_variables_raise_a_value_error_naming_them(environ, name):
    with pytest.raises(ValueError, match=name):
        distributed.config_from_env(environ)
    with pytest.raises(ValueError, match=name):
        distributed.initialize(environ)


def test_initialize_refuses_non_positive_timeouts():
    with pytest.raises(ValueError, match="heartbeat_timeout_seconds"):
        distributed.initialize(RUN, heartbeat_timeout_seconds=0)


# --- jaxrl launch: starting and stopping processes ---------------------------------------------------------

def test_process_environ_gives_each_process_its_id_and_devices():
    base = {"PATH": "/bin", "JAXRL_DISTRIBUTED": "auto", "JAXRL_LOCAL_DEVICE_IDS": "9"}
    env = launch.process_environ(base, coordinator="127.0.0.1:5000", num_processes=2, process_id=1,
                                 devices_per_process=2)
    assert {k: v for k, v in env.items() if k.startswith("JAXRL_")} == {
        "JAXRL_COORDINATOR": "127.0.0.1:5000", "JAXRL_NUM_PROCESSES": "2", "JAXRL_PROCESS_ID": "1",
        "JAXRL_DEVICES_PER_PROCESS": "2", "JAXRL_LOCAL_DEVICE_IDS": "2,3"}
    assert env["PATH"] == "/bin"
    plain = launch.process_environ(base, coordinator="h:1", num_processes=3, process_id=0, devices_per_process=None)
    assert "JAXRL_LOCAL_DEVICE_IDS" not in plain and "JAXRL_DEVICES_PER_PROCESS" not in plain
    assert distributed.config_from_env(env) == distributed.DistributedConfig("127.0.0.1:5000", 2, 1, 2, (2, 3), False)


def _launch(*args, timeout=120):
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "jaxrl", "launch", *args], capture_output=True, text=True,
                          timeout=timeout)
    return proc, time.monotonic() - start


def _python(code):
    return [sys.executable, "-c", "import os, signal, sys, time\nrank = os.environ['JAXRL_PROCESS_ID']\n" + code]


def test_launch_runs_every_process_and_prefixes_their_lines():
    proc, _ = _launch("-n", "3", "--", *_python("print('hello from', rank, os.environ['JAXRL_NUM_PROCESSES'])"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.splitlines()) == [f"[{i}] hello from {i} 3" for i in range(3)]


def test_launch_stops_everything_when_one_process_fails(tmp_path):
    # process 1 fails once process 0 has started (its marker file), so both "starting" lines are in
    marker = tmp_path / "0-started"
    code = (f"print('starting', flush=True)\nmarker = {str(marker)!r}\n"
            "if rank == '0': open(marker, 'w').close()\n"
            "if rank == '1':\n"
            "    deadline = time.monotonic() + 20\n"
            "    while not os.path.exists(marker) and time.monotonic() < deadline: time.sleep(0.01)\n"
            "    sys.exit(3)\n"
            "time.sleep(60)")
    proc, seconds = _launch("-n", "2", "--timeout", "100", "--", *_python(code))
    assert proc.returncode == 3
    assert "process 1 exited with code 3" in proc.stderr
    assert "[0] starting" in proc.stdout and "[1] starting" in proc.stdout
    assert seconds < 30  # not the 60 s sleep of process 0


def test_launch_reports_a_process_killed_by_a_signal():
    code = "if rank == '1': os.kill(os.getpid(), signal.SIGKILL)\ntime.sleep(60)"
    proc, seconds = _launch("-n", "2", "--timeout", "100", "--", *_python(code))
    assert proc.returncode == 128 + signal.SIGKILL
    assert "process 1 was killed by signal SIGKILL (9)" in proc.stderr
    assert seconds < 30


def test_launch_watchdog_stops_a_run_that_takes_too_long():
    proc, seconds = _launch("-n", "2", "--timeout", "1", "--", *_python("time.sleep(60)"))
    assert proc.returncode == launch.EXIT_TIMEOUT == 124
    assert "timeout after 1 s; stopping processes 0, 1 (still running)" in proc.stderr
    assert seconds < 30


def test_launch_itself_imports_no_jax():
    code = ("import sys; from jaxrl.cli import main; "
            "code = main(['launch', '-n', '1', '--', sys.executable, '-c', 'pass']); print(code, 'jax' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "False"]


def test_launch_without_a_command_is_refused():
    proc, _ = _launch("-n", "2")
    assert proc.returncode == 2 and "after '--'" in proc.stderr


# --- 2 processes x 2 CPU devices: fit_grid (shard_runs / data_parallel) and a data-parallel epoch -------------

# The grids and the data-parallel epoch, as every process runs them; then process 1 kills itself while
# process 0 waits for it in a barrier: `jaxrl launch` must stop process 0 and report process 1.
_SCRIPT = """
import json, os, signal, warnings
from jaxrl import distributed
distributed.initialize()  # before any JAX computation

import jax, numpy as np
from jax.experimental import multihost_utils
from jaxrl.mlp import core, parallel
from jaxrl.mlp.grid import fit_grid
from problem import grid_problem, epoch_problem  # beside this script

template, X, y, grid, small_grid = grid_problem()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    result = fit_grid(template, X, y, **grid, shard_runs=True, epochs_per_call=2)
    split_batches = fit_grid(template, X, y, **small_grid, data_parallel=True, epochs_per_call=2)

params, opt_state, optimizer, x, y_onehot, order = epoch_problem()
mesh = parallel.batch_mesh()  # the 4 devices of both processes
rows, mask = core.make_batches(order, 30, batch_size_to=parallel.padded_batch_width(30, mesh))  # 30 -> 32
epoch = parallel.make_data_parallel_epoch(mesh, optimizer=optimizer)
new_params, _, metrics = epoch(params, opt_state, x, y_onehot, np.ones(len(x), np.float32), rows, mask,
                               np.float32(1e-3))
new_params, loss = parallel.to_host((new_params, metrics["loss"]))

arrays = {f"coef{i}_{j}": a for i, e in enumerate(result.estimators) for j, a in enumerate(e.coefs_ + e.intercepts_)}
arrays.update({f"epoch{j}": a for j, a in enumerate(jax.tree.leaves(new_params))})
arrays.update({f"dp{i}_{j}": a for i, e in enumerate(split_batches.estimators)
               for j, a in enumerate(e.coefs_ + e.intercepts_)})
np.savez(os.path.join(os.path.dirname(__file__), f"result{jax.process_index()}.npz"), **arrays,
         n_iter=[e.n_iter_ for e in result.estimators], train_score=result.cv_results["train_score"],
         best_index=result.best_index, epoch_loss=loss)
from jaxrl.mlp.grid_prepare import _held_runs
held, _ = _held_runs(parallel.runs_mesh(), True, 6, None)  # the runs whose shuffles this process makes
print("INFO" + json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
                           "devices": jax.device_count(), "local_devices": jax.local_device_count(),
                           "mesh": mesh.size, "held": held}), flush=True)
if jax.process_index() == 1:
    os.kill(os.getpid(), signal.SIGKILL)
multihost_utils.sync_global_devices("process 1 never arrives")
"""

_PROBLEM = """
import numpy as np
import jax.numpy as jnp
from sklearn.datasets import load_digits
from jaxrl import MLPClassifier
from jaxrl.mlp import core, optim

def grid_problem():
    X, y = load_digits(return_X_y=True)
    template = MLPClassifier(hidden_layer_sizes=(8,), batch_size=40, max_iter=6, tol=5e-2, n_iter_no_change=1)
    # 6 runs: padded to 8 over the 4 devices; the tolerance stops some runs before max_iter; two random states
    # shuffle differently, so each process makes only its own runs' shuffles
    grid = dict(alpha=[1e-4, 1.0, 3.0], learning_rate_init=[1e-2], random_state=[3, 5])
    small_grid = dict(alpha=[1e-4, 1.0], random_state=[3])  # for data_parallel=True
    return template, (X[:120] / 16.0).astype(np.float32), y[:120], grid, small_grid

def epoch_problem():
    X, y = load_digits(return_X_y=True)
    x, y_onehot = (X[:120] / 16.0).astype(np.float32), np.eye(10, dtype=np.float32)[y[:120]]
    params = core.init_params_numpy(np.random.RandomState(0), [64, 8, 10], "relu", np.float32)
    optimizer = optim.make_optimizer("adam")
    opt_state = optim.init_optimizer(optimizer, params, jnp.float32, learning_rate=1e-2)
    return params, opt_state, optimizer, x, y_onehot, np.random.RandomState(1).permutation(120)
"""


def _problem_module(folder):
    import importlib.util

    spec = importlib.util.spec_from_file_location("problem", folder / "problem.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Run the script under `jaxrl launch -n 2 --devices-per-process 2`; meanwhile, compute the one-process
    reference here (this test process: one CPU device)."""
    folder = tmp_path_factory.mktemp("two_processes")
    (folder / "problem.py").write_text(textwrap.dedent(_PROBLEM))
    (folder / "script.py").write_text(textwrap.dedent(_SCRIPT))
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXRL_DISTRIBUTED")}
    env["JAX_PLATFORMS"] = "cpu"
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "jaxrl", "launch", "-n", "2", "--devices-per-process", "2",
                             "--timeout", "240", "--", sys.executable, str(folder / "script.py")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        import jax
        import jax.numpy as jnp
        from jaxrl.mlp import core
        from jaxrl.mlp.grid import fit_grid

        problem = _problem_module(folder)
        template, X, y, grid, small_grid = problem.grid_problem()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = fit_grid(template, X, y, **grid, epochs_per_call=2)
            reference_dp = fit_grid(template, X, y, **small_grid, epochs_per_call=2)
        params, opt_state, optimizer, x, y_onehot, order = problem.epoch_problem()
        rows, mask = core.make_batches(order, 30, batch_size_to=32)  # the same padded layout as 4 devices
        epoch = jax.jit(core.train_epoch, static_argnames=("optimizer", "spec"))
        new_params, _, metrics = epoch(params, opt_state, jnp.asarray(x), jnp.asarray(y_onehot),
                                       jnp.ones(len(x), jnp.float32), rows, mask, np.float32(1e-3),
                                       optimizer=optimizer)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:  # SIGTERM: the launcher stops its processes before exiting
            proc.terminate()
            proc.wait(timeout=60)
    seconds = time.monotonic() - start
    results = [dict(np.load(folder / f"result{i}.npz")) if (folder / f"result{i}.npz").exists() else None
               for i in range(2)]
    infos = [json.loads(line.split("INFO", 1)[1]) for line in stdout.splitlines() if "INFO" in line]
    return dict(proc=proc, stdout=stdout, stderr=stderr, seconds=seconds, results=results, infos=infos,
                reference=reference, reference_dp=reference_dp, epoch_params=jax.tree.leaves(new_params),
                epoch_loss=float(metrics["loss"]))


def _outcome(run):
    return f"exit {run['proc'].returncode}\n{run['stderr'][-3000:]}\n{run['stdout'][-3000:]}"


def test_two_processes_see_four_global_devices(two_processes):
    assert all(r is not None for r in two_processes["results"]), _outcome(two_processes)
    assert sorted(info["process"] for info in two_processes["infos"]) == [0, 1]
    for info in two_processes["infos"]:
        assert info["processes"] == 2 and info["devices"] == 4 and info["local_devices"] == 2 and info["mesh"] == 4
    # 6 runs padded to 8 over 4 devices: process 0's devices hold runs 0-3, process 1's runs 4, 5 and two
    # padding copies of run 5; each process makes only those runs' shuffles
    assert {info["process"]: info["held"] for info in two_processes["infos"]} == {0: [0, 1, 2, 3], 1: [4, 5]}


def test_run_sharded_fit_grid_over_two_processes_equals_one_process(two_processes):
    assert all(r is not None for r in two_processes["results"]), _outcome(two_processes)
    reference = two_processes["reference"]
    for result in two_processes["results"]:  # every process holds the whole result
        assert list(result["n_iter"]) == [e.n_iter_ for e in reference.estimators]
        np.testing.assert_allclose(result["train_score"], reference.cv_results["train_score"], rtol=1e-6)
        assert int(result["best_index"]) == reference.best_index
        for i, estimator in enumerate(reference.estimators):
            for j, expected in enumerate(estimator.coefs_ + estimator.intercepts_):
                np.testing.assert_allclose(result[f"coef{i}_{j}"], expected, rtol=1e-5, atol=1e-6)
    assert len({n for n in two_processes["results"][0]["n_iter"]}) > 1  # runs stopped at different epochs


def test_data_parallel_epoch_over_two_processes_equals_one_device(two_processes):
    assert all(r is not None for r in two_processes["results"]), _outcome(two_processes)
    for result in two_processes["results"]:
        assert float(result["epoch_loss"]) == pytest.approx(two_processes["epoch_loss"], rel=1e-5)
        for j, expected in enumerate(two_processes["epoch_params"]):
            np.testing.assert_allclose(result[f"epoch{j}"], np.asarray(expected), rtol=1e-5, atol=1e-6)


def test_data_parallel_fit_grid_over_two_processes_equals_one_process(two_processes):
    assert all(r is not None for r in two_processes["results"]), _outcome(two_processes)
    for result in two_processes["results"]:
        for i, estimator in enumerate(two_processes["reference_dp"].estimators):
            for j, expected in enumerate(estimator.coefs_ + estimator.intercepts_):
                np.testing.assert_allclose(result[f"dp{i}_{j}"], expected, rtol=1e-4, atol=1e-5)


def test_launch_stops_a_process_stuck_waiting_for_a_killed_one(two_processes):
    assert two_processes["proc"].returncode == 128 + signal.SIGKILL, _outcome(two_processes)
    assert "jaxrl launch: process 1 was killed by signal SIGKILL (9); stopping the others." in two_processes["stderr"]
    assert two_processes["seconds"] < 240  # well before the watchdog
