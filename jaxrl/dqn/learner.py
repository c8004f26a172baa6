"""The ONE DQN training step, shared by the Python env loop and the compiled XLA loop (`make_learner` also builds
PQN's, `jaxrl.dqn.pqn`, which has the same ``init`` / ``step``).

`step` takes what N vectorised envs returned for the actions it chose last time and fuses, with no host
round-trip: store the valid transitions, maybe run `updates_per_call` DQN updates, pick the next actions.

Env semantics assumed (envpool and gymnasium's vector envs both give this): next-step auto-reset. When env i
returns terminated|truncated at call k, its result at call k+1 is the reset observation (the action sent was
ignored, reward 0). The pair (terminal obs -> reset obs) is not a transition: `done_tm1` masks it out of the
buffer. Truncation is never stored as terminal, so a time-limit cut is bootstrapped like any other step.

    learner = make_learner(preset("seed", num_envs=8), num_actions=6)
    state, actions = learner.init(key, obs_0)
    step = jax.jit(learner.step, donate_argnums=0)
    for _ in range(T):
        obs, reward, terminated, truncated = env.step(actions)
        state, actions, metrics = step(state, obs, reward, terminated, truncated)

Under `jax.vmap` over seeds, build with `make_learner(config, num_actions, axis_name="seed")` and vmap with the
same axis name: the "run an update?" test is then reduced over seeds, so the update is a real `lax.cond` taken when any
seed is ready (seeds not ready keep their state), rather than a select that computes the update every call.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxrl.dqn.agent import DQN, DQNState, epsilon_schedule, make_dqn
from jaxrl.dqn.buffers import (
    FrameStore,
    FrameStoreState,
    NStep,
    NStepState,
    PrioritizedReplayBuffer,
    PrioritizedReplayState,
    ReplayBuffer,
    ReplayState,
    Transition,
    frames_per_env_for,
    make_frame_store,
    make_nstep,
    make_prioritized_replay_buffer,
    make_replay_buffer,
)
from jaxrl.dqn.config import DQNConfig, check_int
from jaxrl.dqn.learner_base import (Learner, cond_over_seeds, episode_metrics, hold_if_inactive,  # noqa: F401
                                    stored_reward, track_episodes)
from jaxrl.dqn.pqn import make_pqn_learner


class LearnerState(NamedTuple):
    """Agent, buffer and per-env bookkeeping carried between calls of `step`."""

    dqn: DQNState
    replay: ReplayState | PrioritizedReplayState  # uniform, or prioritized (`prioritized_replay`)
    obs_tm1: jax.Array  # [N, obs_size] uint8, last observation actions were chosen for
    action_tm1: jax.Array  # [N] int32, actions chosen for obs_tm1
    done_tm1: jax.Array  # [N] bool, env ended at the previous call -> this call's result is a reset
    episode_return: jax.Array  # [N] float32, running unscaled return of the current episode
    episode_length: jax.Array  # [N] int32, steps in the current episode
    key: jax.Array  # PRNG key
    env_steps: jax.Array  # () int32, transitions seen (valid rows, all envs)
    calls: jax.Array  # () int32, calls of `step`
    nstep: NStepState | None = None  # pending n-step windows (n_step > 1), else None
    frames: FrameStoreState | None = None  # each env's RAM snapshots (with a frame store), else None
    ref_tm1: jax.Array | None = None  # [N, 3] int32 frame-store reference of obs_tm1 (with a store), else None


class _Bound(NamedTuple):
    """What `make_learner` binds into `init` / `step` (never traced): the config and the parts built from it."""

    config: DQNConfig
    dqn: DQN
    replay: ReplayBuffer | PrioritizedReplayBuffer
    epsilon: Callable[[jax.Array], jax.Array]
    nstep: NStep | None
    frames: FrameStore | None  # frame_stack > 1 and replay_frames: rows store references to snapshots, not stacks
    axis_name: str | None


def init(key: jax.Array, obs_0: jax.Array, *, bound: _Bound) -> tuple[LearnerState, jax.Array]:
    """Fresh agent and empty buffer; actions for the first observations.

    Args:
      key: PRNG key.
      obs_0: [N, obs_size] uint8 first observations (RAM, or k stacked RAM snapshots).

    Returns:
      (LearnerState, actions_0 [N] int32).
    """
    assert obs_0.shape == (bound.config.num_envs, bound.config.obs_size), obs_0.shape
    key, init_key, act_key = jax.random.split(key, 3)
    dqn_state = bound.dqn.init(init_key)
    frames, ref_0 = (None, None) if bound.frames is None else bound.frames.init(obs_0)
    stored_obs = (jnp.zeros((bound.config.obs_size,), jnp.uint8) if bound.frames is None
                  else jnp.zeros((3,), jnp.int32))  # a stacked observation, or its frame-store reference
    example = Transition(
        obs=stored_obs,
        action=jnp.zeros((), jnp.int32),
        reward=jnp.zeros((), jnp.float32),
        next_obs=stored_obs,
        terminated=jnp.zeros((), bool),
        discount=None if bound.nstep is None else jnp.zeros((), jnp.float32),
    )
    env_steps = jnp.zeros((), jnp.int32)
    actions_0 = bound.dqn.act(dqn_state.params, obs_0, act_key, bound.epsilon(env_steps))
    state = LearnerState(
        dqn=dqn_state,
        replay=bound.replay.init(example),
        obs_tm1=obs_0.astype(jnp.uint8),
        action_tm1=actions_0,
        done_tm1=jnp.zeros((bound.config.num_envs,), bool),
        episode_return=jnp.zeros((bound.config.num_envs,), jnp.float32),
        episode_length=jnp.zeros((bound.config.num_envs,), jnp.int32),
        key=key,
        env_steps=env_steps,
        calls=jnp.zeros((), jnp.int32),
        nstep=None if bound.nstep is None else bound.nstep.init(example.obs),
        frames=frames,
        ref_tm1=ref_0,
    )
    return state, actions_0


def as_observed(rows: Transition, frames: FrameStoreState | None, *, bound: _Bound) -> Transition:
    """Replay rows as the agent sees them: frame-store references rebuilt into stacked observations
    ([..., obs_size] uint8); rows that store observations are returned as they are."""
    if bound.frames is None:
        return rows
    return rows._replace(obs=bound.frames.gather(frames, rows.obs), next_obs=bound.frames.gather(frames, rows.next_obs))


def _zero_update_metrics(dqn_state: DQNState, replay_state, frames, key: jax.Array, *, bound: _Bound):
    """Update metrics (same tree as `dqn.update`'s) filled with zeros, for calls without an update."""

    def metrics(dqn_state):
        drawn = bound.replay.sample(replay_state, key)
        rows = drawn.batch if bound.config.prioritized_replay else drawn
        return bound.dqn.update(dqn_state, as_observed(rows, frames, bound=bound))[1]

    return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(metrics, dqn_state))


def learn(dqn_state: DQNState, replay_state, frames, key: jax.Array, *, bound: _Bound,
          ) -> tuple[DQNState, Any, dict]:
    """`updates_per_call` DQN updates, each on a fresh draw from the buffer (its stacks rebuilt from ``frames``,
    the frame store's state, when rows hold references).

    With prioritized replay each update's loss is importance-weighted and the drawn rows' priorities are then
    set from their TD errors, so the buffer's priorities (and their sum tree) change too; the rows themselves never
    do, and they are not carried through the loop (only the priorities, the tree and the max priority are).

    Returns:
      (dqn_state, replay_state, metrics of the last update).
    """
    zeros = _zero_update_metrics(dqn_state, replay_state, frames, key, bound=bound)
    if not bound.config.prioritized_replay:
        def one_update(i, carry):
            dqn_state, _ = carry
            rows = bound.replay.sample(replay_state, jax.random.fold_in(key, i))
            dqn_state, metrics, _ = bound.dqn.update(dqn_state, as_observed(rows, frames, bound=bound))
            return dqn_state, metrics

        dqn_state, metrics = jax.lax.fori_loop(0, bound.config.updates_per_call, one_update, (dqn_state, zeros))
        return dqn_state, replay_state, metrics

    def one_prioritized_update(i, carry):
        dqn_state, priority_part, _ = carry
        buffer = priority_part._replace(replay=replay_state.replay)
        drawn = bound.replay.sample(buffer, jax.random.fold_in(key, i))
        dqn_state, metrics, td_errors = bound.dqn.update(dqn_state, as_observed(drawn.batch, frames, bound=bound),
                                                         drawn.weights)
        return dqn_state, _priority_part(bound.replay.update(buffer, drawn.indices, td_errors)), metrics

    dqn_state, priority_part, metrics = jax.lax.fori_loop(
        0, bound.config.updates_per_call, one_prioritized_update, (dqn_state, _priority_part(replay_state), zeros),
    )
    return dqn_state, priority_part._replace(replay=replay_state.replay), metrics


def _priority_part(replay_state: PrioritizedReplayState) -> PrioritizedReplayState:
    """The part of a prioritized buffer that an update changes: its state without the rows (``replay=None``)."""
    return replay_state._replace(replay=None)


def _maybe_learn(
    ready: jax.Array, dqn_state: DQNState, replay_state, frames, key: jax.Array, *, bound: _Bound
) -> tuple[DQNState, Any, dict]:
    """`learn` under `lax.cond(ready)`; with an axis name, the condition is reduced over seeds (see module doc).

    Only what an update changes passes through the cond (the agent, and the priorities and sum tree of a
    prioritized buffer), never the buffer's rows.
    """

    def changed(replay_state):  # the part of the buffer an update changes (None: nothing)
        return _priority_part(replay_state) if bound.config.prioritized_replay else None

    def apply(dqn_state, part, metrics):
        replay = part._replace(replay=replay_state.replay) if bound.config.prioritized_replay else replay_state
        return dqn_state, replay, metrics

    def run_learn():
        new_dqn, new_replay, metrics = learn(dqn_state, replay_state, frames, key, bound=bound)
        return new_dqn, changed(new_replay), metrics

    def skip():
        return dqn_state, changed(replay_state), _zero_update_metrics(dqn_state, replay_state, frames, key,
                                                                      bound=bound)

    return apply(*cond_over_seeds(ready, run_learn, skip, bound.axis_name))


def _store(
    state: LearnerState,
    obs_t: jax.Array,
    reward_t: jax.Array,
    terminated_t: jax.Array,
    truncated_t: jax.Array,
    life_lost_t: jax.Array | None,
    *,
    bound: _Bound,
) -> tuple[Any, NStepState | None, FrameStoreState | None, jax.Array | None]:
    """Add this call's transitions (obs_tm1, action_tm1, stored reward, obs_t, terminal) to the buffer.

    Only envs whose last call was not an episode end give a transition (``~state.done_tm1``). The stored reward is
    ``stored_reward``: scaled (its sign with ``clip_rewards``, its symlog with ``symlog_rewards``); with
    ``life_loss_terminal`` a lost life is stored as terminal. With n_step > 1 the transitions go through the n-step
    windows first, and the rows they complete enter the buffer. With a frame store (frame_stack > 1) the newest snapshot
    of obs_t is pushed to it (a new episode where ``state.done_tm1``) and rows hold references (``state.ref_tm1``, its
    reference) instead of stacks.

    Args:
      reward_t: [N] float32 unscaled rewards; terminated_t: [N] bool; the rest as in `step`.

    Returns:
      (replay_state, nstep_state, frames, ref_t): the buffer after the writes, the pending n-step windows (None
      when n = 1), the frame store after the push and obs_t's references [N, 3] (both None without a store).
    """
    valid = ~state.done_tm1
    if bound.frames is None:
        frames, ref_t = None, None
        stored_obs_tm1, stored_obs_t = state.obs_tm1, obs_t.astype(jnp.uint8)
    else:
        frames, ref_t = bound.frames.push(state.frames, obs_t, state.done_tm1)
        stored_obs_tm1, stored_obs_t = state.ref_tm1, ref_t
    stored_terminal = terminated_t
    if bound.config.life_loss_terminal and life_lost_t is not None:
        stored_terminal = terminated_t | life_lost_t.astype(bool)
    reward = stored_reward(reward_t, bound.config)
    if bound.nstep is None:
        transitions = Transition(
            obs=stored_obs_tm1,
            action=state.action_tm1,
            reward=reward,
            next_obs=stored_obs_t,
            terminated=stored_terminal,
        )
        return bound.replay.add(state.replay, transitions, valid), state.nstep, frames, ref_t
    window_end = stored_terminal | truncated_t.astype(bool)
    nstep_state, rows, row_mask = bound.nstep.update(
        state.nstep, stored_obs_tm1, state.action_tm1, reward, stored_obs_t, stored_terminal, window_end, valid,
    )
    return bound.replay.add(state.replay, rows, row_mask), nstep_state, frames, ref_t


def step(
    state: LearnerState,
    obs_t: jax.Array,
    reward_t: jax.Array,
    terminated_t: jax.Array,
    truncated_t: jax.Array,
    life_lost_t: jax.Array | None = None,
    active_t: jax.Array | None = None,
    *,
    bound: _Bound,
) -> tuple[LearnerState, jax.Array, dict]:
    """Store valid transitions, maybe update, act.

    Args:
      state: LearnerState from `init` or the previous `step`.
      obs_t: [N, obs_size] uint8 observations returned for state.action_tm1 (reset obs where done_tm1).
      reward_t: [N] float rewards (unscaled).
      terminated_t: [N] bool, true terminal (game over).
      truncated_t: [N] bool, time limit.
      life_lost_t: optional [N] bool, the step lost a life. With ``life_loss_terminal`` it is stored as
        terminal (as CleanRL's EpisodicLifeEnv) while the game goes on: episodes still follow full games.
      active_t: optional () bool; False: a no-op call (nothing stored or updated, the state returned as it
        was, actions state.action_tm1), e.g. a multi-seed run's agent waiting at a segment boundary.

    Returns:
      (state, actions_t [N] int32, metrics): metrics has scalars loss, q_mean, grad_norm (last update of
      this call, 0 when none), epsilon, did_update, env_steps, num_updates, and per-env [N] arrays
      episode_done (an episode ended at this call), episode_return / episode_length (of that episode,
      0 elsewhere).
    """
    num_envs = bound.config.num_envs
    assert obs_t.shape == (num_envs, bound.config.obs_size), obs_t.shape
    assert reward_t.shape == terminated_t.shape == truncated_t.shape == (num_envs,)
    old = state
    if active_t is not None:  # an inactive call: every env masked as a reset row, so nothing is stored
        state = state._replace(done_tm1=state.done_tm1 | ~jnp.asarray(active_t, bool))
    key, sample_key, act_key = jax.random.split(state.key, 3)
    valid = ~state.done_tm1  # [N]; False where this result is the auto-reset after an episode end
    reward_t = reward_t.astype(jnp.float32)
    terminated_t = terminated_t.astype(bool)
    replay_state, nstep_state, frames, ref_t = _store(state, obs_t, reward_t, terminated_t, truncated_t, life_lost_t,
                                                      bound=bound)
    env_steps = state.env_steps + jnp.sum(valid, dtype=jnp.int32)

    episodes = track_episodes(state.episode_return, state.episode_length, valid, reward_t, terminated_t,
                              truncated_t)

    ready = _ready(state.calls, replay_state, env_steps, active_t, bound=bound)
    dqn_state, replay_state, update_metrics = _maybe_learn(ready, state.dqn, replay_state, frames, sample_key,
                                                           bound=bound)

    epsilon = bound.epsilon(env_steps)
    actions_t = bound.dqn.act(dqn_state.params, obs_t, act_key, epsilon)
    metrics = dict(
        update_metrics,
        epsilon=epsilon,
        did_update=ready,
        env_steps=env_steps,
        num_updates=dqn_state.num_updates,
        **episode_metrics(episodes),
    )
    new_state = LearnerState(
        dqn=dqn_state,
        replay=replay_state,
        obs_tm1=obs_t.astype(jnp.uint8),
        action_tm1=actions_t,
        done_tm1=episodes.done,
        episode_return=episodes.running_return,
        episode_length=episodes.running_length,
        key=key,
        env_steps=env_steps,
        calls=state.calls + 1,
        nstep=nstep_state,
        frames=frames,
        ref_tm1=ref_t,
    )
    if active_t is not None:
        # the inactive call stored nothing (every row masked) and could not update: the buffer needs no select
        new_state, actions_t = hold_if_inactive(jnp.asarray(active_t, bool), old, new_state, actions_t, _HELD)
    return new_state, actions_t, metrics


def _ready(calls: jax.Array, replay_state, env_steps: jax.Array, active_t, *, bound: _Bound) -> jax.Array:
    """Whether this call updates: every `update_every`-th call, once the buffer is warm (and the agent active)."""
    ready = (
        (calls % bound.config.update_every == 0)
        & bound.replay.can_sample(replay_state)
        & (env_steps >= bound.config.learning_starts)
    )
    return ready if active_t is None else ready & jnp.asarray(active_t, bool)


# What an inactive call keeps from the old state (everything but the buffer, which it wrote nothing to; the frame
# store's push is undone, as every other per-env field's).
_HELD = ("dqn", "obs_tm1", "action_tm1", "done_tm1", "episode_return", "episode_length", "key", "env_steps", "calls",
         "nstep", "frames", "ref_tm1")


def make_learner(config: DQNConfig, num_actions: int, axis_name: str | None = None) -> Learner:
    """Build the fused DQN training step for ``config.num_envs`` envs (PQN's when ``config.algo == "pqn"``:
    `jaxrl.dqn.pqn.make_pqn_learner`).

    Besides the agent's fields (`jaxrl.dqn.agent.make_dqn`) it reads: buffer_size, batch_size (uniform replay,
    or prioritized_replay with priority_exponent / importance_exponent, `jaxrl.dqn.buffers.prioritized`), n_step
    (n > 1 stores n-step returns, `jaxrl.dqn.buffers.nstep`: rows enter the buffer n - 1 calls later, or when the
    episode / life ends), learning_starts (no update before this many transitions were stored), update_every and
    updates_per_call (updates run on calls where calls % update_every == 0, so the replay ratio is updates_per_call *
    batch_size / (update_every * N) samples per transition), reward_scale / clip_rewards / symlog_rewards (applied
    before storing; episode returns stay unscaled), life_loss_terminal (see `step`'s life_lost_t), epsilon_start /
    epsilon_end / epsilon_decay_steps (linear ε over env_steps), obs_size, frame_stack and
    replay_frames (K > 1: rows store references into a frame store and stacks are rebuilt when sampled,
    `jaxrl.dqn.buffers.frames`).

    Args:
      config: the run's DQNConfig (validated on construction).
      num_actions: A.
      axis_name: vmap axis name over seeds, if `step` is vmapped (see module docstring).

    Returns:
      Learner(init, step, dqn, replay, epsilon, num_envs, num_actions, axis_name).
    """
    if config.algo == "pqn":
        return make_pqn_learner(config, num_actions, axis_name)
    num_actions = check_int("num_actions", num_actions)
    dqn = make_dqn(config, num_actions)
    replay = _make_replay(config)
    epsilon = epsilon_schedule(config.epsilon_start, config.epsilon_end, config.epsilon_decay_steps)
    nstep = None if config.n_step == 1 else make_nstep(config.num_envs, config.n_step, config.gamma)
    frames = None if config.frame_stack == 1 or not config.replay_frames else make_frame_store(
        config.num_envs, config.frame_stack,
        frames_per_env_for(config.buffer_size, config.num_envs, config.frame_stack, config.n_step),
        frame_size=config.obs_size // config.frame_stack)
    bound = _Bound(config=config, dqn=dqn, replay=replay, epsilon=epsilon, nstep=nstep, frames=frames,
                   axis_name=axis_name)
    return Learner(
        init=functools.partial(init, bound=bound),
        step=functools.partial(step, bound=bound),
        dqn=dqn,
        replay=replay,
        epsilon=epsilon,
        num_envs=config.num_envs,
        num_actions=num_actions,
        axis_name=axis_name,
    )


def _make_replay(config: DQNConfig) -> ReplayBuffer | PrioritizedReplayBuffer:
    """The uniform or prioritized replay buffer; it can sample once min(learning_starts, capacity) rows are in."""
    min_size = min(config.learning_starts, config.buffer_size)
    if config.prioritized_replay:
        return make_prioritized_replay_buffer(config.buffer_size, config.batch_size, min_size,
                                              priority_exponent=config.priority_exponent,
                                              importance_exponent=config.importance_exponent)
    return make_replay_buffer(config.buffer_size, config.batch_size, min_size=min_size)


def abstract_learner_state(learner: Learner, config: DQNConfig) -> LearnerState:
    """Shapes and dtypes of ``learner``'s state (``jax.ShapeDtypeStruct`` leaves): a checkpoint restore's target."""
    obs_0 = jax.ShapeDtypeStruct((config.num_envs, config.obs_size), jnp.uint8)
    return jax.eval_shape(learner.init, jax.random.PRNGKey(0), obs_0)[0]


def abstract_learner_states(learner: Learner, config: DQNConfig, sharding=None) -> LearnerState:
    """The state of ``config.num_seeds`` agents (leaves ``[S, ...]``) as ``jax.ShapeDtypeStruct``s placed with
    ``sharding`` (default: this process's first device, which also reads a state saved sharded over other
    devices or processes): a multi-seed checkpoint's restore target."""
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct((config.num_seeds,) + x.shape, x.dtype, sharding=sharding),
                        abstract_learner_state(learner, config))
