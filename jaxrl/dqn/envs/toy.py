"""A tiny vectorised env written in pure JAX, with envpool's next-step auto-reset, for tests and overhead benchmarks.

It has the same interface as the envpool XLA env of `jaxrl.dqn.run.xla_loop` (an `XlaEnv`), so the compiled training
loop can be run and tested without envpool or Atari.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl.dqn.envs.atari import NUM_RAM_BYTES, XlaEnv



class ToyEnvState(NamedTuple):
    t: jax.Array  # [M] int32, step within the current episode
    episode: jax.Array  # [M] int32, episodes started so far
    needs_reset: jax.Array  # [M] bool, the episode ended at the previous step


def make_toy_env(num_envs: int, num_actions: int = 6, lengths=None) -> XlaEnv:
    """M envs; env i's episodes last lengths[i] steps, ending terminated (even i) or truncated (odd i).

    RAM byte 0 = env id, byte 1 = step in episode (mod 256), byte 2 = episode count (mod 256).
    Reward = 1 when the action equals t % num_actions, else 0. The step after an episode ends returns the reset
    observation with reward 0 and ignores the action (envpool's next-step auto-reset). No lives: life_lost is
    always False.

    Args:
      num_envs: M.
      num_actions: A.
      lengths: [M] ints >= 1; default 3 + (i % 5).

    Returns:
      XlaEnv whose state is a ToyEnvState.
    """
    if lengths is None:
        lengths = 3 + np.arange(num_envs) % 5
    lengths = jnp.asarray(lengths, jnp.int32)
    if lengths.shape != (num_envs,) or bool(jnp.any(lengths < 1)):
        raise ValueError(f"lengths must be {num_envs} ints >= 1, got {lengths}.")
    env_ids = jnp.arange(num_envs, dtype=jnp.int32)

    def observe(state: ToyEnvState) -> jax.Array:
        ram = jnp.zeros((num_envs, NUM_RAM_BYTES), jnp.uint8)
        ram = ram.at[:, 0].set(env_ids.astype(jnp.uint8))
        ram = ram.at[:, 1].set((state.t % 256).astype(jnp.uint8))
        return ram.at[:, 2].set((state.episode % 256).astype(jnp.uint8))

    def reset():
        state = ToyEnvState(
            t=jnp.zeros((num_envs,), jnp.int32),
            episode=jnp.zeros((num_envs,), jnp.int32),
            needs_reset=jnp.zeros((num_envs,), bool),
        )
        return state, observe(state)

    def step(state: ToyEnvState, actions: jax.Array):
        hit = (actions == state.t % num_actions).astype(jnp.float32)
        reward = jnp.where(state.needs_reset, 0.0, hit)
        t = jnp.where(state.needs_reset, 0, state.t + 1)
        episode = state.episode + state.needs_reset.astype(jnp.int32)
        ended = ~state.needs_reset & (t >= lengths)
        terminated = ended & (env_ids % 2 == 0)
        truncated = ended & (env_ids % 2 == 1)
        new_state = ToyEnvState(t=t, episode=episode, needs_reset=ended)
        return new_state, (observe(new_state), reward, terminated, truncated, jnp.zeros((num_envs,), bool))

    return XlaEnv(reset=reset, step=step, num_envs=num_envs, num_actions=num_actions, close=lambda: None)
