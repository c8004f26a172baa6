"""The ONE DQN training step, shared by the Python env loop and the compiled XLA loop.

`step` takes what N vectorised envs returned for the actions it chose last time and fuses, with no host
round-trip: store the valid transitions, maybe run `updates_per_call` DQN updates, pick the next actions.

Env semantics assumed (envpool and gymnasium's vector envs both give this): next-step auto-reset. When env i
returns terminated|truncated at call k, its result at call k+1 is the reset observation (the action sent was
ignored, reward 0). The pair (terminal obs -> reset obs) is not a transition: `done_tm1` masks it out of the
buffer. Truncation is never stored as terminal, so a time-limit cut is bootstrapped like any other step.

    learner = make_learner(num_envs=8, num_actions=6)
    state, actions = learner.init(key, obs_0)
    step = jax.jit(learner.step, donate_argnums=0)
    for _ in range(T):
        obs, reward, terminated, truncated = env.step(actions)
        state, actions, metrics = step(state, obs, reward, terminated, truncated)

Under `jax.vmap` over seeds, build with `make_learner(..., axis_name="seed")` and vmap with the same axis
name: the "run an update?" test is then reduced over seeds, so the update is a real `lax.cond` taken when any
seed is ready (seeds not ready keep their state), rather than a select that computes the update every call.
"""
from __future__ import annotations

import functools
import numbers
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jaxrl.dqn.agent import DQN, DQNState, epsilon_schedule, make_dqn
from jaxrl.dqn.nstep import NStep, NStepState, make_nstep
from jaxrl.dqn.prioritized import (
    PrioritizedReplayBuffer,
    PrioritizedReplayState,
    make_prioritized_replay_buffer,
)
from jaxrl.dqn.replay import ReplayBuffer, ReplayState, Transition, make_replay_buffer

NUM_RAM_BYTES = 128


class LearnerState(NamedTuple):
    """Agent, buffer and per-env bookkeeping carried between calls of `step`."""

    dqn: DQNState
    replay: ReplayState | PrioritizedReplayState  # uniform, or prioritized (`prioritized_replay`)
    obs_tm1: jax.Array  # [N, 128] uint8, last observation actions were chosen for
    action_tm1: jax.Array  # [N] int32, actions chosen for obs_tm1
    done_tm1: jax.Array  # [N] bool, env ended at the previous call -> this call's result is a reset
    episode_return: jax.Array  # [N] float32, running unscaled return of the current episode
    episode_length: jax.Array  # [N] int32, steps in the current episode
    key: jax.Array  # PRNG key
    env_steps: jax.Array  # () int32, transitions seen (valid rows, all envs)
    calls: jax.Array  # () int32, calls of `step`
    nstep: NStepState | None = None  # pending n-step windows (n_step > 1), else None


class Learner(NamedTuple):
    """`init(key, obs_0) -> (state, actions_0)` and `step(state, obs, reward, terminated, truncated)`."""

    init: Callable[..., tuple[LearnerState, jax.Array]]
    step: Callable[..., tuple[LearnerState, jax.Array, dict]]
    dqn: DQN  # the agent's pure functions (e.g. dqn.act / dqn.q_values for evaluation)
    replay: ReplayBuffer | PrioritizedReplayBuffer  # the buffer's pure functions
    epsilon: Callable[[jax.Array], jax.Array]  # env_steps -> ε
    num_envs: int  # N
    num_actions: int  # A
    axis_name: str | None  # vmap axis name over seeds that `step` reduces over, or None


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return int(value)


class _Config(NamedTuple):
    """Static settings bound into `init` / `step` by `make_learner` (never traced)."""

    dqn: DQN
    replay: ReplayBuffer | PrioritizedReplayBuffer
    prioritized: bool
    epsilon: Callable[[jax.Array], jax.Array]
    num_envs: int
    learning_starts: int
    update_every: int
    updates_per_call: int
    reward_scale: float
    clip_rewards: bool
    life_loss_terminal: bool
    nstep: NStep | None
    obs_size: int
    axis_name: str | None


def init(key: jax.Array, obs_0: jax.Array, *, config: _Config) -> tuple[LearnerState, jax.Array]:
    """Fresh agent and empty buffer; actions for the first observations.

    Args:
      key: PRNG key.
      obs_0: [N, obs_size] uint8 first observations (RAM, or k stacked RAM snapshots).

    Returns:
      (LearnerState, actions_0 [N] int32).
    """
    assert obs_0.shape == (config.num_envs, config.obs_size), obs_0.shape
    key, init_key, act_key = jax.random.split(key, 3)
    dqn_state = config.dqn.init(init_key)
    example = Transition(
        obs=jnp.zeros((config.obs_size,), jnp.uint8),
        action=jnp.zeros((), jnp.int32),
        reward=jnp.zeros((), jnp.float32),
        next_obs=jnp.zeros((config.obs_size,), jnp.uint8),
        terminated=jnp.zeros((), bool),
        discount=None if config.nstep is None else jnp.zeros((), jnp.float32),
    )
    env_steps = jnp.zeros((), jnp.int32)
    actions_0 = config.dqn.act(dqn_state.params, obs_0, act_key, config.epsilon(env_steps))
    state = LearnerState(
        dqn=dqn_state,
        replay=config.replay.init(example),
        obs_tm1=obs_0.astype(jnp.uint8),
        action_tm1=actions_0,
        done_tm1=jnp.zeros((config.num_envs,), bool),
        episode_return=jnp.zeros((config.num_envs,), jnp.float32),
        episode_length=jnp.zeros((config.num_envs,), jnp.int32),
        key=key,
        env_steps=env_steps,
        calls=jnp.zeros((), jnp.int32),
        nstep=None if config.nstep is None else config.nstep.init(example.obs),
    )
    return state, actions_0


def _zero_update_metrics(dqn_state: DQNState, replay_state, key: jax.Array, *, config: _Config):
    """Update metrics (same tree as `dqn.update`'s) filled with zeros, for calls without an update."""

    def metrics(dqn_state):
        drawn = config.replay.sample(replay_state, key)
        return config.dqn.update(dqn_state, drawn.batch if config.prioritized else drawn)[1]

    return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(metrics, dqn_state))


def learn(dqn_state: DQNState, replay_state, key: jax.Array, *, config: _Config) -> tuple[DQNState, Any, dict]:
    """`updates_per_call` DQN updates, each on a fresh draw from the buffer.

    With prioritized replay each update's loss is importance-weighted and the drawn rows' priorities are then
    set from their TD errors, so the buffer's priorities change too; the rows themselves never do, and they are
    not carried through the loop (only the [capacity] priorities are).

    Returns:
      (dqn_state, replay_state, metrics of the last update).
    """
    zeros = _zero_update_metrics(dqn_state, replay_state, key, config=config)
    if not config.prioritized:
        def one_update(i, carry):
            dqn_state, _ = carry
            return config.dqn.update(dqn_state, config.replay.sample(replay_state, jax.random.fold_in(key, i)))

        dqn_state, metrics = jax.lax.fori_loop(0, config.updates_per_call, one_update, (dqn_state, zeros))
        return dqn_state, replay_state, metrics

    def one_prioritized_update(i, carry):
        dqn_state, priorities, max_priority, _ = carry
        buffer = replay_state._replace(priorities=priorities, max_priority=max_priority)
        drawn = config.replay.sample(buffer, jax.random.fold_in(key, i))
        dqn_state, metrics, td_errors = config.dqn.update_weighted(dqn_state, drawn.batch, drawn.weights)
        buffer = config.replay.update(buffer, drawn.indices, td_errors)
        return dqn_state, buffer.priorities, buffer.max_priority, metrics

    dqn_state, priorities, max_priority, metrics = jax.lax.fori_loop(
        0, config.updates_per_call, one_prioritized_update,
        (dqn_state, replay_state.priorities, replay_state.max_priority, zeros),
    )
    return dqn_state, replay_state._replace(priorities=priorities, max_priority=max_priority), metrics


def _maybe_learn(
    ready: jax.Array, dqn_state: DQNState, replay_state, key: jax.Array, *, config: _Config
) -> tuple[DQNState, Any, dict]:
    """`learn` under `lax.cond(ready)`; with an axis name, the condition is reduced over seeds (see module doc).

    Only what an update changes passes through the cond (the agent, and the priorities of a prioritized
    buffer), never the buffer's rows.
    """

    def changed(replay_state):  # the part of the buffer an update changes (None: nothing)
        return (replay_state.priorities, replay_state.max_priority) if config.prioritized else None

    def apply(dqn_state, part, metrics):
        if config.prioritized:
            replay = replay_state._replace(priorities=part[0], max_priority=part[1])
        else:
            replay = replay_state
        return dqn_state, replay, metrics

    def run_learn():
        new_dqn, new_replay, metrics = learn(dqn_state, replay_state, key, config=config)
        return new_dqn, changed(new_replay), metrics

    def skip():
        return dqn_state, changed(replay_state), _zero_update_metrics(dqn_state, replay_state, key, config=config)

    if config.axis_name is None:
        return apply(*jax.lax.cond(ready, run_learn, skip))

    def learn_where_ready():
        new = run_learn()
        old = (dqn_state, changed(replay_state))
        kept = jax.tree.map(lambda n, o: jnp.where(ready, n, o), new[:2], old)
        return (*kept, jax.tree.map(lambda m: jnp.where(ready, m, jnp.zeros_like(m)), new[2]))

    any_ready = jax.lax.psum(ready.astype(jnp.int32), config.axis_name) > 0
    return apply(*jax.lax.cond(any_ready, learn_where_ready, skip))


def step(
    state: LearnerState,
    obs_t: jax.Array,
    reward_t: jax.Array,
    terminated_t: jax.Array,
    truncated_t: jax.Array,
    life_lost_t: jax.Array | None = None,
    *,
    config: _Config,
) -> tuple[LearnerState, jax.Array, dict]:
    """Store valid transitions, maybe update, act.

    Args:
      state: LearnerState from `init` or the previous `step`.
      obs_t: [N, obs_size] uint8 observations returned for state.action_tm1 (reset obs where done_tm1).
      reward_t: [N] float rewards (unscaled).
      terminated_t: [N] bool, true terminal (game over).
      truncated_t: [N] bool, time limit.
      life_lost_t: optional [N] bool, the step lost a life (Atari ``lives`` went down). With
        ``life_loss_terminal`` the stored transition is terminal (no bootstrap: the value of a life ends
        there, as with the Nature DQN's / CleanRL's EpisodicLifeEnv) while the game goes on without a reset,
        so episodes, returns and auto-reset masking still follow full games.

    Returns:
      (state, actions_t [N] int32, metrics): metrics has scalars loss, q_mean, grad_norm (last update of
      this call, 0 when none), epsilon, did_update, env_steps, num_updates, and per-env [N] arrays
      episode_done (an episode ended at this call), episode_return / episode_length (of that episode,
      0 elsewhere).
    """
    num_envs = config.num_envs
    assert obs_t.shape == (num_envs, config.obs_size), obs_t.shape
    assert reward_t.shape == terminated_t.shape == truncated_t.shape == (num_envs,)
    key, sample_key, act_key = jax.random.split(state.key, 3)
    valid = ~state.done_tm1  # [N]; False where this result is the auto-reset after an episode end
    reward_t = reward_t.astype(jnp.float32)
    terminated_t = terminated_t.astype(bool)
    stored_terminal = terminated_t
    if config.life_loss_terminal and life_lost_t is not None:
        stored_terminal = terminated_t | life_lost_t.astype(bool)
    stored_reward = config.reward_scale * (jnp.sign(reward_t) if config.clip_rewards else reward_t)
    nstep_state = state.nstep
    if config.nstep is None:
        transitions = Transition(
            obs=state.obs_tm1,
            action=state.action_tm1,
            reward=stored_reward,
            next_obs=obs_t.astype(jnp.uint8),
            terminated=stored_terminal,
        )
        replay_state = config.replay.add(state.replay, transitions, valid)
    else:
        window_end = stored_terminal | truncated_t.astype(bool)
        nstep_state, rows, row_mask = config.nstep.update(
            state.nstep, state.obs_tm1, state.action_tm1, stored_reward, obs_t.astype(jnp.uint8), stored_terminal,
            window_end, valid,
        )
        replay_state = config.replay.add(state.replay, rows, row_mask)
    env_steps = state.env_steps + jnp.sum(valid, dtype=jnp.int32)

    # Episode bookkeeping (a reset row starts a new episode at 0; nothing is counted for it).
    episode_return = state.episode_return + jnp.where(valid, reward_t, 0.0)
    episode_length = state.episode_length + valid.astype(jnp.int32)
    episode_done = valid & (terminated_t | truncated_t.astype(bool))

    # Updates: on every `update_every`-th call, once the buffer is warm.
    ready = (
        (state.calls % config.update_every == 0)
        & config.replay.can_sample(replay_state)
        & (env_steps >= config.learning_starts)
    )
    dqn_state, replay_state, update_metrics = _maybe_learn(ready, state.dqn, replay_state, sample_key,
                                                           config=config)

    epsilon = config.epsilon(env_steps)
    actions_t = config.dqn.act(dqn_state.params, obs_t, act_key, epsilon)
    metrics = dict(
        update_metrics,
        epsilon=epsilon,
        did_update=ready,
        env_steps=env_steps,
        num_updates=dqn_state.num_updates,
        episode_done=episode_done,
        episode_return=jnp.where(episode_done, episode_return, 0.0),
        episode_length=jnp.where(episode_done, episode_length, 0),
    )
    new_state = LearnerState(
        dqn=dqn_state,
        replay=replay_state,
        obs_tm1=obs_t.astype(jnp.uint8),
        action_tm1=actions_t,
        done_tm1=episode_done,
        episode_return=jnp.where(episode_done, 0.0, episode_return),
        episode_length=jnp.where(episode_done, 0, episode_length),
        key=key,
        env_steps=env_steps,
        calls=state.calls + 1,
        nstep=nstep_state,
    )
    return new_state, actions_t, metrics


def make_learner(
    num_envs: int,
    num_actions: int,
    *,
    buffer_size: int = 100_000,
    batch_size: int = 128,
    gamma: float = 0.98,
    learning_rate: float = 2e-3,
    learning_rate_end: float | None = None,
    learning_rate_decay_updates: int = 0,
    learning_starts: int = 2_000,
    update_every: int = 4,
    updates_per_call: int = 1,
    target_update_period: int = 2_000,
    tau: float = 1.0,
    double_dqn: bool = False,
    munchausen_alpha: float = 0.0,
    munchausen_temperature: float = 0.03,
    reward_scale: float = 0.01,
    clip_rewards: bool = False,
    life_loss_terminal: bool = False,
    n_step: int = 1,
    prioritized_replay: bool = False,
    priority_exponent: float = 0.5,
    importance_exponent: float = 0.5,
    epsilon_start: float = 0.08,
    epsilon_end: float = 0.01,
    epsilon_decay_steps: int = 1_000_000,
    hidden_sizes: Sequence[int] = (256, 256),
    obs_encoding: str = "scale",
    conv_channels: Sequence[int] = (16, 32),
    dueling: bool = False,
    layer_norm: bool = False,
    num_quantiles: int = 0,
    huber_delta: float = 1.0,
    max_grad_norm: float | None = None,
    obs_size: int = NUM_RAM_BYTES,
    axis_name: str | None = None,
) -> Learner:
    """Build the fused DQN training step for `num_envs` envs.

    Args:
      num_envs: N, envs stepped together.
      num_actions: A.
      buffer_size: replay capacity (transitions).
      batch_size: transitions per update.
      gamma: discount.
      learning_rate: Adam step size.
      learning_rate_end, learning_rate_decay_updates: a linear decay of it (`jaxrl.dqn.agent.make_dqn`).
      learning_starts: no update before this many transitions were stored (env_steps).
      update_every: run updates on calls where calls % update_every == 0 (one call = N env steps), so the
        replay ratio is updates_per_call * batch_size / (update_every * N) samples per transition.
      updates_per_call: DQN updates on such a call.
      target_update_period: hard target copy every this many UPDATES (tau == 1).
      tau: < 1 for Polyak averaging after every update instead.
      double_dqn: double-DQN targets.
      munchausen_alpha, munchausen_temperature: Munchausen-DQN targets when alpha > 0 (`jaxrl.dqn.agent`).
      reward_scale: rewards are multiplied by this before entering the buffer (episode returns stay unscaled).
      clip_rewards: store sign(reward) * reward_scale (the Nature DQN's reward clipping) instead.
      life_loss_terminal: store a life-losing step as terminal (see `step`'s life_lost_t).
      n_step: 1 stores one-step transitions; n > 1 stores n-step returns (`jaxrl.dqn.nstep`: rows enter the
        buffer n - 1 calls later, or when the episode / life ends).
      prioritized_replay: proportional prioritized replay (`jaxrl.dqn.prioritized`): rows drawn in proportion
        to |TD error| ** priority_exponent, the loss weighted by importance weights with importance_exponent.
      priority_exponent, importance_exponent: alpha and beta of prioritized replay (unused when uniform).
      epsilon_start, epsilon_end, epsilon_decay_steps: linear ε over env_steps.
      hidden_sizes: Q-network hidden widths.
      obs_encoding: ``"scale"`` (RAM / 255), ``"bits"``, ``"objects"`` or ``"planes"`` (`jaxrl.dqn.encoders`).
      conv_channels: convolution channels for ``"planes"``.
      dueling: dueling Q-network head.
      layer_norm: LayerNorm in each hidden layer of the Q-network.
      num_quantiles: 0 for DQN, N > 0 for QR-DQN's N quantiles per action (`jaxrl.dqn.agent.quantile_td_loss`).
      huber_delta: Huber threshold.
      max_grad_norm: optional global-norm gradient clipping.
      obs_size: bytes per observation: 128 RAM bytes, k * 128 with frame stacking (`jaxrl.dqn.frame_stack`).
      axis_name: vmap axis name over seeds, if `step` is vmapped (see module docstring).

    Returns:
      Learner(init, step, dqn, replay, epsilon).
    """
    num_envs = _positive_int("num_envs", num_envs)
    num_actions = _positive_int("num_actions", num_actions)
    obs_size = _positive_int("obs_size", obs_size)
    learning_starts = _positive_int("learning_starts", learning_starts, 0)
    update_every = _positive_int("update_every", update_every)
    updates_per_call = _positive_int("updates_per_call", updates_per_call)
    n_step = _positive_int("n_step", n_step)
    buffer_size = _positive_int("buffer_size", buffer_size)
    if num_envs * n_step > buffer_size:
        raise ValueError(f"num_envs * n_step ({num_envs} * {n_step}) must be <= buffer_size ({buffer_size}).")
    if not float(reward_scale) > 0:
        raise ValueError(f"reward_scale must be > 0, got {reward_scale!r}.")
    reward_scale = float(reward_scale)
    dqn = make_dqn(
        num_actions,
        hidden_sizes=hidden_sizes,
        obs_encoding=obs_encoding,
        conv_channels=conv_channels,
        dueling=dueling,
        layer_norm=layer_norm,
        num_quantiles=num_quantiles,
        learning_rate=learning_rate,
        learning_rate_end=learning_rate_end,
        learning_rate_decay_updates=learning_rate_decay_updates,
        gamma=gamma,
        huber_delta=huber_delta,
        double_dqn=double_dqn,
        munchausen_alpha=munchausen_alpha,
        munchausen_temperature=munchausen_temperature,
        target_update_period=target_update_period,
        tau=tau,
        max_grad_norm=max_grad_norm,
        obs_size=obs_size,
    )
    min_size = min(learning_starts, buffer_size)
    if prioritized_replay:
        replay = make_prioritized_replay_buffer(buffer_size, batch_size, min_size,
                                                priority_exponent=priority_exponent,
                                                importance_exponent=importance_exponent)
    else:
        replay = make_replay_buffer(buffer_size, batch_size, min_size=min_size)
    epsilon = epsilon_schedule(epsilon_start, epsilon_end, epsilon_decay_steps)

    config = _Config(
        dqn=dqn,
        replay=replay,
        prioritized=bool(prioritized_replay),
        epsilon=epsilon,
        num_envs=num_envs,
        learning_starts=learning_starts,
        update_every=update_every,
        updates_per_call=updates_per_call,
        reward_scale=reward_scale,
        clip_rewards=bool(clip_rewards),
        life_loss_terminal=bool(life_loss_terminal),
        nstep=None if n_step == 1 else make_nstep(num_envs, n_step, gamma),
        obs_size=obs_size,
        axis_name=axis_name,
    )
    return Learner(
        init=functools.partial(init, config=config),
        step=functools.partial(step, config=config),
        dqn=dqn,
        replay=replay,
        epsilon=epsilon,
        num_envs=num_envs,
        num_actions=num_actions,
        axis_name=axis_name,
    )
