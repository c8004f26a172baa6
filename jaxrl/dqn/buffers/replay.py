"""Uniform experience replay as pure functions over an explicit, on-device state (flashbax style).

The buffer is a ring of `capacity` rows. `add` writes a batch of N rows (one per env) at once; rows whose
`valid` flag is False (e.g. the reset step after an episode ended) are written nowhere and not counted: their
scatter index is pushed out of range and dropped. All shapes are static, so every function jits, vmaps over
seeds, and `add` can donate the old state:

    buffer = make_replay_buffer(capacity=100_000, batch_size=128, min_size=2_000)
    state = buffer.init(example_transition)              # one unbatched Transition fixes shapes and dtypes
    add = jax.jit(buffer.add, donate_argnums=0)          # the old state's memory is reused in place
    state = add(state, transitions, valid)               # transitions: leaves [N, ...], valid: [N] bool
    batch = buffer.sample(state, key)                    # leaves [batch_size, ...]

Observations are stored as uint8 RAM (128 bytes), so 100,000 transitions with o_tm1 and o_t take about 26 MB;
the learner stores stacked observations (``--frame-stack K``) as references into a frame store
(`jaxrl.dqn.buffers.frames`), which keeps each snapshot once (about 28 MB for 100,000 rows, whatever K).
"""
from __future__ import annotations

import functools
import numbers
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class Transition(NamedTuple):
    """One step of experience (o_tm1, a_tm1, r_t, o_t, terminated_t); leaves may carry leading batch axes."""

    obs: jax.Array  # [..., 128] uint8, o_tm1
    action: jax.Array  # [...] int32, a_tm1
    reward: jax.Array  # [...] float32, r_t (already multiplied by reward_scale)
    next_obs: jax.Array  # [..., 128] uint8, o_t
    terminated: jax.Array  # [...] bool, true terminal at t (no bootstrap); truncation is never stored here
    discount: jax.Array | None = None  # [...] float32 bootstrap factor of n-step rows (gamma^k, 0 after a
    # terminal; `jaxrl.dqn.buffers.nstep`); None for one-step rows, whose discount is gamma * (1 - terminated)


class ReplayState(NamedTuple):
    """Ring buffer contents and write position."""

    data: Transition  # leaves [capacity, ...]
    index: jax.Array  # () int32, next row to write
    size: jax.Array  # () int32, rows filled, <= capacity


class ReplayBuffer(NamedTuple):
    """The buffer's pure functions, with capacity / batch_size / min_size bound by `make_replay_buffer`."""

    init: Callable[[Transition], ReplayState]
    add: Callable[..., ReplayState]
    sample: Callable[[ReplayState, jax.Array], Transition]
    can_sample: Callable[[ReplayState], jax.Array]


def init(example: Transition, *, capacity: int) -> ReplayState:
    """Empty buffer whose rows have the shapes and dtypes of `example`.

    Args:
      example: one unbatched Transition (e.g. obs [128] uint8, action () int32); only shapes/dtypes are used.
      capacity: number of rows.

    Returns:
      ReplayState with zero-filled data (leaves [capacity, ...]), index 0, size 0.
    """
    data = jax.tree.map(
        lambda x: jnp.zeros((capacity,) + jnp.shape(x), jnp.result_type(x)), example
    )
    return ReplayState(data=data, index=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32))


def add(
    state: ReplayState, batch: Transition, valid: jax.Array | None = None, *, capacity: int
) -> ReplayState:
    """Write the valid rows of `batch` at consecutive ring positions (wrapping around), in batch order.

    Args:
      state: current buffer.
      batch: Transition with leaves [N, ...], N <= capacity; dtypes are cast to the buffer's.
      valid: [N] bool, rows to keep; None keeps all. Invalid rows are not written and not counted.
      capacity: number of rows (static).

    Returns:
      The new ReplayState; index advances and size grows (capped at capacity) by the number of valid rows.
    """
    num_rows = jax.tree.leaves(batch)[0].shape[0]
    if num_rows > capacity:
        raise ValueError(f"add got {num_rows} rows, more than the buffer capacity {capacity}.")
    if valid is None:
        valid = jnp.ones((num_rows,), bool)
    valid_shape = jnp.shape(valid)
    assert valid_shape == (num_rows,), f"valid must be [{num_rows}], got {valid_shape}"
    slots = write_slots(state.index, valid.astype(bool), capacity=capacity)
    data = jax.tree.map(
        lambda buf, x: buf.at[slots].set(x.astype(buf.dtype), mode="drop"), state.data, batch
    )
    num_valid = jnp.sum(valid, dtype=jnp.int32)
    return ReplayState(
        data=data,
        index=(state.index + num_valid) % capacity,
        size=jnp.minimum(state.size + num_valid, capacity),
    )


def write_slots(index: jax.Array, valid: jax.Array, *, capacity: int) -> jax.Array:
    """Ring rows that `add` writes: [N] int32, the k-th valid row at (index + k) % capacity, invalid rows at
    `capacity` (out of range, so a scatter with ``mode="drop"`` skips them).

    Args:
      index: () int32 next row to write.
      valid: [N] bool rows to keep.
      capacity: number of rows (static).
    """
    offset = jnp.cumsum(valid.astype(jnp.int32)) - 1
    return jnp.where(valid, (index + offset) % capacity, capacity)


def sample(state: ReplayState, key: jax.Array, *, batch_size: int) -> Transition:
    """Draw `batch_size` rows uniformly (with replacement) from the filled rows.

    Rows are filled from 0 upwards until the ring wraps, so the filled rows are always [0, size).
    Sampling an empty buffer returns copies of row 0 (zeros); guard with `can_sample`.

    Args:
      state: current buffer.
      key: PRNG key.
      batch_size: rows to draw (static).

    Returns:
      Transition with leaves [batch_size, ...].
    """
    rows = jax.random.randint(key, (batch_size,), 0, jnp.maximum(state.size, 1))
    return jax.tree.map(lambda buf: buf[rows], state.data)


def can_sample(state: ReplayState, *, batch_size: int, min_size: int) -> jax.Array:
    """() bool: True once the buffer holds at least max(min_size, batch_size) rows."""
    return state.size >= max(min_size, batch_size)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


def make_replay_buffer(capacity: int, batch_size: int, min_size: int = 0) -> ReplayBuffer:
    """Build a uniform ring replay buffer with static sizes.

    Args:
      capacity: rows kept (oldest overwritten first), >= 1.
      batch_size: rows returned by `sample`, >= 1.
      min_size: `can_sample` is False until this many rows (and at least batch_size) are stored, >= 0.

    Returns:
      ReplayBuffer(init, add, sample, can_sample) with the sizes bound.

    Raises:
      TypeError / ValueError naming the bad argument.
    """
    capacity = _check_int("capacity", capacity, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    min_size = _check_int("min_size", min_size, 0)
    if max(min_size, batch_size) > capacity:
        raise ValueError(
            f"capacity ({capacity}) must be >= max(min_size, batch_size) = {max(min_size, batch_size)}, "
            "otherwise can_sample is never True."
        )
    return ReplayBuffer(
        init=functools.partial(init, capacity=capacity),
        add=functools.partial(add, capacity=capacity),
        sample=functools.partial(sample, batch_size=batch_size),
        can_sample=functools.partial(can_sample, batch_size=batch_size, min_size=min_size),
    )
