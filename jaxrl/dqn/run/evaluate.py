"""Evaluate and watch a DQN agent: ε-greedy returns (mean ± std) and ``play`` to an MP4 or GIF.

    params, config, step = load_params("checkpoints/my-run")      # latest checkpoint ("best" or a step too)
    returns = evaluate_returns(config, params, episodes=10, epsilon=0.05, seed=1)
    play(config, params, "agent.mp4", episodes=1)

``params=None`` everywhere means the uniformly random agent (the baseline, ≈148 on SpaceInvaders).
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from jaxrl.dqn.agent import make_dqn
from jaxrl.dqn.config import DQNConfig
from jaxrl.dqn.envs.host import make_env_from_config
from jaxrl.dqn.learner import abstract_learner_state, abstract_learner_states, make_learner
from jaxrl.dqn.run import checkpoint as ckpt
from jaxrl.dqn.run.run_dir import load_run_config

MAX_PARALLEL_EPISODES = 16


def load_params(run_dir: str | os.PathLike, which: int | str = "latest", *, agent: int | None = None,
                warn: Callable[[str], None] | None = None) -> tuple[Any, DQNConfig, int]:
    """Online Q-network params of checkpoint ``which`` (``"latest"``, ``"best"`` or a step) of a run; of a
    multi-seed run (``num_seeds`` > 1), those of agent ``agent``, with that agent's config (its seed).

    A damaged ``"latest"`` / ``"best"`` checkpoint falls back to the newest readable one, with one line per
    damaged checkpoint to ``warn`` (default: ``warning: ...`` on stderr); a damaged step asked for by number is
    a ``DamagedCheckpointError`` (see ``jaxrl.dqn.run.checkpoint``).

    Returns:
        (params, config, step).
    """
    config = load_run_config(run_dir)
    if config.num_seeds == 1 and agent not in (None, 0):
        raise ValueError(f"{run_dir} holds one agent: --agent must be 0 or left out, got {agent}")
    if config.num_seeds > 1 and agent is None:
        raise ValueError(f"{run_dir} holds {config.num_seeds} agents: choose one with --agent 0..{config.num_seeds - 1}")
    if config.num_seeds > 1:
        config.for_agent(agent)  # checks the range before anything is read
    agents, step = load_agents(run_dir, which, warn=warn)
    return (*agents[agent or 0], step)


def load_agents(run_dir: str | os.PathLike, which: int | str = "latest", *,
                warn: Callable[[str], None] | None = None) -> tuple[list[tuple[Any, DQNConfig]], int]:
    """Every agent of checkpoint ``which`` of a run (one, or ``num_seeds``): ``([(params, config), ...], step)``,
    read with one restore (see ``load_params``)."""
    config = load_run_config(run_dir)
    if not ckpt.checkpoint_dir(run_dir).is_dir():
        raise FileNotFoundError(f"no checkpoints in {run_dir}: train it first (jaxrl dqn train --run-dir {run_dir})")
    probe = make_env_from_config(config, num_envs=1, seed=0)
    num_actions = probe.num_actions
    probe.close()
    learner = make_learner(config, num_actions)
    abstract = (abstract_learner_states(learner, config) if config.num_seeds > 1  # leaves [S, ...]
                else abstract_learner_state(learner, config))
    manager = ckpt.open_manager(run_dir, config.keep_checkpoints, read_only=True)
    try:
        state, _, _, step = ckpt.restore_checkpoint(manager, abstract, config, step=which,
                                                    warn=warn or _warn_on_stderr)
    finally:
        manager.close()
    if config.num_seeds == 1:
        return [(state.dqn.params, config)], step
    return [(jax.tree.map(lambda x: x[i], state.dqn.params), config.for_agent(i))
            for i in range(config.num_seeds)], step


def _warn_on_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _policy(config: DQNConfig, params, num_actions: int, epsilon: float, seed: int, act=None):
    """``policy(obs [N,128] uint8) -> actions [N]``: the core's ε-greedy ``act``, uniform random (``params`` None),
    or ``act(params, obs, key) -> actions`` when given (another learner's frozen policy:
    `jaxrl.dqn.ppo.act`)."""
    if params is None:
        rng = np.random.default_rng(seed)
        return lambda obs: rng.integers(0, num_actions, size=len(obs)).astype(np.int32)
    if act is None:
        dqn_act = make_dqn(config, num_actions).act
        act = lambda params, obs, key: dqn_act(params, obs, key, np.float32(epsilon))  # noqa: E731
    act = jax.jit(act)
    key = jax.random.PRNGKey(seed)

    def policy(obs):
        nonlocal key
        key, act_key = jax.random.split(key)
        return np.asarray(act(params, obs, act_key))

    return policy


def evaluate_returns(config: DQNConfig, params, episodes: int, *, epsilon: float = 0.05, seed: int = 0,
                     num_actions: int | None = None, backend: str | None = None) -> np.ndarray:
    """Undiscounted returns of ``episodes`` full episodes with an ε-greedy policy (``params=None``: random).

    Each env of a batch of up to 16 plays exactly one episode (no bias towards short episodes).

    Args:
        config: env settings (and hidden sizes) of the agent.
        params: QNetwork params, or None for uniformly random actions over all actions.
        episodes: number of episodes (>= 1).
        epsilon: probability of a random action (0: greedy).
    Returns:
        returns: [episodes] float64.
    """
    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    if not 0.0 <= float(epsilon) <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon!r}")
    if backend is not None:
        config = config.replace(backend=backend)
    returns: list[float] = []
    batch_index = 0
    while len(returns) < episodes:
        n = min(MAX_PARALLEL_EPISODES, episodes - len(returns))
        env = make_env_from_config(config, num_envs=n, seed=seed + 1000 * batch_index)
        try:
            policy = _policy(config, params, env.num_actions if num_actions is None else num_actions, epsilon,
                             seed + batch_index)
            obs = env.reset()
            total = np.zeros(n)
            finished = np.zeros(n, bool)
            while not finished.all():
                obs, reward, terminated, truncated = env.step(policy(obs))
                total += np.where(finished, 0.0, reward)
                finished |= terminated | truncated
            returns.extend(total.tolist())
        finally:
            env.close()
        batch_index += 1
    return np.asarray(returns, dtype=np.float64)


def format_returns(returns: np.ndarray) -> str:
    """``"mean ± std over N episodes (min .., max ..)"``."""
    returns = np.asarray(returns, dtype=np.float64)
    return (f"{returns.mean():.1f} ± {returns.std():.1f} over {returns.size} episodes "
            f"(min {returns.min():.0f}, max {returns.max():.0f})")


def _overlay(frame: np.ndarray, text: str, scale: int) -> np.ndarray:
    """Upscale ``frame`` [H, W, 3] uint8 by ``scale`` and write ``text`` in a bar above it."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(frame).resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST)
    bar_height = 12 * scale
    canvas = Image.new("RGB", (image.width, image.height + bar_height), (0, 0, 0))
    canvas.paste(image, (0, bar_height))
    ImageDraw.Draw(canvas).text((4, 2), text, fill=(255, 255, 255))
    return np.asarray(canvas)


def play(config: DQNConfig, params, video_path: str | os.PathLike, *, episodes: int = 1, epsilon: float = 0.05,
         seed: int = 0, fps: int = 30, scale: int = 2, max_steps: int | None = None, act=None) -> list[float]:
    """Render ``episodes`` episodes of the agent (``params=None``: random) to an MP4 or GIF with a score bar.

    Args:
        config: the env settings (and, without ``act``, the Q-network) of the agent.
        video_path: ``*.mp4`` (imageio-ffmpeg) or ``*.gif``.
        max_steps: stop each episode after this many agent steps (None: play to the end).
        act: ``act(params, obs, key) -> actions``, the frozen policy of another learner (PPO) on the same
          envs; None: the DQN agent's ε-greedy policy at ``epsilon``.
    Returns:
        the return of each episode.
    """
    import imageio.v2 as imageio

    video_path = Path(video_path)
    suffix = video_path.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise ValueError(f"video file must end in .mp4 or .gif, got {video_path.name!r}")
    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    video_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = video_path.with_name(video_path.stem + ".partial" + suffix)
    if suffix == ".mp4":
        writer = imageio.get_writer(tmp_path, fps=fps, macro_block_size=1, codec="libx264", quality=7)
    else:
        writer = imageio.get_writer(tmp_path, mode="I", duration=1000 / fps, loop=0)
    # imageio-ffmpeg starts ffmpeg with subprocess; Python warns about fork() in a process that runs JAX
    # threads, which is harmless here (the child execs ffmpeg at once).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        returns = _play_episodes(config, params, writer, tmp_path, episodes, epsilon, seed, scale, max_steps, act)
    os.replace(tmp_path, video_path)
    return returns


def _play_episodes(config, params, writer, tmp_path, episodes, epsilon, seed, scale, max_steps, act) -> list[float]:
    """Write ``episodes`` rendered episodes to ``writer`` (closed here; ``tmp_path`` removed on error)."""
    returns = []
    try:
        for episode in range(episodes):
            env = make_env_from_config(config, num_envs=1, seed=seed + episode, render=True)
            try:
                policy = _policy(config, params, env.num_actions, epsilon, seed + episode, act)
                obs = env.reset()
                score, steps, done = 0.0, 0, False
                while not done and (max_steps is None or steps < max_steps):
                    writer.append_data(_overlay(env.render()[0], f"episode {episode + 1}  score {score:.0f}", scale))
                    obs, reward, terminated, truncated = env.step(policy(obs))
                    score += float(reward[0])
                    steps += 1
                    done = bool(terminated[0] or truncated[0])
                writer.append_data(_overlay(env.render()[0], f"episode {episode + 1}  score {score:.0f}"
                                            + ("  (game over)" if done else ""), scale))
                returns.append(score)
            finally:
                env.close()
    except BaseException:
        writer.close()
        tmp_path.unlink(missing_ok=True)
        raise
    writer.close()
    return returns
