"""jaxrl.mlp.epoch_end: scikit-learn's epoch-end bookkeeping, on NumPy scalars and on jitted arrays of runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl.mlp.epoch_end import SCHEDULES, EpochEndConfig, EpochEndState, epoch_end, init_epoch_end


def _config(schedule="constant", tol=1e-4, n_iter_no_change=2, learning_rate_init=0.1, power_t=0.5):
    return EpochEndConfig(tol=tol, n_iter_no_change=n_iter_no_change, schedule=SCHEDULES[schedule],
                          learning_rate_init=learning_rate_init, power_t=power_t)


def _run(losses, config, learning_rate=0.1, val_scores=None):
    state = init_epoch_end(np.float64(learning_rate))
    states = []
    for i, loss in enumerate(losses):
        state = epoch_end(state, loss, 10, config, None if val_scores is None else val_scores[i])
        states.append(state)
    return states


def test_loss_stopping_counts_epochs_without_improvement_of_tol():
    # sklearn: count += 1 when loss > best_loss - tol, else 0; stop once count > n_iter_no_change (2)
    states = _run([1.0, 0.99995, 0.5, 0.6, 0.6, 0.6], _config())
    assert [int(s.no_improvement) for s in states] == [0, 1, 0, 1, 2, 3]
    assert [bool(s.stopped) for s in states] == [False] * 5 + [True]
    assert [float(s.best_loss) for s in states] == [1.0, 0.99995, 0.5, 0.5, 0.5, 0.5]
    assert int(states[-1].n_iter) == 6 and int(states[-1].samples_seen) == 60


def test_adaptive_divides_the_rate_by_5_then_stops_at_1e_6():
    config = _config("adaptive", n_iter_no_change=0)  # every non-improving epoch is "stuck"
    states = _run([1.0, 1.0, 1.0], config, learning_rate=4e-6)
    assert float(states[1].learning_rate) == pytest.approx(8e-7) and not states[1].stopped
    assert int(states[1].no_improvement) == 0  # reset after lowering the rate
    assert bool(states[2].stopped) and float(states[2].learning_rate) == pytest.approx(8e-7)


def test_invscaling_rate_after_every_epoch():
    states = _run([1.0, 0.5], _config("invscaling", learning_rate_init=0.1, power_t=0.5))
    assert float(states[0].learning_rate) == pytest.approx(0.1 / 11**0.5)
    assert float(states[1].learning_rate) == pytest.approx(0.1 / 21**0.5)


def test_validation_score_bookkeeping_and_nan():
    states = _run([1.0] * 4, _config(), val_scores=[0.5, 0.7, np.nan, 0.6])
    assert [bool(s.improved) for s in states] == [True, True, False, False]
    assert [float(s.best_score) for s in states] == [0.5, 0.7, 0.7, 0.7]
    assert [int(s.no_improvement) for s in states] == [0, 0, 0, 1]  # nan < best + tol is False, as in Python
    assert float(states[-1].best_loss) == np.inf  # the training loss is not tracked with early stopping


@pytest.mark.parametrize("schedule", ["constant", "invscaling", "adaptive"])
@pytest.mark.parametrize("early_stopping", [False, True])
def test_jitted_runs_equal_the_host_run_by_run(schedule, early_stopping):
    rng = np.random.default_rng(0)
    n_runs, n_epochs = 3, 12
    losses = 1.0 / np.arange(1, n_epochs + 1)[:, None] + rng.uniform(0, 0.2, (n_epochs, n_runs))
    scores = rng.uniform(0, 1, (n_epochs, n_runs)) if early_stopping else None
    rates = np.array([0.1, 1e-6, 4e-6], np.float32)
    config = _config(schedule, n_iter_no_change=1, learning_rate_init=rates)

    step = jax.jit(lambda state, loss, score: epoch_end(state, loss, jnp.full(n_runs, 7, jnp.int32),
                                                        jax.tree.map(jnp.asarray, config), score))
    stacked = jax.tree.map(jnp.asarray, init_epoch_end(rates))
    for e in range(n_epochs):
        stacked = step(stacked, jnp.asarray(losses[e], jnp.float32),
                       None if scores is None else jnp.asarray(scores[e], jnp.float32))

    for r in range(n_runs):
        state = EpochEndState(*(np.asarray(field)[r] for field in init_epoch_end(rates)))
        run_config = config._replace(learning_rate_init=float(rates[r]))
        for e in range(n_epochs):
            score = None if scores is None else np.float32(scores[e, r])
            state = epoch_end(state, np.float32(losses[e, r]), 7, run_config, score)
        for name, host, jitted in zip(EpochEndState._fields, state, stacked):
            np.testing.assert_allclose(np.asarray(jitted)[r], host, rtol=1e-6, err_msg=name)
