"""Prioritized replay: the ring is the uniform buffer's, draws follow the priorities, weights and updates by hand."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl.dqn import make_learner, make_prioritized_replay_buffer, make_replay_buffer
from jaxrl.dqn.config import DQNConfig

from conftest import SMALL_AGENT, FakeVecEnv, run_learner, small_config, transition_batch, transition_example


def test_add_writes_the_same_ring_as_the_uniform_buffer_at_max_priority():
    capacity = 5
    prioritized = make_prioritized_replay_buffer(capacity, batch_size=2)
    uniform = make_replay_buffer(capacity, batch_size=2)
    state, ring = prioritized.init(transition_example()), uniform.init(transition_example())
    assert float(state.max_priority) == 1.0 and not np.any(np.asarray(state.priorities))
    rng = np.random.default_rng(0)
    for call in range(6):
        ids = np.arange(3 * call + 1, 3 * call + 4)  # ids > 0: an unwritten row reads 0
        valid = jnp.asarray(rng.random(3) < 0.7)
        before = np.asarray(state.priorities).copy()
        state = jax.jit(prioritized.add)(state, transition_batch(ids), valid)
        ring = uniform.add(ring, transition_batch(ids), valid)
        jax.tree.map(np.testing.assert_array_equal, state.replay, ring)
        written = np.asarray(state.replay.data.action)
        for slot in range(capacity):  # rows written by this add carry the max priority, the others kept theirs
            fresh = written[slot] in ids[np.asarray(valid)]
            expected = float(state.max_priority) if fresh else before[slot]
            assert np.asarray(state.priorities)[slot] == expected
        state = prioritized.update(state, jnp.arange(int(state.replay.size)),
                                   jnp.full((int(state.replay.size),), 0.01))  # so fresh rows stand out
    assert int(state.replay.size) == capacity


def test_draws_follow_priorities_and_weights_match_the_formula():
    alpha, beta, eps = 0.5, 0.4, 1e-6
    buffer = make_prioritized_replay_buffer(512, batch_size=400, priority_exponent=alpha, importance_exponent=beta,
                                            eps=eps)
    state = buffer.add(buffer.init(transition_example()), transition_batch(np.arange(4)))  # 4 of 512 rows filled
    td = jnp.array([1.0, -3.0, 0.0, 8.0])
    state = buffer.update(state, jnp.arange(4), td)
    p = (np.abs(np.asarray(td)) + eps) ** alpha
    np.testing.assert_allclose(state.priorities[:4], p, rtol=1e-6)
    np.testing.assert_allclose(state.max_priority, p.max(), rtol=1e-6)
    assert not np.any(np.asarray(state.priorities[4:]))
    counts = np.zeros(4)
    for k in range(5):
        drawn = jax.jit(buffer.sample)(state, jax.random.key(k))
        rows = np.asarray(drawn.indices)
        assert rows.min() >= 0 and rows.max() < 4  # never an empty row
        np.testing.assert_array_equal(np.asarray(drawn.batch.action), rows)  # the batch is those rows
        counts += np.bincount(rows, minlength=4)
        probs = p[rows] / p.sum()
        w = (4 * probs) ** -beta
        np.testing.assert_allclose(drawn.weights, w / w.max(), rtol=1e-5)
    # stratified draws: each row's count is within one per batch of its expected count
    np.testing.assert_allclose(counts, 5 * 400 * p / p.sum(), atol=5)
    assert counts[2] <= 5  # |td| = 0: only eps keeps it drawable


def test_alpha_zero_is_uniform_with_unit_weights():
    buffer = make_prioritized_replay_buffer(64, batch_size=64, priority_exponent=0.0)
    state = buffer.add(buffer.init(transition_example()), transition_batch(np.arange(10)))
    state = buffer.update(state, jnp.arange(10), jnp.linspace(0.0, 5.0, 10))
    np.testing.assert_allclose(state.priorities[:10], 1.0)
    drawn = buffer.sample(state, jax.random.key(0))
    np.testing.assert_allclose(drawn.weights, 1.0)
    np.testing.assert_allclose(np.bincount(np.asarray(drawn.indices), minlength=10), 6.4, atol=2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="priority_exponent"):
        make_prioritized_replay_buffer(8, 2, priority_exponent=1.5)
    with pytest.raises(ValueError, match="importance_exponent"):
        make_prioritized_replay_buffer(8, 2, importance_exponent=-0.1)
    with pytest.raises(ValueError, match="eps"):
        make_prioritized_replay_buffer(8, 2, eps=0.0)
    with pytest.raises(ValueError, match="capacity"):
        make_prioritized_replay_buffer(2, 4)
    with pytest.raises(ValueError, match="priority_exponent"):
        DQNConfig(prioritized_replay=True, priority_exponent=2.0)
    with pytest.raises(ValueError, match="prioritized_replay must be a bool"):
        DQNConfig(prioritized_replay="yes")


def test_learner_updates_priorities_of_the_rows_it_trains_on():
    learner = make_learner(small_config(2, learning_starts=12, update_every=1, prioritized_replay=True, **SMALL_AGENT), 3)
    state, history = run_learner(learner, FakeVecEnv([4, 5]), 40)
    size = int(state.replay.replay.size)
    priorities = np.asarray(state.replay.priorities)
    updates = int(state.dqn.num_updates)
    assert updates == sum(bool(m["did_update"]) for m in history) > 20
    assert np.all(priorities[:size] > 0) and not np.any(priorities[size:])
    # trained-on rows got their |TD error| priority (far below the initial max 1); rows not drawn yet keep 1
    assert 0 < np.sum(priorities[:size] < 1.0) <= updates * SMALL_AGENT["batch_size"]
    assert float(state.replay.max_priority) == 1.0  # TD errors of rewards 1..3 at init stay below 1
