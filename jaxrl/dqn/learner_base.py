"""What every learner shares (`jaxrl.dqn.learner`'s DQN, `jaxrl.dqn.pqn`'s PQN): the ``Learner`` interface, a
call's episode bookkeeping, the hold of an inactive call, and the "update now?" condition under ``vmap`` over seeds.

A learner is ``init(key, obs_0 [N, D]) -> (state, actions_0 [N])`` and ``step(state, obs_t, reward_t, terminated_t,
truncated_t, life_lost_t=None, active_t=None) -> (state, actions_t, metrics)``; its state has ``dqn`` (the
agent: ``dqn.params`` act and evaluate), ``done_tm1`` [N] and ``env_steps`` (), which the run shells read.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    from jaxrl.dqn.config import DQNConfig


class Learner(NamedTuple):
    """`init(key, obs_0) -> (state, actions_0)` and `step(state, obs, reward, terminated, truncated)`."""

    init: Callable[..., tuple[Any, jax.Array]]
    step: Callable[..., tuple[Any, jax.Array, dict]]
    dqn: Any  # the agent's pure functions (`jaxrl.dqn.agent.DQN`: dqn.act / dqn.q_values for evaluation)
    replay: Any  # the replay buffer's pure functions (DQN), or None (PQN)
    epsilon: Callable[[jax.Array], jax.Array]  # env_steps -> ε
    num_envs: int  # N
    num_actions: int  # A
    axis_name: str | None  # vmap axis name over seeds that `step` reduces over, or None


class Episodes(NamedTuple):
    """One call's episode bookkeeping (`track_episodes`), all [N]."""

    done: jax.Array  # bool: an episode ended at this call
    finished_return: jax.Array  # float32: return of the episode that ended (0 elsewhere)
    finished_length: jax.Array  # int32: its length in steps (0 elsewhere)
    running_return: jax.Array  # float32: return of the running episode after this call (0 after an end)
    running_length: jax.Array  # int32


def track_episodes(episode_return, episode_length, valid, reward_t, terminated_t, truncated_t) -> Episodes:
    """Add this call's [N] rewards to the running episodes; a reset row (``~valid``) starts a new one at 0 and
    counts nothing."""
    episode_return = episode_return + jnp.where(valid, reward_t, 0.0)
    episode_length = episode_length + valid.astype(jnp.int32)
    done = valid & (terminated_t.astype(bool) | truncated_t.astype(bool))
    return Episodes(done, jnp.where(done, episode_return, 0.0), jnp.where(done, episode_length, 0),
                    jnp.where(done, 0.0, episode_return), jnp.where(done, 0, episode_length))


def episode_metrics(episodes: Episodes) -> dict:
    """The per-env [N] metrics every learner's step returns: episode_done, episode_return, episode_length."""
    return dict(episode_done=episodes.done, episode_return=episodes.finished_return,
                episode_length=episodes.finished_length)


def hold_if_inactive(active_t: jax.Array, old, new, actions_t: jax.Array, names: tuple[str, ...]):
    """``new`` where ``active_t`` (() bool), else ``old``'s fields ``names`` (the rest taken from ``new``: what an
    inactive call cannot have changed, such as a buffer it wrote nothing to) and ``old.action_tm1``."""
    keep = lambda n, o: jnp.where(active_t, n, o)  # noqa: E731
    held = new._replace(**{name: jax.tree.map(keep, getattr(new, name), getattr(old, name)) for name in names})
    return held, keep(actions_t, old.action_tm1)


def cond_over_seeds(ready: jax.Array, run: Callable[[], Any], skip: Callable[[], Any], axis_name: str | None):
    """``lax.cond(ready, run, skip)``; with ``axis_name`` (vmapped over seeds) ``run`` is taken when any seed is
    ready (a real cond, not a select that computes ``run`` every call), and the seeds not ready get ``skip``'s
    outputs. ``run`` and ``skip`` return the same tree."""
    if axis_name is None:
        return jax.lax.cond(ready, run, skip)

    def run_where_ready():
        return jax.tree.map(lambda new, old: jnp.where(ready, new, old), run(), skip())

    any_ready = jax.lax.psum(ready.astype(jnp.int32), axis_name) > 0
    return jax.lax.cond(any_ready, run_where_ready, skip)


def stored_reward(reward_t: jax.Array, config: DQNConfig) -> jax.Array:
    """The reward a learner regresses on: ``reward_scale`` times the env's reward, its sign (``clip_rewards``) or
    its symlog ``sign(r) * log(1 + |r|)`` (``symlog_rewards``). [...] -> [...] float32."""
    reward_t = jnp.asarray(reward_t, jnp.float32)
    if config.clip_rewards:
        reward_t = jnp.sign(reward_t)
    elif config.symlog_rewards:
        reward_t = jnp.sign(reward_t) * jnp.log1p(jnp.abs(reward_t))
    return config.reward_scale * reward_t
