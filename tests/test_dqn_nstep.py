"""n-step returns (jaxrl.dqn.buffers.nstep): rows against a brute-force reference on random episode streams, a
hand-computed example, and the learner storing them."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl.dqn.buffers.nstep import make_nstep
from jaxrl.dqn.learner import make_learner

from conftest import small_config


def reference_rows(stream, n, gamma):
    """Brute force: per env, cut the stream into segments at ends; each transition t gives one row summing
    rewards t .. min(t + n, segment end) - 1, bootstrapping from the obs after the last one."""
    rows = []
    for env, transitions in stream.items():
        segment = []
        for tr in transitions:
            segment.append(tr)
            if tr["end"]:
                rows += _segment_rows(env, segment, n, gamma, closed=True)
                segment = []
        rows += _segment_rows(env, segment, n, gamma, closed=False)
    return sorted(rows)


def _segment_rows(env, segment, n, gamma, closed):
    out = []
    for t in range(len(segment)):
        last = t + n - 1
        if last >= len(segment):
            if not closed:
                continue  # still pending at the end of the stream
            last = len(segment) - 1
        k = last - t + 1
        ret = sum(gamma ** i * segment[t + i]["reward"] for i in range(k))
        discount = 0.0 if segment[last]["terminal"] else gamma ** k
        out.append((env, segment[t]["obs"], segment[t]["action"], round(ret, 4), segment[last]["next_obs"],
                    round(discount, 4)))
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_rows_match_brute_force(n):
    num_envs, gamma, calls = 3, 0.9, 60
    rng = np.random.default_rng(n)
    acc = make_nstep(num_envs, n, gamma)
    state = acc.init(jnp.zeros((2,), jnp.int32))
    update = jax.jit(acc.update)
    stream = {i: [] for i in range(num_envs)}
    got = []
    counter = 0
    for _ in range(calls):
        valid = rng.random(num_envs) > 0.1
        terminal = rng.random(num_envs) < 0.08
        end = terminal | (rng.random(num_envs) < 0.05)
        obs = np.stack([[i, counter + i] for i in range(num_envs)])
        next_obs = obs + 1000
        action = rng.integers(0, 6, num_envs)
        reward = rng.integers(0, 4, num_envs).astype(np.float32)
        counter += 10
        for i in range(num_envs):
            if valid[i]:
                stream[i].append(dict(obs=tuple(obs[i]), action=int(action[i]), reward=float(reward[i]),
                                      next_obs=tuple(next_obs[i]), terminal=bool(terminal[i]), end=bool(end[i])))
        state, rows, mask = update(state, jnp.asarray(obs), jnp.asarray(action), jnp.asarray(reward),
                                   jnp.asarray(next_obs), jnp.asarray(terminal), jnp.asarray(end),
                                   jnp.asarray(valid))
        rows = jax.device_get(rows)
        for r in np.flatnonzero(np.asarray(mask)):
            got.append((int(r) // n, tuple(rows.obs[r]), int(rows.action[r]), round(float(rows.reward[r]), 4),
                        tuple(rows.next_obs[r]), round(float(rows.discount[r]), 4)))
    want = reference_rows(stream, n, gamma)
    assert len(want) > 20
    assert sorted(got) == want


def test_hand_computed_three_step_rows():
    acc = make_nstep(1, 3, 0.5)
    state = acc.init(jnp.zeros((1,), jnp.int32))
    step = lambda s, o, r, term=False, end=False: acc.update(  # noqa: E731
        s, jnp.array([[o]]), jnp.array([0]), jnp.array([r], jnp.float32), jnp.array([[o + 1]]),
        jnp.array([term]), jnp.array([end or term]), jnp.array([True]))
    state, _, mask = step(state, 0, 1.0)
    assert not mask.any()
    state, _, mask = step(state, 1, 2.0)
    assert not mask.any()
    state, rows, mask = step(state, 2, 4.0)  # window full: 1 + 0.5 * 2 + 0.25 * 4 = 3, discount 0.125, obs 3
    assert mask.tolist() == [True, False, False]
    assert (float(rows.reward[0]), float(rows.discount[0]), int(rows.next_obs[0, 0])) == (3.0, 0.125, 3)
    state, rows, mask = step(state, 3, 8.0, term=True)  # terminal: flush rows from obs 1, 2, 3
    assert mask.tolist() == [True, True, True]
    np.testing.assert_allclose(rows.reward, [2 + 0.5 * 4 + 0.25 * 8, 4 + 0.5 * 8, 8])
    np.testing.assert_allclose(rows.discount, [0.0, 0.0, 0.0])
    assert rows.obs[:, 0].tolist() == [1, 2, 3] and rows.next_obs[:, 0].tolist() == [4, 4, 4]
    assert int(state.count[0]) == 0


def test_truncation_flush_bootstraps_with_gamma_power():
    acc = make_nstep(1, 3, 0.5)
    state = acc.init(jnp.zeros((1,), jnp.int32))
    args = lambda o, end: (jnp.array([[o]]), jnp.array([1]), jnp.array([1.0]), jnp.array([[o + 1]]),  # noqa: E731
                           jnp.array([False]), jnp.array([end]), jnp.array([True]))
    state, _, _ = acc.update(state, *args(0, False))
    state, rows, mask = acc.update(state, *args(1, True))
    assert mask.tolist() == [True, True, False]
    np.testing.assert_allclose(rows.discount[:2], [0.25, 0.5])  # 2 and 1 rewards summed
    np.testing.assert_allclose(rows.reward[:2], [1.5, 1.0])


def test_make_nstep_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        make_nstep(2, 0, 0.9)
    with pytest.raises(ValueError, match="gamma must be in"):
        make_nstep(2, 3, 1.5)


def test_learner_with_n_step_stores_n_step_rows_and_updates():
    config = small_config(2, buffer_size=64, batch_size=4, learning_starts=4, update_every=1, hidden_sizes=(8,),
                          gamma=0.5, n_step=3, reward_scale=1.0, epsilon_start=1.0, epsilon_end=1.0)
    learner = make_learner(config, 3)
    obs = lambda t: jnp.full((2, 128), t, jnp.uint8)  # noqa: E731
    state, _ = learner.init(jax.random.key(0), obs(0))
    step = jax.jit(learner.step)
    no = jnp.zeros(2, bool)
    for t in range(1, 6):
        state, _, metrics = step(state, obs(t), jnp.ones(2), no, no, no)
    # 5 transitions per env, window 3: rows for transitions 0, 1, 2 of each env are written (6 rows).
    assert int(state.replay.size) == 6
    np.testing.assert_allclose(state.replay.data.reward[:6], 1.75)
    np.testing.assert_allclose(state.replay.data.discount[:6], 0.125)
    assert int(state.dqn.num_updates) > 0 and np.isfinite(float(metrics["loss"]))
    # a life loss with life_loss_terminal=False does not flush; a terminal flushes both pending rows
    state, _, _ = step(state, obs(6), jnp.ones(2), jnp.array([True, False]), no, jnp.array([False, True]))
    assert int(state.replay.size) == 6 + 3 + 1
