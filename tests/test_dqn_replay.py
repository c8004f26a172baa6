"""Replay buffer properties, checked against a plain-Python model of a ring buffer."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl.dqn import ReplayState, make_replay_buffer

from conftest import transition_batch, transition_example


def _model_add(rows, index, size, ids, valid, capacity):
    for i, ok in zip(ids, valid):
        if ok:
            rows[index] = i
            index = (index + 1) % capacity
            size = min(size + 1, capacity)
    return rows, index, size


@pytest.mark.parametrize("jit", [False, True])
def test_random_batched_adds_match_ring_model(jit):
    """Wrap-around, size capped at capacity, batched add and masked rows, over random add sequences."""
    capacity, num_envs = 7, 3
    buffer = make_replay_buffer(capacity, batch_size=2)
    add = jax.jit(buffer.add, donate_argnums=0) if jit else buffer.add
    state = buffer.init(transition_example())
    rng = np.random.default_rng(0)
    rows, index, size, next_id = [-1] * capacity, 0, 0, 1
    for _ in range(12):
        ids = np.arange(next_id, next_id + num_envs)
        next_id += num_envs
        valid = rng.random(num_envs) < 0.7
        state = add(state, transition_batch(ids), jnp.asarray(valid))
        rows, index, size = _model_add(rows, index, size, ids, valid, capacity)
        assert int(state.index) == index and int(state.size) == size
        stored = np.asarray(state.data.action)
        np.testing.assert_array_equal(stored[:size], np.asarray(rows[:size]))
        np.testing.assert_array_equal(np.asarray(state.data.obs)[:size, 0], np.asarray(rows[:size]) % 256)
    assert size == capacity and next_id - 1 > capacity  # the sequence did wrap around


def test_masked_rows_are_not_written_or_counted():
    buffer = make_replay_buffer(5, batch_size=1)
    state = buffer.add(buffer.init(transition_example()), transition_batch([1, 2, 3]), jnp.array([False, True, False]))
    assert int(state.size) == 1 and int(state.index) == 1
    np.testing.assert_array_equal(np.asarray(state.data.action), [2, 0, 0, 0, 0])
    state = buffer.add(state, transition_batch([4, 5, 6]), jnp.zeros(3, bool))
    assert int(state.size) == 1 and int(state.index) == 1


def test_add_without_mask_and_wrap_overwrites_oldest():
    buffer = make_replay_buffer(4, batch_size=1)
    state = buffer.init(transition_example())
    state = buffer.add(state, transition_batch([1, 2, 3]))
    state = buffer.add(state, transition_batch([4, 5, 6]))
    # ring: 1 2 3 4 | 5 6 overwrite rows 0 and 1
    np.testing.assert_array_equal(np.asarray(state.data.action), [5, 6, 3, 4])
    assert int(state.size) == 4 and int(state.index) == 2


def test_samples_only_filled_rows_and_all_of_them():
    buffer = make_replay_buffer(300, batch_size=256)
    state = buffer.add(buffer.init(transition_example()), transition_batch(np.arange(1, 11)))  # 10 of 300 rows filled
    seen = set()
    for k in range(4):
        batch = jax.jit(buffer.sample)(state, jax.random.key(k))
        assert batch.obs.shape == (256, 128) and batch.obs.dtype == jnp.uint8
        ids = np.asarray(batch.action)
        assert set(ids.tolist()) <= set(range(1, 11))  # never an empty (zero) row
        np.testing.assert_array_equal(np.asarray(batch.reward), ids)  # fields of a row stay together
        seen |= set(ids.tolist())
    assert seen == set(range(1, 11))


def test_can_sample_needs_min_size_and_batch_size():
    buffer = make_replay_buffer(20, batch_size=4, min_size=6)
    state = buffer.init(transition_example())
    assert not bool(buffer.can_sample(state))
    state = buffer.add(state, transition_batch([1, 2, 3, 4, 5]))
    assert not bool(buffer.can_sample(state))
    state = buffer.add(state, transition_batch([6]))
    assert bool(buffer.can_sample(state))


def test_jitted_equals_not_jitted():
    buffer = make_replay_buffer(6, batch_size=5)
    valid = jnp.array([True, False, True, True])
    plain = buffer.add(buffer.init(transition_example()), transition_batch([1, 2, 3, 4]), valid)
    jitted = jax.jit(buffer.add)(buffer.init(transition_example()), transition_batch([1, 2, 3, 4]), valid)
    jax.tree.map(np.testing.assert_array_equal, plain, jitted)
    key = jax.random.key(3)
    jax.tree.map(np.testing.assert_array_equal, buffer.sample(plain, key), jax.jit(buffer.sample)(plain, key))


def test_storage_is_uint8_and_100k_buffer_is_about_26mb():
    buffer = make_replay_buffer(100_000, batch_size=128)
    shapes = jax.eval_shape(buffer.init, transition_example())
    assert shapes.data.obs.dtype == jnp.uint8 and shapes.data.next_obs.dtype == jnp.uint8
    nbytes = sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(shapes))
    assert 25.6e6 <= nbytes <= 26.6e6, nbytes


def test_vmap_over_two_buffers():
    buffer = make_replay_buffer(4, batch_size=2)
    states = jax.vmap(lambda _: buffer.init(transition_example()))(jnp.arange(2))
    batches = jax.tree.map(lambda x: jnp.stack([x, x + 1]), transition_batch([1, 2]))
    states = jax.vmap(buffer.add)(states, batches, jnp.array([[True, True], [True, False]]))
    assert isinstance(states, ReplayState)
    np.testing.assert_array_equal(np.asarray(states.size), [2, 1])
    np.testing.assert_array_equal(np.asarray(states.data.action), [[1, 2, 0, 0], [2, 0, 0, 0]])


def test_bad_arguments():
    with pytest.raises(ValueError, match="capacity"):
        make_replay_buffer(0, batch_size=1)
    with pytest.raises(ValueError, match="batch_size"):
        make_replay_buffer(10, batch_size=0)
    with pytest.raises(TypeError, match="capacity"):
        make_replay_buffer(10.5, batch_size=1)
    with pytest.raises(ValueError, match="capacity"):
        make_replay_buffer(10, batch_size=4, min_size=20)
    buffer = make_replay_buffer(2, batch_size=1)
    with pytest.raises(ValueError, match="capacity"):
        buffer.add(buffer.init(transition_example()), transition_batch([1, 2, 3]))
