"""The whole DQN training loop compiled by XLA: `lax.scan` of (env step -> `learner.step`) for K env steps.

Each call of `run` is one jitted function that steps the envs (envpool's XLA custom call, or any `XlaEnv`),
stores transitions, updates and acts K times with no host round-trip; the host only logs between calls:

    env = make_envpool_xla_env(num_envs=8, seed=0)
    learner = make_learner(preset("seed", num_envs=8), env.num_actions)
    loop = make_xla_loop(learner, env, steps_per_call=1_000)
    loop_state = loop.init(jax.random.key(0))
    for _ in range(100):
        loop_state, metrics = loop.run(loop_state)        # metrics leaves [K, ...]
        print(summarize(metrics))

Seeds: `make_xla_loop(..., num_seeds=S)` with a learner built with `axis_name="seed"` and one env of S * N envs
runs S independent agents (own params, buffer, keys and envs) under `jax.vmap(learner.step)`; observations
[S * N, 128] are reshaped to [S, N, 128]. This is PureJaxRL's "whole run under jit, vmap over seeds" with the
envs in envpool's C++ threads instead of in JAX.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl.dqn.envs.atari import XlaEnv
from jaxrl.dqn.learner import Learner, LearnerState


class LoopState(NamedTuple):
    """Carry of the compiled loop."""

    learner: LearnerState  # leaves [S, ...] when vmapped over S seeds
    env_state: Any  # the XlaEnv's state (envpool: (handle [8] uint8, lives [M] int32))
    actions: jax.Array  # [N] or [S, N] int32, actions to send at the next env step


class XlaLoop(NamedTuple):
    """`init(key) -> LoopState` (resets the envs on the host), jitted `run(LoopState) -> (LoopState, metrics)`
    and jitted `run_until(LoopState, pause_at, stop_at) -> (LoopState, metrics, num_calls)` (one agent only)."""

    init: Callable[[jax.Array], LoopState]
    run: Callable[[LoopState], tuple[LoopState, dict]]
    run_until: Callable[[LoopState, jax.Array, jax.Array], tuple[LoopState, dict, jax.Array]]
    steps_per_call: int  # K
    num_seeds: int | None  # S, or None for one unbatched agent


def _scan_body(loop_state: LoopState, _, *, learner: Learner, env: XlaEnv, num_seeds: int | None):
    """One env step of all envs and one `learner.step` (per seed)."""
    env_state, (obs, reward, terminated, truncated, life_lost) = env.step(
        loop_state.env_state, loop_state.actions.reshape(env.num_envs)
    )
    if num_seeds is None:
        learner_state, actions, metrics = learner.step(
            loop_state.learner, obs, reward, terminated, truncated, life_lost
        )
    else:
        per_seed = lambda x: x.reshape((num_seeds, learner.num_envs) + x.shape[1:])  # noqa: E731
        learner_state, actions, metrics = jax.vmap(learner.step, axis_name=learner.axis_name)(
            loop_state.learner, per_seed(obs), per_seed(reward), per_seed(terminated), per_seed(truncated),
            per_seed(life_lost),
        )
    return LoopState(learner_state, env_state, actions), metrics


def _run(loop_state: LoopState, *, body, steps_per_call: int) -> tuple[LoopState, dict]:
    """K scan steps; metrics of every step stacked, leaves [K, ...]."""
    return jax.lax.scan(body, loop_state, None, length=steps_per_call)


def _boundary_body(loop_state: LoopState, stop_at: jax.Array, *, learner: Learner, env: XlaEnv):
    """`_scan_body` for one agent, whose call becomes a segment boundary once `stop_at` env steps are due.

    The boundary rule is the Python loop's (`jaxrl.dqn.run.train`): the call that would bring `env_steps` to
    `stop_at` or beyond reports every env as truncated (bootstrapped, never terminal); `forced` [N] marks the
    episodes that only ended because of this cut.
    """
    state = loop_state.learner
    expected = state.env_steps + jnp.sum(~state.done_tm1, dtype=jnp.int32)
    env_state, (obs, reward, terminated, truncated, life_lost) = env.step(loop_state.env_state, loop_state.actions)
    cut = expected >= stop_at
    forced = cut & ~state.done_tm1 & ~(terminated | truncated)
    learner_state, actions, metrics = learner.step(state, obs, reward, terminated, truncated | cut, life_lost)
    return LoopState(learner_state, env_state, actions), dict(metrics, cut=cut, forced=forced)


def _run_until(loop_state: LoopState, pause_at: jax.Array, stop_at: jax.Array, *, body, max_calls: int):
    """At most `max_calls` calls of `body` in a `lax.while_loop`, ending early after the call that reaches
    `pause_at` env steps (a host logging point) or that is a segment boundary (`stop_at`, see `_boundary_body`).

    Returns:
      (loop_state, metrics with leaves [max_calls, ...] of which rows [0, num_calls) are filled, num_calls ()).
    """
    pause_at = jnp.asarray(pause_at, jnp.int32)
    stop_at = jnp.asarray(stop_at, jnp.int32)
    example = jax.eval_shape(body, loop_state, stop_at)[1]
    buffers = jax.tree.map(lambda m: jnp.zeros((max_calls,) + m.shape, m.dtype), example)

    def go_on(carry):
        calls, state, _, was_cut = carry
        paused = (calls > 0) & (state.learner.env_steps >= pause_at)
        return (calls < max_calls) & ~was_cut & ~paused

    def one_call(carry):
        calls, state, buffers, _ = carry
        state, metrics = body(state, stop_at)
        buffers = jax.tree.map(lambda buffer, value: buffer.at[calls].set(value), buffers, metrics)
        return calls + 1, state, buffers, metrics["cut"]

    carry = (jnp.zeros((), jnp.int32), loop_state, buffers, jnp.zeros((), bool))
    num_calls, loop_state, buffers, _ = jax.lax.while_loop(go_on, one_call, carry)
    return loop_state, buffers, num_calls


def _seeds_not_supported(*_):
    raise ValueError("run_until runs one agent: build the loop with num_seeds=None.")


def make_xla_loop(
    learner: Learner, env: XlaEnv, steps_per_call: int, num_seeds: int | None = None, donate: bool = True
) -> XlaLoop:
    """Compile the training loop of `learner` on `env`.

    Args:
      learner: from `make_learner(config, A)` (config.num_envs = N); with num_seeds, built with `axis_name` set (e.g. "seed").
      env: XlaEnv with M = N (or S * N) envs and A actions.
      steps_per_call: K env steps (K * M transitions) per call of `run`.
      num_seeds: S independent agents, or None.
      donate: donate the LoopState to `run` (the replay buffers are updated in place).

    Returns:
      XlaLoop(init, run, run_until, steps_per_call, num_seeds). `run_until(loop_state, pause_at, stop_at)`
      (one agent) makes at most K calls and also ends after the call that reaches `pause_at` env steps or that
      is a segment boundary (the call due to reach `stop_at` env steps: every env reported truncated);
      `jaxrl dqn train --loop xla` runs on it.

    Raises:
      ValueError if the sizes of learner and env disagree.
    """
    if isinstance(steps_per_call, bool) or not isinstance(steps_per_call, (int, np.integer)) or steps_per_call < 1:
        raise ValueError(f"steps_per_call must be a positive int, got {steps_per_call!r}.")
    if num_seeds is not None:
        if isinstance(num_seeds, bool) or not isinstance(num_seeds, (int, np.integer)) or num_seeds < 1:
            raise ValueError(f"num_seeds must be a positive int or None, got {num_seeds!r}.")
        if learner.axis_name is None:
            raise ValueError("num_seeds needs a learner built with make_learner(config, num_actions, axis_name='seed').")
    elif learner.axis_name is not None:
        raise ValueError(f"learner has axis_name={learner.axis_name!r} but num_seeds is None.")
    seeds = 1 if num_seeds is None else int(num_seeds)
    if env.num_envs != seeds * learner.num_envs:
        raise ValueError(
            f"env has {env.num_envs} envs but the loop needs num_seeds * learner.num_envs = "
            f"{seeds} * {learner.num_envs} = {seeds * learner.num_envs}."
        )
    if env.num_actions != learner.num_actions:
        raise ValueError(f"env has {env.num_actions} actions, learner {learner.num_actions}.")

    body = functools.partial(_scan_body, learner=learner, env=env, num_seeds=num_seeds)
    run = jax.jit(
        functools.partial(_run, body=body, steps_per_call=int(steps_per_call)),
        donate_argnums=0 if donate else (),
    )

    if num_seeds is None:
        boundary_body = functools.partial(_boundary_body, learner=learner, env=env)
        run_until = jax.jit(
            functools.partial(_run_until, body=boundary_body, max_calls=int(steps_per_call)),
            donate_argnums=0 if donate else (),
        )
    else:
        run_until = _seeds_not_supported

    def init(key: jax.Array) -> LoopState:
        """Reset the envs (host) and build the learner state(s); one key per seed, split from `key`."""
        env_state, obs_0 = env.reset()
        if num_seeds is None:
            learner_state, actions = jax.jit(learner.init)(key, obs_0)
        else:
            obs_0 = obs_0.reshape((seeds, learner.num_envs) + obs_0.shape[1:])
            learner_state, actions = jax.jit(jax.vmap(learner.init))(jax.random.split(key, seeds), obs_0)
        return LoopState(learner=learner_state, env_state=env_state, actions=actions)

    return XlaLoop(init=init, run=run, run_until=run_until, steps_per_call=int(steps_per_call), num_seeds=num_seeds)


def summarize(metrics: dict) -> dict[str, float]:
    """Host-side summary of one `run`'s stacked metrics (leaves [K, ...] or [K, S, ...]), over all seeds.

    Returns:
      episodes (ended in this call), mean_return / mean_length of those (nan if none), loss / q_mean averaged
      over the steps that updated (nan if none), updates (steps that updated), and the last epsilon, env_steps
      and num_updates (summed over seeds).
    """
    metrics = jax.device_get(metrics)
    done = np.asarray(metrics["episode_done"], bool)
    did_update = np.asarray(metrics["did_update"], bool)
    mean_over = lambda x, mask: float(np.asarray(x)[mask].mean()) if mask.any() else float("nan")  # noqa: E731
    return dict(
        episodes=int(done.sum()),
        mean_return=mean_over(metrics["episode_return"], done),
        mean_length=mean_over(metrics["episode_length"], done),
        loss=mean_over(metrics["loss"], did_update),
        q_mean=mean_over(metrics["q_mean"], did_update),
        updates=int(did_update.sum()),
        epsilon=float(np.mean(np.asarray(metrics["epsilon"])[-1])),
        env_steps=int(np.sum(np.asarray(metrics["env_steps"])[-1])),
        num_updates=int(np.sum(np.asarray(metrics["num_updates"])[-1])),
    )
