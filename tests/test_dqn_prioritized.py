"""Prioritized replay: the ring is the uniform buffer's, draws follow the priorities, weights and updates by hand;
the sum tree against a rebuild and against searchsorted on the cumulative sum."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl.dqn import make_learner, make_prioritized_replay_buffer, make_replay_buffer
from jaxrl.dqn.buffers import sum_tree
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
        _assert_tree_of(state)
    assert int(state.replay.size) == capacity


def _assert_tree_of(state):
    """The buffer's sum tree is the one built from its priorities, bit for bit, and its root is their sum."""
    np.testing.assert_array_equal(state.sum_tree, sum_tree.build(state.priorities))
    np.testing.assert_allclose(sum_tree.total(state.sum_tree), np.sum(np.asarray(state.priorities, np.float64)),
                               rtol=1e-6)


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
    _assert_tree_of(state.replay)  # the tree followed every update through the loop and the cond


@pytest.mark.parametrize("capacity", [1, 2, 5, 13, 64])
def test_sum_tree_set_leaves_equals_a_rebuild_and_the_root_is_the_sum(capacity):
    rng = np.random.default_rng(capacity)
    leaves = jnp.zeros((capacity,), jnp.float32)
    tree = sum_tree.build(leaves)
    size = sum_tree.num_leaves(capacity)
    assert tree.shape == (size,) and size >= max(capacity, 2) and size & (size - 1) == 0 and size < 2 * max(capacity, 2)
    set_leaves = jax.jit(sum_tree.set_leaves)
    expected = np.zeros(capacity, np.float32)
    for _ in range(20):
        rows = rng.integers(0, capacity + 3, size=4)  # rows >= capacity are skipped; repeats are allowed
        values = rng.exponential(size=4).astype(np.float32)
        tree, leaves = set_leaves(tree, leaves, jnp.asarray(rows, jnp.int32), jnp.asarray(values))
        for row, value in zip(rows, values):
            if row < capacity and np.sum(rows == row) == 1:
                expected[row] = value
        kept = [row for row in range(capacity) if np.sum(rows == row) <= 1]
        np.testing.assert_array_equal(np.asarray(leaves)[kept], expected[kept])
        for row in set(rows[rows < capacity]) - set(kept):  # a repeated row took one of its values
            assert np.asarray(leaves)[row] in values[rows == row]
        expected = np.asarray(leaves).copy()
        np.testing.assert_array_equal(tree, sum_tree.build(leaves))
        np.testing.assert_allclose(sum_tree.total(tree), expected.astype(np.float64).sum(), rtol=1e-6)


def test_sum_tree_find_is_searchsorted_on_the_cumulative_sum():
    rng = np.random.default_rng(0)
    leaves = rng.exponential(size=37).astype(np.float32) * (rng.random(37) < 0.7)  # some zero leaves
    leaves[:2] = 0.0  # leading zeros: mass 0 must skip them
    tree = sum_tree.build(jnp.asarray(leaves))
    cumulative = np.cumsum(leaves.astype(np.float64))
    total = float(sum_tree.total(tree))
    find = jax.jit(sum_tree.find)
    # the middle of each positive leaf's interval is that leaf
    middles = cumulative - leaves / 2
    positive = np.flatnonzero(leaves > 0)
    np.testing.assert_array_equal(find(tree, jnp.asarray(leaves), jnp.asarray(middles[positive], jnp.float32)),
                                  positive)
    # random masses away from the interval edges: searchsorted(cumsum, m, side="right")
    masses = rng.random(2_000) * total
    clear = np.min(np.abs(masses[:, None] - cumulative[None, :]), axis=1) > 1e-4 * total
    found = np.asarray(find(tree, jnp.asarray(leaves), jnp.asarray(masses, jnp.float32)))
    np.testing.assert_array_equal(found[clear], np.searchsorted(cumulative, masses[clear], side="right"))
    # the edges: mass 0 is the first positive leaf; mass >= total (round-off) the last one, never a zero leaf
    edges = np.asarray(find(tree, jnp.asarray(leaves), jnp.asarray([0.0, total, total * 1.001], jnp.float32)))
    np.testing.assert_array_equal(edges, [positive[0], positive[-1], positive[-1]])
    assert np.all(leaves[found] > 0)
    # an all-zero tree gives row 0
    zeros = jnp.zeros((37,), jnp.float32)
    assert int(find(sum_tree.build(zeros), zeros, jnp.asarray([0.0]))[0]) == 0


def test_sampled_frequencies_match_the_priorities():
    alpha = 1.0
    buffer = make_prioritized_replay_buffer(512, batch_size=500, priority_exponent=alpha)
    state = buffer.add(buffer.init(transition_example()), transition_batch(np.arange(40)))  # 40 of 512 rows
    td = jnp.asarray(np.random.default_rng(1).exponential(size=40), jnp.float32)
    state = buffer.update(state, jnp.arange(40), td)
    p = np.asarray(state.priorities[:40], np.float64)
    sample = jax.jit(buffer.sample)
    counts = sum(np.bincount(np.asarray(sample(state, jax.random.key(k)).indices), minlength=512) for k in range(20))
    assert not counts[40:].any()  # empty rows are never drawn
    # stratified draws: a row's count per batch is within 2 of batch_size * P(i)
    np.testing.assert_allclose(counts[:40], 20 * 500 * p / p.sum(), atol=2 * 20)


def test_new_rows_get_the_max_priority_set_so_far():
    buffer = make_prioritized_replay_buffer(8, batch_size=2, priority_exponent=0.5)
    state = buffer.add(buffer.init(transition_example()), transition_batch(np.arange(3)))
    np.testing.assert_array_equal(state.priorities[:3], 1.0)  # max priority starts at 1
    state = buffer.update(state, jnp.array([0, 1]), jnp.array([8.0, 0.0]))
    assert float(state.max_priority) == pytest.approx((8.0 + 1e-6) ** 0.5)
    state = buffer.add(state, transition_batch(np.arange(3, 5)), jnp.array([True, False]))
    np.testing.assert_array_equal(state.priorities[3], state.max_priority)  # the new row: the max so far
    assert float(state.priorities[4]) == 0.0  # the invalid row was not written
    _assert_tree_of(state)


def _shapes(jaxpr):
    """The shapes of every value a jaxpr (and the jaxprs inside it) computes."""
    for eqn in jaxpr.eqns:
        yield from (var.aval.shape for var in eqn.outvars)
        for param in eqn.params.values():
            for inner in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(inner, "jaxpr", inner)
                if isinstance(inner, jax.extend.core.Jaxpr):
                    yield from _shapes(inner)


def test_sample_computes_nothing_of_capacity_size():
    """O(log capacity) per drawn row: no [capacity] array (a cumulative sum, a mask) is computed while sampling."""
    capacity = 1_000
    buffer = make_prioritized_replay_buffer(capacity, batch_size=8)
    state = buffer.add(buffer.init(transition_example()), transition_batch(np.arange(20)))
    shapes = list(_shapes(jax.make_jaxpr(buffer.sample)(state, jax.random.key(0)).jaxpr))
    assert shapes and not [shape for shape in shapes if capacity in shape or sum_tree.num_leaves(capacity) in shape]
