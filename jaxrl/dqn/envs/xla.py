"""Vectorised envs whose step is an XLA operation, so it can run inside `jit` / `lax.scan`.

`make_envpool_xla_env` wraps envpool's XLA interface (`handle, recv, send, step = pool.xla()`): `step(handle,
actions)` is a custom call that steps all envs and returns `(handle, (obs, reward, terminated, truncated,
info))`; the Atari RAM is `info["ram"]` [M, 128] uint8. Checked here (envpool 1.2.5, sync mode
batch_size == num_envs): rows come back in env-id order, and auto-reset is next-step: the call after
terminated (game over) or truncated returns the reset observation with elapsed_step 0 and reward 0
(tests/test_dqn_xla_loop.py checks it), which is what `jaxrl.dqn.learner` assumes.

envpool is imported only inside `make_envpool_xla_env` (an optional dependency); the `XlaEnv` interface is
`jaxrl.dqn.envs.atari`'s.
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxrl.dqn.config import check_int
from jaxrl.dqn.envs.atari import XlaEnv, envpool_kwargs
from jaxrl.dqn.envs.frame_stack import check_frame_stack, stack_xla_env


def make_envpool_xla_env(
    num_envs: int,
    seed: int,
    *,
    env_id: str = "SpaceInvaders-v5",
    frame_skip: int = 4,
    repeat_action_probability: float = 0.25,
    noop_max: int = 30,
    max_episode_frames: int = 108_000,
    frame_stack: int = 1,
    num_threads: int = 0,
) -> XlaEnv:
    """envpool Atari envs returning RAM, stepped by envpool's XLA custom call.

    The Atari settings match `jaxrl.dqn.envs.host.make_vec_env` (sticky actions, no-op starts, full-game episodes,
    unclipped rewards, minimal action set; truncation after max_episode_frames // frame_skip agent steps); the
    image observation is kept to one 8x8 grey frame since only the RAM is used.

    Args:
      num_envs: M (for S seeds of N envs each, M = S * N).
      seed: env i is seeded with seed + i.
      frame_stack: k > 1 returns the last k RAM snapshots per env, ``[M, k * 128]``
        (``jaxrl.dqn.envs.frame_stack.stack_xla_env``; the state is then a ``StackedEnvState`` around the one below).
      num_threads: envpool worker threads (0: envpool's default).

    Returns:
      XlaEnv whose state is (envpool's handle [8] uint8, a token threaded through `step`; lives [M] int32 of
      the last result, to tell when a life was lost).
    """
    num_envs = check_int("num_envs", num_envs)
    frame_stack = check_frame_stack(frame_stack)
    import envpool

    pool = envpool.make(**envpool_kwargs(env_id, num_envs, seed, frame_skip=frame_skip,
                                         repeat_action_probability=repeat_action_probability, noop_max=noop_max,
                                         max_episode_frames=max_episode_frames, num_threads=num_threads))
    handle, _recv, _send, xla_step = pool.xla()

    def reset():
        _, info = pool.reset()
        lives = jnp.asarray(np.asarray(info["lives"], np.int32))
        return (jnp.asarray(handle), lives), jnp.asarray(np.asarray(info["ram"], np.uint8))

    def step(env_state, actions):
        env_handle, lives_tm1 = env_state
        env_handle, (_, reward, terminated, truncated, info) = xla_step(env_handle, actions.astype(jnp.int32))
        lives = info["lives"].astype(jnp.int32)
        return (env_handle, lives), (
            info["ram"].astype(jnp.uint8),
            reward.astype(jnp.float32),
            terminated.astype(bool),
            truncated.astype(bool),
            lives < lives_tm1,  # a reset row has lives back at the start value: never a loss
        )

    env = XlaEnv(reset=reset, step=step, num_envs=num_envs, num_actions=int(pool.action_space.n), close=pool.close)
    return stack_xla_env(env, frame_stack)


def make_xla_env_from_config(config: Any, seed: int) -> XlaEnv:
    """``make_envpool_xla_env`` with a ``DQNConfig``'s env settings (its num_envs; env i seeded ``seed + i``)."""
    return make_envpool_xla_env(config.num_envs, seed, env_id=config.env_id, frame_skip=config.frame_skip,
                                repeat_action_probability=config.repeat_action_probability,
                                noop_max=config.noop_max, max_episode_frames=config.max_episode_frames,
                                frame_stack=config.frame_stack)
