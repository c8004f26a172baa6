"""Stacked observations stored once: each env's RAM snapshots in a ring, replay rows as references into it.

With ``--frame-stack K`` an observation is its env's last K snapshots, ``[K * D]`` uint8 (D = 128 RAM bytes).
Storing o_tm1 and o_t stacked in every replay row repeats each snapshot 2K times (K = 3: 768 bytes a row, 77 MB
for 100k rows). Here every snapshot is written once, to its env's ring of frames, and an observation in a row is
a reference ``[env, frame, episode_start]`` (int32 [3]): the absolute index of its newest snapshot in that
env's ring and of the first snapshot of its episode. Sampling rebuilds the stack from the K frames ending at
``frame``, each index clamped to ``episode_start``: at a reset the history holds K copies of the reset
observation (`jaxrl.dqn.envs.frame_stack`), so the clamp gives exactly the stack the agent saw. 100k rows take
about 28 MB then (frames, with room for the oldest row's history, and 24 bytes of references a row); the
replay buffer, the n-step windows and prioritized replay store references like any other leaf, unchanged.

    store = make_frame_store(num_envs=8, num_frames=3, frames_per_env=frames_per_env_for(100_000, 8, 3))
    state, refs_0 = store.init(obs_0)                     # obs_0 [N, K * D] uint8; refs_0 [N, 3] int32
    state, refs_t = store.push(state, obs_t, reset_t)     # the newest snapshot of each obs_t; reset_t [N] bool
    stacks = store.gather(state, rows.obs)                # rows.obs [..., 3] -> [..., K * D] uint8

A reference stays readable while its K frames are among its env's last ``frames_per_env`` pushes;
`frames_per_env_for` sizes the rings so that every row a replay buffer can still hold is (`push` is called once
per learner call, so an env's frames age one per call).
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxrl.dqn.config import check_int


class FrameStoreState(NamedTuple):
    """Each env's ring of snapshots and where its running episode began."""

    frames: jax.Array  # [F, N, D] uint8, frame i of env e at [i % F, e]
    count: jax.Array  # [N] int32, snapshots pushed per env (the next frame's absolute index)
    episode_start: jax.Array  # [N] int32, absolute index of the running episode's first snapshot


class FrameStore(NamedTuple):
    """`init`, `push`, `gather` with the sizes bound by `make_frame_store`."""

    init: Callable[[jax.Array], tuple[FrameStoreState, jax.Array]]
    push: Callable[[FrameStoreState, jax.Array, jax.Array], tuple[FrameStoreState, jax.Array]]
    gather: Callable[[FrameStoreState, jax.Array], jax.Array]
    num_frames: int  # K
    frames_per_env: int  # F


def push(state: FrameStoreState, obs: jax.Array, reset: jax.Array, *, frame_size: int,
         ) -> tuple[FrameStoreState, jax.Array]:
    """Write the newest snapshot of each env's observation to its ring.

    Args:
      state: the store.
      obs: [N, K * D] uint8 stacked observations (only the last D bytes, the newest snapshot, are written).
      reset: [N] bool, ``obs`` starts a new episode (its history is K copies of it).
      frame_size: D (static).

    Returns:
      (state, refs): refs [N, 3] int32 ``[env, frame, episode_start]`` of the observations just pushed.
    """
    num_frames_kept, num_envs = state.frames.shape[:2]
    envs = jnp.arange(num_envs, dtype=jnp.int32)
    newest = obs[:, -frame_size:].astype(state.frames.dtype)
    frames = state.frames.at[state.count % num_frames_kept, envs].set(newest)
    episode_start = jnp.where(reset.astype(bool), state.count, state.episode_start)
    refs = jnp.stack([envs, state.count, episode_start], axis=-1)
    return FrameStoreState(frames, state.count + 1, episode_start), refs


def init(obs_0: jax.Array, *, frames_per_env: int, frame_size: int) -> tuple[FrameStoreState, jax.Array]:
    """A store holding each env's first observation (a reset); returns it and their refs [N, 3]."""
    num_envs = obs_0.shape[0]
    empty = FrameStoreState(frames=jnp.zeros((frames_per_env, num_envs, frame_size), jnp.uint8),
                            count=jnp.zeros((num_envs,), jnp.int32),
                            episode_start=jnp.zeros((num_envs,), jnp.int32))
    return push(empty, obs_0, jnp.ones((num_envs,), bool), frame_size=frame_size)


def gather(state: FrameStoreState, refs: jax.Array, *, num_frames: int) -> jax.Array:
    """Rebuild stacked observations.

    Args:
      state: the store.
      refs: [..., 3] int32 ``[env, frame, episode_start]`` (from `push`).
      num_frames: K (static).

    Returns:
      [..., K * D] uint8: frames ``max(frame - k, episode_start)`` for k = K - 1, ..., 0 (oldest first).
    """
    env, frame, start = refs[..., 0], refs[..., 1], refs[..., 2]
    back = jnp.arange(num_frames - 1, -1, -1, dtype=jnp.int32)  # [K]
    index = jnp.maximum(frame[..., None] - back, start[..., None]) % state.frames.shape[0]  # [..., K]
    stacks = state.frames[index, env[..., None]]  # [..., K, D]
    return stacks.reshape(refs.shape[:-1] + (-1,))


def frames_per_env_for(capacity: int, num_envs: int, num_frames: int, n_step: int = 1) -> int:
    """Ring length F per env such that every row of a replay buffer of ``capacity`` rows stays readable.

    A row can only still be in the buffer if fewer than ``capacity`` rows were written after it. Each env gives a
    transition at least every other call (an episode lasts at least one step, its reset call gives none), so
    N envs write at least N * floor((m - n) / 2) rows in m calls (n-step rows leave their window up to n calls
    late): a row in the buffer refers to frames at most 2 * ceil(capacity / N) + 2n + K + 2 calls old.
    """
    return 2 * math.ceil(capacity / num_envs) + 2 * n_step + num_frames + 2


def make_frame_store(num_envs: int, num_frames: int, frames_per_env: int, frame_size: int = 128) -> FrameStore:
    """Bind the sizes (validated: ValueError naming the argument); ``frames_per_env`` >= ``num_frames``."""
    check_int("num_envs", num_envs)
    num_frames = check_int("num_frames", num_frames)
    frames_per_env = check_int("frames_per_env", frames_per_env, num_frames)
    frame_size = check_int("frame_size", frame_size)
    return FrameStore(
        init=functools.partial(init, frames_per_env=frames_per_env, frame_size=frame_size),
        push=functools.partial(push, frame_size=frame_size),
        gather=functools.partial(gather, num_frames=num_frames),
        num_frames=num_frames,
        frames_per_env=frames_per_env,
    )
