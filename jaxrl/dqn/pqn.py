"""PQN: Q-learning from many envs without a replay buffer or target network (Gallici et al., 2024, "Simplifying
Deep Temporal Difference Learning"; CleanRL's ``pqn_atari_envpool.py``, ``mttga/purejaxql``), as a learner with
the DQN learner's ``init`` / ``step`` (`jaxrl.dqn.learner_base.Learner`).

Each ``step`` records what the N envs returned for the epsilon-greedy actions chosen last time; after
``rollout_steps`` calls it computes Q(lambda) returns over those T x N rows (max_a Q bootstraps recorded when
acting) and regresses Q(s, a) on them for ``epochs`` passes of ``num_minibatches`` shuffled minibatches, then
starts the next rollout. LayerNorm in the Q-network (``layer_norm=True``) keeps this stable without a target
network. Because it is a learner like DQN's, every run shell takes it unchanged (``jaxrl dqn train --algo pqn``:
the Python and the compiled loop, checkpoints with exact resume, multi-seed runs, evaluation, play); its
``dqn.params`` are a `jaxrl.dqn.network.QNetwork`'s, so a PQN agent acts and evaluates exactly as a DQN agent.

Settings that PQN reads from `jaxrl.dqn.config.DQNConfig`: rollout_steps, num_minibatches, epochs, q_lambda, gamma,
the network fields (``num_quantiles`` K > 0: a quantile head regressed on per-quantile Q(lambda) returns with the
quantile Huber loss, ``huber_delta`` its threshold; `q_lambda_returns`), the optimizer fields (``optimizer``,
learning_rate, learning_rate_end and its decay, counted in updates, adam_eps, max_grad_norm), reward_scale /
clip_rewards / symlog_rewards, life_loss_terminal and the epsilon schedule. The ``pqn`` preset is CleanRL's Atari
PQN (8 envs x 128 steps, 4 epochs of 4 minibatches, RAdam 2.5e-4 annealed to 0, gradient norm 10, lambda 0.65, gamma
0.99, epsilon 1 -> 0.01 over the first 10% of the steps, rewards clipped to their sign, a lost life ends the
bootstrap horizon) on the bilinear object planes of the RAM (``--obs-encoding bilinear-planes --frame-stack 3``).

Differences from CleanRL kept on purpose: the Q(lambda) recursion stops at every episode or life end (CleanRL's
carries the next return across a done; purejaxql's does not), and a time-limit truncation (or a run's segment
boundary, `jaxrl.dqn.run.train`) bootstraps from max_a Q of the episode's last observation instead of ending the
return; envpool's next-step auto-reset row is left out of the loss; LayerNorm after the hidden dense layers only.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxrl.dqn.agent import DQN, DQNState, epsilon_greedy, epsilon_schedule, make_dqn, make_optimizer
from jaxrl.dqn.config import DQNConfig, check_int
from jaxrl.dqn.learner_base import (Learner, cond_over_seeds, episode_metrics, hold_if_inactive, stored_reward,
                                    track_episodes)
from jaxrl.dqn.losses import masked_mean, quantile_huber_loss


class Rollout(NamedTuple):
    """Up to T calls of N envs (leaves [T, N, ...]), or a flat minibatch of its rows (leaves [B, ...])."""

    obs: jax.Array  # uint8 [T, N, D]: what the agent acted on
    action: jax.Array  # int32 [T, N]
    value: jax.Array  # float32 [T, N]: max_a Q(obs, a) when acting (the bootstrap of the row before); with
    # num_quantiles K > 0 [T, N, K]: the K quantiles of the greedy action's return
    reward: jax.Array  # float32 [T, N]: the stored reward (learner_base.stored_reward: scaled, sign / symlog)
    terminal: jax.Array  # bool [T, N]: no bootstrap past this row (game over; a lost life with life_loss_terminal)
    truncated: jax.Array  # bool [T, N]: the episode was cut here: bootstrap from the next row's value only
    valid: jax.Array  # bool [T, N]: False on envpool's auto-reset row (the action was ignored)


class PQNState(NamedTuple):
    """Agent, the rollout being filled and per-env bookkeeping carried between calls of `step`."""

    dqn: DQNState  # params, opt_state, num_updates (target_params None: PQN has no target network)
    rollout: Rollout  # leaves [T, N, ...]; rows [0, filled) hold this rollout's calls
    filled: jax.Array  # () int32, rows of the rollout written
    obs_tm1: jax.Array  # [N, D] uint8, last observation actions were chosen for
    action_tm1: jax.Array  # [N] int32
    value_tm1: jax.Array  # [N] float32, max_a Q(obs_tm1, a) under the parameters that acted
    done_tm1: jax.Array  # [N] bool, env ended at the previous call -> this call's result is a reset
    episode_return: jax.Array  # [N] float32, running unscaled return
    episode_length: jax.Array  # [N] int32
    key: jax.Array
    env_steps: jax.Array  # () int32, transitions seen (valid rows, all envs)


def q_lambda_returns(rollout: Rollout, last_value: jax.Array, gamma: float, lam: float) -> jax.Array:
    """Q(lambda) returns [T, N] of a rollout whose ``value`` [T, N] is max_a Q(s_t, a) (PQN's, Watkins-free);
    [T, N, K] per quantile when ``value`` is [T, N, K] (a quantile head, see below).

    ``G_t = r_t + gamma (1 - terminal_t) ((1 - lam_t) v_{t+1} + lam_t G_{t+1})`` with ``lam_t = 0`` where the
    episode was truncated at t (bootstrap only, the next row starts another episode) and ``lam`` elsewhere,
    ``v_{t+1}`` the next row's value and, after the last row, ``last_value`` [N] (max_a Q of the observation the
    envs returned last). lam = 0 gives one-step Q-learning targets, lam = 1 discounted returns to the episode end
    or the bootstrap.

    With a quantile head, ``value`` [T, N, K] and ``last_value`` [N, K] hold the K quantiles of the greedy action's
    return and the recursion runs per quantile: ``G_t(i) = r_t + gamma (1 - terminal_t) ((1 - lam_t) v_{t+1}(i) +
    lam_t G_{t+1}(i))``, K samples of a target distribution whose mean is the Q(lambda) return of the quantiles'
    means. (A lambda-mixture of two distributions is not their quantile-wise mix: this is a shortcut, exact at lam = 0,
    where it is QR-DQN's one-step target sample, and at lam = 1 for a return that reaches the episode's end, where
    every quantile's target is that one sampled return.)
    """
    next_values = jnp.concatenate([rollout.value[1:], last_value[None]], axis=0)

    def backward(next_return, row):
        reward, terminal, truncated, next_value = row
        # [N] -> [N, 1, ...]: broadcast over a value's trailing quantile axis
        reward, terminal, truncated = (x.reshape(x.shape + (1,) * (next_value.ndim - x.ndim))
                                       for x in (reward, terminal, truncated))
        lam_t = jnp.where(truncated, 0.0, lam)
        target = reward + gamma * (1.0 - terminal.astype(jnp.float32)) * (
            (1.0 - lam_t) * next_value + lam_t * next_return)
        return target, target

    _, returns = jax.lax.scan(backward, last_value,
                              (rollout.reward, rollout.terminal, rollout.truncated, next_values), reverse=True)
    return returns


def pqn_loss(params, q_values: Callable, obs: jax.Array, action: jax.Array, returns: jax.Array, valid: jax.Array):
    """Half the mean squared error of Q(s, a) against the Q(lambda) returns, over the valid rows.

    Args:
      q_values: ``(params, obs [B, ...]) -> [B, A]``; obs [B, ...] what it reads (uint8 RAM [B, D], or the RAM
        already encoded); action [B] int32; returns [B]; valid [B].

    Returns:
      (loss, mean Q(s, a)), scalars.
    """
    q_taken = jnp.take_along_axis(q_values(params, obs), action[:, None], axis=-1)[:, 0]
    return 0.5 * masked_mean((q_taken - returns) ** 2, valid), masked_mean(q_taken, valid)


def pqn_quantile_loss(params, quantile_values: Callable, obs: jax.Array, action: jax.Array, returns: jax.Array,
                      valid: jax.Array, huber_delta: float = 1.0):
    """`pqn_loss` for a quantile head: QR-DQN's quantile Huber loss (`jaxrl.dqn.losses.quantile_huber_loss`) of
    the K quantiles of Q(s, a) against the K per-quantile Q(lambda) returns, over the valid rows.

    Args:
      quantile_values: ``(params, obs [B, ...]) -> [B, A, K]``; obs, action [B], valid [B] as `pqn_loss`;
        returns [B, K] (`q_lambda_returns` of quantile values); huber_delta: the threshold kappa.

    Returns:
      (loss, mean Q(s, a)), scalars (Q the mean of the K quantiles).
    """
    theta = jnp.take_along_axis(quantile_values(params, obs), action[:, None, None], axis=1)[:, 0]  # [B, K]
    losses = jax.vmap(quantile_huber_loss, in_axes=(0, 0, None))(theta, returns, huber_delta)  # [B]
    return masked_mean(losses, valid), masked_mean(jnp.mean(theta, axis=-1), valid)


class _Bound(NamedTuple):
    """What `make_pqn_learner` binds into `init` / `step` (never traced)."""

    config: DQNConfig
    dqn: DQN
    optimizer: optax.GradientTransformation
    epsilon: Callable[[jax.Array], jax.Array]
    axis_name: str | None


def _greedy_value(params, obs: jax.Array, *, bound: _Bound) -> tuple[jax.Array, jax.Array]:
    """(Q-values [N, A], the bootstrap value) of obs [N, D]: max_a Q(obs, a) [N], or with a quantile head the K
    quantiles of the greedy action (by their mean) [N, K]."""
    if bound.config.num_quantiles == 0:
        q = bound.dqn.q_values(params, obs)
        return q, jnp.max(q, axis=-1)
    quantiles = bound.dqn.quantile_values(params, obs)  # [N, A, K]
    q = jnp.mean(quantiles, axis=-1)
    return q, jnp.take_along_axis(quantiles, jnp.argmax(q, axis=-1)[:, None, None], axis=1)[:, 0]


def _act(params, obs: jax.Array, key: jax.Array, epsilon, *, bound: _Bound) -> tuple[jax.Array, jax.Array]:
    """(epsilon-greedy actions [N], the bootstrap value [N] or [N, K], `_greedy_value`) from one pass of the
    Q-network on obs [N, D]."""
    q, value = _greedy_value(params, obs, bound=bound)
    return epsilon_greedy(q, key, epsilon), value


def init(key: jax.Array, obs_0: jax.Array, *, bound: _Bound) -> tuple[PQNState, jax.Array]:
    """Fresh agent and an empty rollout; actions for the first observations obs_0 [N, D] uint8."""
    config = bound.config
    n, t = config.num_envs, config.rollout_steps
    assert obs_0.shape == (n, config.obs_size), obs_0.shape
    key, init_key, act_key = jax.random.split(key, 3)
    params = bound.dqn.init(init_key).params
    dqn_state = DQNState(params, None, bound.optimizer.init(params), jnp.zeros((), jnp.int32))
    env_steps = jnp.zeros((), jnp.int32)
    actions_0, value_0 = _act(params, obs_0, act_key, bound.epsilon(env_steps), bound=bound)
    rollout = Rollout(obs=jnp.zeros((t, n, config.obs_size), jnp.uint8), action=jnp.zeros((t, n), jnp.int32),
                      value=jnp.zeros((t, n) + value_0.shape[1:]), reward=jnp.zeros((t, n)),
                      terminal=jnp.zeros((t, n), bool), truncated=jnp.zeros((t, n), bool),
                      valid=jnp.zeros((t, n), bool))
    state = PQNState(dqn=dqn_state, rollout=rollout, filled=jnp.zeros((), jnp.int32),
                     obs_tm1=obs_0.astype(jnp.uint8), action_tm1=actions_0, value_tm1=value_0,
                     done_tm1=jnp.zeros((n,), bool), episode_return=jnp.zeros((n,)),
                     episode_length=jnp.zeros((n,), jnp.int32), key=key, env_steps=env_steps)
    return state, actions_0


def learn(dqn_state: DQNState, rollout: Rollout, last_value: jax.Array, key: jax.Array, *,
          bound: _Bound) -> tuple[DQNState, dict]:
    """Q(lambda) returns of a full rollout, then ``epochs`` passes over its T * N rows in ``num_minibatches``
    shuffled minibatches, one optimizer step each.

    Returns:
      (dqn_state, metrics: loss, q_mean, grad_norm averaged over the updates).
    """
    config = bound.config
    rows = config.rollout_steps * config.num_envs
    returns = q_lambda_returns(rollout, last_value, config.gamma, config.q_lambda)
    flat = jax.tree.map(lambda x: x.reshape((rows,) + x.shape[2:]), (rollout, returns))
    # each row is read `epochs` times: encode the RAM into the network's input once
    flat = (flat[0]._replace(obs=bound.dqn.encode(flat[0].obs)), flat[1])
    if config.num_quantiles == 0:
        loss_grad = functools.partial(jax.value_and_grad(pqn_loss, has_aux=True),
                                      q_values=functools.partial(bound.dqn.q_values, encoded=True))
    else:
        loss_grad = functools.partial(jax.value_and_grad(pqn_quantile_loss, has_aux=True),
                                      quantile_values=functools.partial(bound.dqn.quantile_values, encoded=True),
                                      huber_delta=config.huber_delta)

    def minibatch_update(dqn_state, indices):
        batch, batch_returns = jax.tree.map(lambda x: x[indices], flat)
        (loss, q_mean), grads = loss_grad(dqn_state.params, obs=batch.obs, action=batch.action,
                                          returns=batch_returns, valid=batch.valid)
        updates, opt_state = bound.optimizer.update(grads, dqn_state.opt_state, dqn_state.params)
        new = DQNState(optax.apply_updates(dqn_state.params, updates), None, opt_state, dqn_state.num_updates + 1)
        return new, dict(loss=loss, q_mean=q_mean, grad_norm=optax.tree.norm(grads))

    def epoch(dqn_state, epoch_key):
        order = jax.random.permutation(epoch_key, rows).reshape(config.num_minibatches, -1)
        return jax.lax.scan(minibatch_update, dqn_state, order)

    dqn_state, metrics = jax.lax.scan(epoch, dqn_state, jax.random.split(key, config.epochs))
    return dqn_state, jax.tree.map(jnp.mean, metrics)


def step(state: PQNState, obs_t: jax.Array, reward_t: jax.Array, terminated_t: jax.Array, truncated_t: jax.Array,
         life_lost_t: jax.Array | None = None, active_t: jax.Array | None = None, *,
         bound: _Bound) -> tuple[PQNState, jax.Array, dict]:
    """Record this call's row, learn when the rollout is full, act.

    Args: as `jaxrl.dqn.learner.step` (obs_t [N, D] uint8 for state.action_tm1, reset obs where done_tm1;
    reward_t, terminated_t, truncated_t, life_lost_t [N]; active_t () bool, False: a no-op call).

    Returns:
      (state, actions_t [N] int32, metrics): scalars loss, q_mean, grad_norm (means over this call's updates, 0
      when none), epsilon, did_update, env_steps, num_updates; per-env [N] episode_done, episode_return,
      episode_length.
    """
    config = bound.config
    assert obs_t.shape == (config.num_envs, config.obs_size), obs_t.shape
    old = state
    if active_t is not None:  # an inactive call: every env masked as a reset row, and no row is written
        state = state._replace(done_tm1=state.done_tm1 | ~jnp.asarray(active_t, bool))
    key, learn_key, act_key = jax.random.split(state.key, 3)
    valid = ~state.done_tm1
    reward_t = reward_t.astype(jnp.float32)
    terminal = terminated_t.astype(bool)
    if config.life_loss_terminal and life_lost_t is not None:
        terminal = terminal | life_lost_t.astype(bool)
    row = Rollout(state.obs_tm1, state.action_tm1, state.value_tm1, stored_reward(reward_t, config), terminal,
                  truncated_t.astype(bool), valid)
    rollout = jax.tree.map(lambda rows, x: rows.at[state.filled].set(x), state.rollout, row)
    written = jnp.ones((), bool) if active_t is None else jnp.asarray(active_t, bool)
    filled = state.filled + written.astype(jnp.int32)
    env_steps = state.env_steps + jnp.sum(valid, dtype=jnp.int32)
    episodes = track_episodes(state.episode_return, state.episode_length, valid, reward_t, terminated_t,
                              truncated_t)

    ready = filled == config.rollout_steps
    zeros = dict(loss=jnp.zeros(()), q_mean=jnp.zeros(()), grad_norm=jnp.zeros(()))

    def run_learn():
        _, last_value = _greedy_value(state.dqn.params, obs_t, bound=bound)
        return learn(state.dqn, rollout, last_value, learn_key, bound=bound)

    dqn_state, update_metrics = cond_over_seeds(ready, run_learn, lambda: (state.dqn, zeros), bound.axis_name)
    epsilon = bound.epsilon(env_steps)
    actions_t, value_t = _act(dqn_state.params, obs_t, act_key, epsilon, bound=bound)
    metrics = dict(update_metrics, epsilon=epsilon, did_update=ready, env_steps=env_steps,
                   num_updates=dqn_state.num_updates, **episode_metrics(episodes))
    new_state = PQNState(dqn=dqn_state, rollout=rollout, filled=jnp.where(ready, 0, filled),
                         obs_tm1=obs_t.astype(jnp.uint8), action_tm1=actions_t, value_tm1=value_t,
                         done_tm1=episodes.done, episode_return=episodes.running_return,
                         episode_length=episodes.running_length, key=key, env_steps=env_steps)
    if active_t is not None:
        new_state, actions_t = hold_if_inactive(jnp.asarray(active_t, bool), old, new_state, actions_t,
                                                _HELD)
    return new_state, actions_t, metrics


# What an inactive call keeps from the old state: the rest it cannot have changed (no update ran, ``filled`` did not
# advance, and the row it wrote is overwritten by the next active call).
_HELD = ("obs_tm1", "action_tm1", "value_tm1", "done_tm1", "episode_return", "episode_length", "key", "env_steps")


def make_pqn_learner(config: DQNConfig, num_actions: int, axis_name: str | None = None) -> Learner:
    """PQN's ``init`` / ``step`` for ``config.num_envs`` envs (``config.algo`` is not read: this is PQN).

    Args:
      config: the run's DQNConfig (see the module doc for the fields PQN reads).
      num_actions: A.
      axis_name: vmap axis name over seeds, if `step` is vmapped (`jaxrl.dqn.learner_base.cond_over_seeds`).

    Returns:
      Learner(init, step, dqn, replay=None, epsilon, num_envs, num_actions, axis_name).
    """
    num_actions = check_int("num_actions", num_actions)
    dqn = make_dqn(config, num_actions)
    epsilon = epsilon_schedule(config.epsilon_start, config.epsilon_end, config.epsilon_decay_steps)
    bound = _Bound(config=config, dqn=dqn, optimizer=make_optimizer(config), epsilon=epsilon, axis_name=axis_name)
    return Learner(init=functools.partial(init, bound=bound), step=functools.partial(step, bound=bound), dqn=dqn,
                   replay=None, epsilon=epsilon, num_envs=config.num_envs, num_actions=num_actions,
                   axis_name=axis_name)
