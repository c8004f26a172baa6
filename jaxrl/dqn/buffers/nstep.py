"""n-step returns, accumulated per env before the replay buffer (pure `init` / `update` over an explicit state).

Each env keeps a window of its last (up to n) transitions that have not been written yet. Every call pushes
the newest transition of each env and emits the rows that are complete:

- window full (n transitions) and the episode goes on: the oldest row, with
  R = r_1 + gamma r_2 + ... + gamma^(n-1) r_n, next_obs = o_{t}, discount = gamma^n;
- the episode (or, with life-loss terminals, the life) ends at this call: every pending row j, with the
  truncated sum R_j = sum_{i >= j} gamma^(i-j) r_i, next_obs = the last observation, and
  discount = gamma^(k_j) * (1 - terminal) where k_j is the number of rewards summed (a time-limit truncation
  is bootstrapped, a terminal is not).

So the learner's target is `R + discount * max_a Q_target(next_obs, a)` (Sutton & Barto 7.1; Hessel et al., 2018,
"Rainbow"). Rows come out as a flat batch of N * n candidates with a mask, ready for the buffer's masked `add`.

    acc = make_nstep(num_envs=8, n=3, gamma=0.99)
    state = acc.init(example_obs)                      # example_obs [128] uint8
    state, rows, mask = acc.update(state, obs_tm1, a_tm1, r_t, obs_t, terminal_t, end_t, valid_t)
    replay_state = buffer.add(replay_state, rows, mask)   # rows leaves [N * n, ...]
"""
from __future__ import annotations

import functools
import numbers
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxrl.dqn.buffers.replay import Transition


class NStepState(NamedTuple):
    """Pending (not yet written) transitions of each env, oldest first."""

    obs: jax.Array  # [N, n, ...] o_tm1 of each pending transition
    action: jax.Array  # [N, n] int32
    reward: jax.Array  # [N, n] float32 (as stored: already scaled / clipped)
    count: jax.Array  # [N] int32, pending transitions, in [0, n)


class NStep(NamedTuple):
    """`init(example_obs) -> NStepState` and `update(...) -> (NStepState, rows, mask)`; n and gamma bound."""

    init: Callable[[jax.Array], NStepState]
    update: Callable[..., tuple[NStepState, Transition, jax.Array]]
    n: int
    gamma: float


def init(example_obs: jax.Array, *, num_envs: int, n: int) -> NStepState:
    """Empty windows. example_obs: one observation (e.g. [128] uint8); only shape and dtype are used."""
    example_obs = jnp.asarray(example_obs)
    return NStepState(
        obs=jnp.zeros((num_envs, n) + example_obs.shape, example_obs.dtype),
        action=jnp.zeros((num_envs, n), jnp.int32),
        reward=jnp.zeros((num_envs, n), jnp.float32),
        count=jnp.zeros((num_envs,), jnp.int32),
    )


def update(
    state: NStepState,
    obs_tm1: jax.Array,
    action_tm1: jax.Array,
    reward_t: jax.Array,
    obs_t: jax.Array,
    terminal_t: jax.Array,
    end_t: jax.Array,
    valid_t: jax.Array,
    *,
    n: int,
    gamma: float,
) -> tuple[NStepState, Transition, jax.Array]:
    """Push one transition per env and emit the completed n-step rows.

    Args:
      state: NStepState with windows of N envs.
      obs_tm1: [N, ...] observation the action was chosen for.
      action_tm1: [N] int actions.
      reward_t: [N] float rewards (as they should be stored).
      obs_t: [N, ...] resulting observations.
      terminal_t: [N] bool, no bootstrap after this step (game over, or a lost life with life-loss terminals).
      end_t: [N] bool, the window is flushed after this step (terminal_t or a time-limit truncation).
      valid_t: [N] bool, False for an auto-reset row: nothing is pushed or emitted for that env.

    Returns:
      (state, rows, mask): rows is a Transition with leaves [N * n, ...] (row i * n + j is env i's pending
      transition j) and a `discount` field (gamma^k, or 0 after a terminal); mask [N * n] bool marks the rows
      to write.
    """
    num_envs = state.count.shape[0]
    position = jnp.arange(n)  # [n]
    at = (position[None, :] == state.count[:, None]) & valid_t[:, None]  # [N, n] slot of the new transition
    expand = lambda m, x: m.reshape(m.shape + (1,) * (x.ndim - m.ndim))  # noqa: E731
    obs = jnp.where(expand(at, state.obs), obs_tm1[:, None].astype(state.obs.dtype), state.obs)
    action = jnp.where(at, action_tm1[:, None].astype(jnp.int32), state.action)
    reward = jnp.where(at, reward_t[:, None].astype(jnp.float32), state.reward)
    count = state.count + valid_t.astype(jnp.int32)  # [N], in [0, n]

    # R_j = sum_{j <= i < count} gamma^(i - j) r_i, and k_j = count - j rewards summed.
    exponent = position[None, :] - position[:, None]  # [n (j), n (i)]: i - j
    weights = jnp.where(exponent >= 0, gamma ** jnp.maximum(exponent, 0).astype(jnp.float32), 0.0)  # [j, i]
    filled = position[None, :] < count[:, None]  # [N, n]
    returns = jnp.einsum("ji,ni->nj", weights, jnp.where(filled, reward, 0.0))  # [N, n]
    steps = count[:, None] - position[None, :]  # [N, n]
    terminal = terminal_t.astype(bool) & valid_t
    discount = jnp.where(terminal[:, None], 0.0, gamma ** jnp.maximum(steps, 0).astype(jnp.float32))

    flush = end_t.astype(bool) & valid_t  # [N]
    full = (count == n) & ~flush  # [N]
    mask = (flush[:, None] & filled) | (full[:, None] & (position[None, :] == 0))  # [N, n]

    rows = Transition(
        obs=obs.reshape((num_envs * n,) + obs.shape[2:]),
        action=action.reshape(-1),
        reward=returns.reshape(-1),
        next_obs=jnp.broadcast_to(obs_t[:, None], (num_envs, n) + obs_t.shape[1:]).reshape(
            (num_envs * n,) + obs_t.shape[1:]
        ).astype(state.obs.dtype),
        terminated=jnp.broadcast_to(terminal[:, None], (num_envs, n)).reshape(-1),
        discount=discount.reshape(-1),
    )

    # Full window: drop the emitted oldest row (shift left by one). Flush: empty.
    shift = lambda x: jnp.where(expand(full, x), jnp.roll(x, -1, axis=1), x)  # noqa: E731
    new_state = NStepState(
        obs=shift(obs),
        action=shift(action),
        reward=shift(reward),
        count=jnp.where(flush, 0, jnp.where(full, n - 1, count)),
    )
    return new_state, rows, mask.reshape(-1)


def make_nstep(num_envs: int, n: int, gamma: float) -> NStep:
    """Bind the window length `n` (>= 1) and the discount `gamma` for `num_envs` envs."""
    for name, value, low in (("num_envs", num_envs, 1), ("n", n, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
    if not 0.0 <= float(gamma) <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma!r}.")
    return NStep(
        init=functools.partial(init, num_envs=int(num_envs), n=int(n)),
        update=functools.partial(update, n=int(n), gamma=float(gamma)),
        n=int(n),
        gamma=float(gamma),
    )
