"""Vectorised Atari environments that return the 128-byte RAM, on envpool or gymnasium (ale-py).

Both backends give the same interface and the same **next-step auto-reset** semantics (envpool's own): when
env ``i`` returns ``terminated | truncated`` at call ``k``, its result at call ``k + 1`` is the first
observation of a new episode, with reward 0, ``terminated = truncated = False``, and the action passed at call
``k + 1`` is ignored. The learner masks that (last obs -> reset obs) pair out of the replay buffer.

Atari settings, the same on both backends (``DQNConfig`` fields, defaults in brackets):

- ``frame_skip`` [4]: each action is repeated for 4 emulator frames, rewards summed;
- ``repeat_action_probability`` [0.25]: sticky actions, per frame, inside ALE (ALE v5 standard);
- ``noop_max`` [30]: after each reset, a uniform random number in [1, noop_max] of no-op *frames* (envpool's
  built-in no-op reset draws exactly that; gymnasium: ``EnvpoolLikeAtari`` below does the same through the ALE
  interface); ``noop_max=1`` is a fixed single no-op frame;
- ``max_episode_frames`` [108,000 = 30 min of play]: after ``max_episode_frames // frame_skip`` agent steps
  (not counting the no-ops) the episode is *truncated* (bootstrapped, not terminal);
- minimal action set (6 actions for SpaceInvaders), full game episodes (no life-loss terminals), no FIRE on
  reset, rewards unclipped (the learner scales them by ``reward_scale``).

envpool has no RAM observation type: it is read from ``info["ram"]`` and the image part is kept minimal
(one 8x8 grey frame) unless rendering is asked.
"""
from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from jaxrl.dqn.config import check_int
from jaxrl.dqn.envs import frame_stack as _frame_stack
from jaxrl.dqn.envs.atari import envpool_kwargs, gymnasium_env_id, max_episode_steps


def envpool_available() -> bool:
    """Whether ``import envpool`` would succeed (without importing it)."""
    return importlib.util.find_spec("envpool") is not None


def resolve_backend(backend: str) -> str:
    """``"auto"`` -> ``"envpool"`` when installed, else ``"gymnasium"``; checks an explicit choice."""
    if backend == "auto":
        return "envpool" if envpool_available() else "gymnasium"
    if backend == "envpool":
        if not envpool_available():
            raise ValueError("backend='envpool' was asked but envpool is not installed "
                             "(pip install envpool, Linux x86_64 only); use --backend gymnasium")
        return backend
    if backend == "gymnasium":
        return backend
    raise ValueError(f"backend must be 'auto', 'envpool' or 'gymnasium', got {backend!r}")


class RamVecEnv:
    """N Atari envs stepped together; observations are RAM ``[N, 128] uint8``.

    Attributes:
        num_envs, num_actions, backend, action_meanings.
    Methods:
        reset() -> obs [N, 128] uint8 (resets every env).
        step(actions [N] int) -> (obs [N, 128] uint8, reward [N] float32, terminated [N] bool,
            truncated [N] bool), with next-step auto-reset (module docstring).
        render() -> frames [N, 210, 160, 3] uint8 of the last reset/step (only with ``render=True``).
        close().
        life_lost: [N] bool after each ``step``: the env lost a life at that step (Atari ``lives`` went down;
            never on an auto-reset row); all False after ``reset``.
    """

    num_envs: int
    num_actions: int
    backend: str
    life_lost: np.ndarray
    _lives: np.ndarray

    def _track_lives(self, lives, *, reset: bool = False) -> None:
        """Update ``life_lost`` from the ``lives`` [N] of the latest result (``reset``: nothing was lost; an
        auto-reset row has its lives back up, so it never counts as a loss either)."""
        lives = np.asarray(lives, np.int64).reshape(self.num_envs)
        self.life_lost = np.zeros(self.num_envs, bool) if reset else lives < self._lives
        self._lives = lives

    def reset(self) -> np.ndarray:
        raise NotImplementedError

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def render(self) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class EnvpoolRamVecEnv(RamVecEnv):
    """envpool backend: RAM from ``info["ram"]``; env ``i`` is seeded with ``seed + i``."""

    backend = "envpool"

    def __init__(self, env_id, num_envs, seed, *, frame_skip, repeat_action_probability, noop_max,
                 max_episode_frames, render=False):
        import envpool

        self._env = envpool.make(**envpool_kwargs(
            env_id, num_envs, seed, frame_skip=frame_skip, repeat_action_probability=repeat_action_probability,
            noop_max=noop_max, max_episode_frames=max_episode_frames, render=render))
        self.num_envs = num_envs
        self.num_actions = int(self._env.action_space.n)
        self._render = render
        self._frames = None

    def _unpack_obs(self, obs, info):
        if self._render:
            self._frames = np.ascontiguousarray(np.moveaxis(np.asarray(obs)[:, -3:], 1, -1))
        return np.asarray(info["ram"], dtype=np.uint8)

    def reset(self):
        obs, info = self._env.reset()
        self._track_lives(info["lives"], reset=True)
        return self._unpack_obs(obs, info)

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.int32).reshape(self.num_envs)
        obs, reward, terminated, truncated, info = self._env.step(actions)
        self._track_lives(info["lives"])
        ram = self._unpack_obs(obs, info)
        return (ram, np.asarray(reward, np.float32), np.asarray(terminated, bool), np.asarray(truncated, bool))

    def render(self):
        if not self._render:
            raise ValueError("this env was made without render=True")
        return self._frames

    def close(self):
        self._env.close()


def _atari_reset_wrapper():
    import gymnasium as gym

    class EnvpoolLikeAtari(gym.Wrapper):
        """envpool's Atari episode rules on a gymnasium ALE env: after each reset a uniform random number in
        [1, noop_max] of no-op *frames* (ALE ``act(0)``), and truncation after ``max_episode_steps`` agent
        steps counted from the end of the no-ops (ALE's own frame limit is set beyond it)."""

        def __init__(self, env, noop_max: int, max_episode_steps: int):
            super().__init__(env)
            self.noop_max = int(noop_max)
            self.max_episode_steps = int(max_episode_steps)
            self._rng = np.random.default_rng()
            self._elapsed_steps = 0

        def reset(self, *, seed=None, options=None):
            obs, info = self.env.reset(seed=seed, options=options)
            if seed is not None:
                self._rng = np.random.default_rng(seed)
            ale = self.env.unwrapped.ale
            for _ in range(int(self._rng.integers(1, self.noop_max + 1))):
                ale.act(0)
                if ale.game_over():  # cannot happen in SpaceInvaders' first frames; as envpool does
                    ale.reset_game()
            self._elapsed_steps = 0
            return ale.getRAM().copy(), info

        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            self._elapsed_steps += 1
            truncated = bool(truncated) or (not terminated and self._elapsed_steps >= self.max_episode_steps)
            return obs, reward, terminated, truncated, info

    return EnvpoolLikeAtari


class GymnasiumRamVecEnv(RamVecEnv):
    """gymnasium + ale-py backend: ``ALE/<id>`` with ``obs_type="ram"`` in a ``SyncVectorEnv`` (next-step
    auto-reset); env ``i`` is seeded with ``seed + i`` at the first reset."""

    backend = "gymnasium"

    def __init__(self, env_id, num_envs, seed, *, frame_skip, repeat_action_probability, noop_max,
                 max_episode_frames, render=False):
        import ale_py
        import gymnasium as gym
        from gymnasium.vector import AutoresetMode, SyncVectorEnv

        gym.register_envs(ale_py)
        episode_rules = _atari_reset_wrapper()
        name = gymnasium_env_id(env_id)
        steps_limit = max_episode_steps(max_episode_frames, frame_skip)

        def make_one():
            env = gym.make(name, obs_type="ram", frameskip=frame_skip,
                           repeat_action_probability=float(repeat_action_probability),
                           max_num_frames_per_episode=int(max_episode_frames) + int(noop_max) + 4 * frame_skip,
                           full_action_space=False, render_mode="rgb_array" if render else None)
            return episode_rules(env, noop_max, steps_limit)

        self._env = SyncVectorEnv([make_one for _ in range(num_envs)], autoreset_mode=AutoresetMode.NEXT_STEP)
        self.num_envs = num_envs
        self.num_actions = int(self._env.single_action_space.n)
        self._render = render
        self._seed = int(seed)
        self._seeded = False

    def reset(self):
        seed = None if self._seeded else self._seed
        self._seeded = True
        obs, info = self._env.reset(seed=seed)
        self._track_lives(info["lives"], reset=True)
        return np.asarray(obs, dtype=np.uint8)

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
        obs, reward, terminated, truncated, info = self._env.step(actions)
        self._track_lives(info["lives"])
        return (np.asarray(obs, np.uint8), np.asarray(reward, np.float32), np.asarray(terminated, bool),
                np.asarray(truncated, bool))

    def render(self):
        if not self._render:
            raise ValueError("this env was made without render=True")
        return np.stack([env.render() for env in self._env.envs])

    def close(self):
        self._env.close()


def make_vec_env(num_envs: int, seed: int, *, env_id: str = "SpaceInvaders-v5", backend: str = "auto",
                 frame_skip: int = 4, repeat_action_probability: float = 0.25, noop_max: int = 30,
                 max_episode_frames: int = 108_000, frame_stack: int = 1, render: bool = False) -> RamVecEnv:
    """N Atari envs returning RAM ``[N, 128] uint8``, with next-step auto-reset (module docstring).

    Args:
        num_envs: N >= 1. seed: env ``i`` is seeded with ``seed + i``.
        env_id: envpool id (``"SpaceInvaders-v5"``); ``"ALE/"`` is added for gymnasium.
        backend: ``"auto"`` | ``"envpool"`` | ``"gymnasium"``.
        frame_stack: k > 1 returns the last k RAM snapshots per env, ``[N, k * 128]``
            (``jaxrl.dqn.envs.frame_stack``).
        render: also keep RGB frames ``[N, 210, 160, 3]`` for ``render()`` (for ``play``).
    """
    num_envs = check_int("num_envs", num_envs)
    backend = resolve_backend(backend)
    cls = EnvpoolRamVecEnv if backend == "envpool" else GymnasiumRamVecEnv
    frame_stack = _frame_stack.check_frame_stack(frame_stack)  # before an env is made
    env = cls(env_id, num_envs, int(seed), frame_skip=frame_skip,
              repeat_action_probability=repeat_action_probability, noop_max=noop_max,
              max_episode_frames=max_episode_frames, render=render)
    return _frame_stack.stack_vec_env(env, frame_stack)


def make_env_from_config(config: Any, num_envs: int | None = None, seed: int | None = None, *,
                         render: bool = False) -> RamVecEnv:
    """``make_vec_env`` with a ``DQNConfig``'s env settings (``num_envs`` / ``seed``: the config's when None)."""
    return make_vec_env(config.num_envs if num_envs is None else num_envs, config.seed if seed is None else seed,
                        env_id=config.env_id, backend=config.backend, frame_skip=config.frame_skip,
                        repeat_action_probability=config.repeat_action_probability, noop_max=config.noop_max,
                        max_episode_frames=config.max_episode_frames, frame_stack=config.frame_stack, render=render)
