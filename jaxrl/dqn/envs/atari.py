"""What the env backends share (no JAX, no envpool import): the Atari RAM size, env ids, envpool's Atari
settings, and the `XlaEnv` interface that the compiled loop, frame stacking and the toy env are written to.

Every env here plays by envpool's Atari rules: sticky actions per frame, a uniform [1, noop_max] number of
no-op frames after each reset, full-game episodes (no life-loss terminals, no FIRE on reset), unclipped
rewards, the minimal action set, truncation after ``max_episode_frames // frame_skip`` agent steps.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

NUM_RAM_BYTES = 128  # an Atari 2600's RAM: what one env observes per stacked snapshot


class XlaEnv(NamedTuple):
    """M envs with a jit-able step (next-step auto-reset).

    reset() runs on the host and returns (env_state, obs_0 [M, 128] uint8); step(env_state, actions [M] int32)
    -> (env_state, (obs [M, 128] uint8, reward [M] float32, terminated [M] bool, truncated [M] bool,
    life_lost [M] bool)); life_lost: the step lost a life (never on an auto-reset row).
    """

    reset: Callable[[], tuple[Any, Any]]
    step: Callable[[Any, Any], tuple[Any, tuple]]
    num_envs: int  # M
    num_actions: int  # A
    close: Callable[[], None]


def gymnasium_env_id(env_id: str) -> str:
    """envpool's ``"SpaceInvaders-v5"`` -> gymnasium's ``"ALE/SpaceInvaders-v5"``."""
    return env_id if env_id.startswith("ALE/") else f"ALE/{env_id}"


def envpool_env_id(env_id: str) -> str:
    """gymnasium's ``"ALE/SpaceInvaders-v5"`` -> envpool's ``"SpaceInvaders-v5"``."""
    return env_id[len("ALE/"):] if env_id.startswith("ALE/") else env_id


def max_episode_steps(max_episode_frames: int, frame_skip: int) -> int:
    """Agent steps after which an episode is truncated."""
    return max(1, int(max_episode_frames) // int(frame_skip))


def envpool_kwargs(env_id: str, num_envs: int, seed: int, *, frame_skip: int, repeat_action_probability: float,
                   noop_max: int, max_episode_frames: int, render: bool = False, num_threads: int = 0) -> dict:
    """Arguments of ``envpool.make`` for ``num_envs`` envs under the rules above (env i seeded ``seed + i``).

    Sync mode (``batch_size == num_envs``): every call steps all envs and rows come back in env-id order. The
    RAM is read from ``info["ram"]``, so the image is one 8x8 grey frame unless ``render`` asks for RGB.
    """
    image = dict(img_height=210, img_width=160, gray_scale=False) if render else \
        dict(img_height=8, img_width=8, gray_scale=True)
    return dict(
        task_id=envpool_env_id(env_id), env_type="gymnasium", num_envs=int(num_envs), batch_size=int(num_envs),
        num_threads=int(num_threads), seed=int(seed), frame_skip=int(frame_skip),
        repeat_action_probability=float(repeat_action_probability),
        noop_max=int(noop_max),  # envpool: uniform in [1, noop_max] no-op frames after reset
        max_episode_steps=max_episode_steps(max_episode_frames, frame_skip), stack_num=1, episodic_life=False,
        reward_clip=False, use_fire_reset=False, full_action_space=False, **image,
    )
