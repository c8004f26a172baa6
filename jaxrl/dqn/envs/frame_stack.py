"""Frame stacking of the RAM: the agent sees its env's last k RAM snapshots, oldest first.

A pure pair over an explicit history (``init`` / ``update``), and two wrappers that apply it to the two env
interfaces with the same semantics:

* :func:`stack_vec_env` for a host :class:`~jaxrl.dqn.envs.host.RamVecEnv` (``--loop python``, eval, play);
* :func:`stack_xla_env` for an :class:`~jaxrl.dqn.envs.atari.XlaEnv` (``--loop xla``; jit-able, its history is
  part of the env state).

At a reset every slot holds the first observation (gymnasium's ``FrameStackObservation`` with
``padding_type="reset"``). envpool and the wrappers here auto-reset on the step *after* an episode ends, so
the history of an env whose previous step ended (terminated or truncated) is refilled with the reset
observation that step returns; a life loss does not reset it (the game goes on). Observations become
``[N, k * 128]`` uint8, so the replay buffer, n-step windows, learner and Q-network take them unchanged.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl.dqn.config import check_int
from jaxrl.dqn.envs.atari import XlaEnv


def _array_module(x):
    """NumPy for host arrays (the host wrapper: no per-step JAX dispatch), jax.numpy otherwise (jit)."""
    return np if isinstance(x, np.ndarray) else jnp


def init(obs: jax.Array, num_frames: int) -> jax.Array:
    """A fresh history: ``obs [N, D]`` -> ``[N, k, D]`` with every slot ``obs``."""
    return _array_module(obs).repeat(obs[:, None], num_frames, axis=1)


def update(history: jax.Array, obs: jax.Array, reset: jax.Array) -> jax.Array:
    """Append ``obs [N, D]`` to ``history [N, k, D]`` (dropping the oldest); rows where ``reset [N]`` start over."""
    xp = _array_module(history)
    shifted = xp.concatenate([history[:, 1:], obs[:, None]], axis=1)
    return xp.where(reset[:, None, None], init(obs, history.shape[1]), shifted)


def flatten(history: jax.Array) -> jax.Array:
    """``[N, k, D]`` -> the agent's observation ``[N, k * D]``, oldest snapshot first."""
    return history.reshape(history.shape[0], -1)


def check_frame_stack(num_frames) -> int:
    """``num_frames`` as an int, or a ValueError naming ``frame_stack`` (checked before any env is made)."""
    return check_int("frame_stack", num_frames)


class StackedEnvState(NamedTuple):
    env_state: object  # the wrapped XlaEnv's state
    history: jax.Array  # [M, k, 128] uint8
    ended: jax.Array  # [M] bool: the previous step ended the episode (this step returns a reset observation)


def stack_xla_env(env: XlaEnv, num_frames: int) -> XlaEnv:
    """``env`` with observations ``[M, k * 128]``; its state becomes a :class:`StackedEnvState`."""
    num_frames = check_frame_stack(num_frames)
    if num_frames == 1:
        return env

    def reset():
        env_state, obs = env.reset()
        history = init(jnp.asarray(obs), num_frames)
        return StackedEnvState(env_state, history, jnp.zeros((env.num_envs,), bool)), flatten(history)

    def step(state: StackedEnvState, actions):
        env_state, (obs, reward, terminated, truncated, life_lost) = env.step(state.env_state, actions)
        history = update(state.history, obs, state.ended)
        new_state = StackedEnvState(env_state, history, terminated | truncated)
        return new_state, (flatten(history), reward, terminated, truncated, life_lost)

    return env._replace(reset=reset, step=step)


class StackedRamVecEnv:
    """A host :class:`~jaxrl.dqn.envs.host.RamVecEnv` whose observations are its last k RAM snapshots ``[N, k*128]``.

    Everything else (``num_envs``, ``num_actions``, ``backend``, ``life_lost``, ``render``, ``close``, context
    manager) is the wrapped env's.
    """

    def __init__(self, env, num_frames: int):
        self.env = env
        self.num_frames = check_frame_stack(num_frames)
        self._history = None
        self._ended = np.zeros(env.num_envs, bool)

    def __getattr__(self, name):  # num_envs, num_actions, backend, life_lost, render, action_meanings, ...
        return getattr(self.env, name)

    def reset(self) -> np.ndarray:
        obs = self.env.reset()
        self._history = init(np.asarray(obs), self.num_frames)
        self._ended = np.zeros(self.env.num_envs, bool)
        return flatten(self._history)

    def step(self, actions):
        if self._history is None:
            raise RuntimeError("call reset() before step()")
        obs, reward, terminated, truncated = self.env.step(actions)
        self._history = update(self._history, np.asarray(obs), self._ended)
        self._ended = np.asarray(terminated) | np.asarray(truncated)
        return flatten(self._history), reward, terminated, truncated

    def close(self) -> None:
        self.env.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def stack_vec_env(env, num_frames: int):
    """``env`` itself when ``num_frames == 1``, else a :class:`StackedRamVecEnv` over it."""
    return env if check_frame_stack(num_frames) == 1 else StackedRamVecEnv(env, num_frames)
