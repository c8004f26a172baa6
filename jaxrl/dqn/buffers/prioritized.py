"""Proportional prioritized experience replay (Schaul et al., 2016) as pure functions over an explicit state.

The ring of rows is the uniform buffer's (`jaxrl.dqn.buffers.replay`: same `Transition` rows, same `add` masking);
beside it every row has a priority ``p_i ** alpha``. Rows are drawn with probability
``P(i) = p_i^alpha / sum_k p_k^alpha`` and each drawn row comes with the importance weight
``w_i = (size * P(i)) ** -beta / max_batch w`` that corrects the TD loss for the non-uniform draw. A new row gets
the largest priority seen so far, so it is replayed soon; `update` sets the drawn rows' priorities to
``(|td_error| + eps) ** alpha`` after the update that used them.

Sampling is stratified as in the paper: the total mass is cut into ``batch_size`` equal segments and one row is
drawn in each. The rows are found in a sum tree over the priorities (`jaxrl.dqn.buffers.sum_tree`, kept in the
state beside them): O(log capacity) per drawn row and per written priority, with static shapes, so everything
jits, vmaps over seeds and donates.

    buffer = make_prioritized_replay_buffer(capacity=100_000, batch_size=128, min_size=2_000)
    state = buffer.init(example_transition)
    state = buffer.add(state, transitions, valid)          # leaves [N, ...], valid [N] bool
    drawn = buffer.sample(state, key)                      # drawn.batch leaves [B, ...], indices [B], weights [B]
    ... loss = mean(drawn.weights * huber(td_errors)) ...
    state = buffer.update(state, drawn.indices, td_errors)  # td_errors [B]
"""
from __future__ import annotations

import functools
import numbers
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxrl.dqn.buffers import replay, sum_tree
from jaxrl.dqn.buffers.replay import ReplayState, Transition


class PrioritizedReplayState(NamedTuple):
    """Ring buffer contents plus one priority per row, and the sum tree over the priorities."""

    replay: ReplayState  # the rows, write position and size (uniform buffer's state)
    priorities: jax.Array  # [capacity] float32, p_i ** alpha of each row (the sum tree's leaves); 0 if never written
    sum_tree: jax.Array  # [P] float32, inner nodes of the sum tree over priorities (`sum_tree`); [1] is their sum
    max_priority: jax.Array  # () float32, largest p ** alpha set so far (new rows get it)


class PrioritizedSample(NamedTuple):
    """A drawn batch, where it came from, and its importance weights."""

    batch: Transition  # leaves [batch_size, ...]
    indices: jax.Array  # [batch_size] int32 rows drawn (for `update`)
    weights: jax.Array  # [batch_size] float32 importance weights in (0, 1], max 1


class PrioritizedReplayBuffer(NamedTuple):
    """The buffer's pure functions, with sizes and exponents bound by `make_prioritized_replay_buffer`."""

    init: Callable[[Transition], PrioritizedReplayState]
    add: Callable[..., PrioritizedReplayState]
    sample: Callable[[PrioritizedReplayState, jax.Array], PrioritizedSample]
    update: Callable[[PrioritizedReplayState, jax.Array, jax.Array], PrioritizedReplayState]
    can_sample: Callable[[PrioritizedReplayState], jax.Array]


def init(example: Transition, *, capacity: int) -> PrioritizedReplayState:
    """Empty buffer (rows shaped like the unbatched `example`), all priorities 0, max priority 1."""
    priorities = jnp.zeros((capacity,), jnp.float32)
    return PrioritizedReplayState(
        replay=replay.init(example, capacity=capacity),
        priorities=priorities,
        sum_tree=sum_tree.build(priorities),
        max_priority=jnp.ones((), jnp.float32),
    )


def add(
    state: PrioritizedReplayState, batch: Transition, valid: jax.Array | None = None, *, capacity: int
) -> PrioritizedReplayState:
    """Write the valid rows of `batch` (leaves [N, ...]) like `jaxrl.dqn.buffers.replay.add`, at the max priority."""
    num_rows = jax.tree.leaves(batch)[0].shape[0]
    if valid is None:
        valid = jnp.ones((num_rows,), bool)
    slots = replay.write_slots(state.replay.index, valid.astype(bool), capacity=capacity)  # replay.add's rows
    tree, priorities = sum_tree.set_leaves(state.sum_tree, state.priorities, slots,
                                           jnp.full((num_rows,), state.max_priority))  # invalid rows: skipped
    return PrioritizedReplayState(
        replay=replay.add(state.replay, batch, valid, capacity=capacity),
        priorities=priorities,
        sum_tree=tree,
        max_priority=state.max_priority,
    )


def sample(
    state: PrioritizedReplayState, key: jax.Array, *, batch_size: int, importance_exponent: float
) -> PrioritizedSample:
    """Draw `batch_size` rows with probability proportional to their priority (one per equal-mass segment).

    Each segment's row is found by a walk down the sum tree: O(batch_size * log capacity).

    Args:
      state: current buffer (guard with `can_sample`: an empty buffer returns row 0 with weight 1).
      key: PRNG key.
      batch_size: rows to draw (static).
      importance_exponent: beta of the importance weights (0: all 1; 1: full correction).

    Returns:
      PrioritizedSample(batch [B, ...], indices [B] int32, weights [B] float32 with max 1).
    """
    size = jnp.maximum(state.replay.size, 1)
    total = sum_tree.total(state.sum_tree, (batch_size,))  # [B], the same total in every row
    segment = (jnp.arange(batch_size) + jax.random.uniform(key, (batch_size,))) / batch_size  # [B] in [0, 1)
    indices = sum_tree.find(state.sum_tree, state.priorities, segment * total)  # [B]: rows of priority > 0 (filled)
    probs = state.priorities[indices] / jnp.maximum(total, 1e-30)
    weights = (size * jnp.maximum(probs, 1e-30)) ** -importance_exponent
    weights = weights / jnp.max(weights)
    batch = jax.tree.map(lambda buf: buf[indices], state.replay.data)
    return PrioritizedSample(batch=batch, indices=indices, weights=weights.astype(jnp.float32))


def update(
    state: PrioritizedReplayState, indices: jax.Array, td_errors: jax.Array, *, priority_exponent: float,
    eps: float,
) -> PrioritizedReplayState:
    """Set rows `indices` ([B] int) to priority ``(|td_errors| + eps) ** alpha`` ([B] float), and their
    ancestors in the sum tree: O(B log capacity).

    A row drawn twice in one batch keeps one of its two new priorities.
    """
    new = (jnp.abs(td_errors.astype(jnp.float32)) + eps) ** priority_exponent
    tree, priorities = sum_tree.set_leaves(state.sum_tree, state.priorities, indices, new)
    return PrioritizedReplayState(
        replay=state.replay,
        priorities=priorities,
        sum_tree=tree,
        max_priority=jnp.maximum(state.max_priority, jnp.max(new)),
    )


def can_sample(state: PrioritizedReplayState, *, batch_size: int, min_size: int) -> jax.Array:
    """() bool: True once the buffer holds at least max(min_size, batch_size) rows."""
    return replay.can_sample(state.replay, batch_size=batch_size, min_size=min_size)


def make_prioritized_replay_buffer(
    capacity: int,
    batch_size: int,
    min_size: int = 0,
    *,
    priority_exponent: float = 0.5,
    importance_exponent: float = 0.5,
    eps: float = 1e-6,
) -> PrioritizedReplayBuffer:
    """Build a proportional prioritized ring buffer with static sizes.

    Args:
      capacity, batch_size, min_size: as `jaxrl.dqn.buffers.replay.make_replay_buffer`.
      priority_exponent: alpha in [0, 1]: 0 is uniform sampling, 1 fully proportional to |TD error|
        (Schaul et al. use 0.6, Dopamine's Rainbow 0.5).
      importance_exponent: beta in [0, 1] of the importance weights (Dopamine's Rainbow: 0.5).
      eps: added to |TD error| so that no row's priority is 0 (> 0).

    Returns:
      PrioritizedReplayBuffer(init, add, sample, update, can_sample).

    Raises:
      TypeError / ValueError naming the bad argument.
    """
    replay.make_replay_buffer(capacity, batch_size, min_size)  # the uniform buffer's checks of the sizes
    for name, value in (("priority_exponent", priority_exponent), ("importance_exponent", importance_exponent)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a number in [0, 1], got {value!r}.")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
        raise ValueError(f"eps must be a number > 0, got {eps!r}.")
    capacity, batch_size, min_size = int(capacity), int(batch_size), int(min_size)
    return PrioritizedReplayBuffer(
        init=functools.partial(init, capacity=capacity),
        add=functools.partial(add, capacity=capacity),
        sample=functools.partial(sample, batch_size=batch_size, importance_exponent=float(importance_exponent)),
        update=functools.partial(update, priority_exponent=float(priority_exponent), eps=float(eps)),
        can_sample=functools.partial(can_sample, batch_size=batch_size, min_size=min_size),
    )
