"""DQN agent as pure functions: the batch loss, optax update, target sync, ε-greedy act.

The per-example losses and targets (TD, Munchausen, quantile) are in `jaxrl.dqn.losses`; here the network is
applied to a batch and they are vmapped over its rows.

References:
  Mnih et al., 2015, "Human-level control through deep reinforcement learning" (DQN, target network, Huber loss).

    dqn = make_dqn(DQNConfig(), num_actions=6)
    state = dqn.init(key)
    state, metrics, td_error = jax.jit(dqn.update)(state, batch)  # batch: Transition, leaves [B, ...]
    state, metrics, td_error = dqn.update(state, batch, weights)  # weights [B]: prioritized replay
    actions = dqn.act(state.params, obs, key, epsilon)            # obs [N, 128] uint8 -> [N] int32
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxrl.dqn.buffers.replay import Transition
from jaxrl.dqn.config import DQNConfig, check_int
from jaxrl.dqn.encoders import encode
from jaxrl.dqn.envs.atari import NUM_RAM_BYTES
from jaxrl.dqn.losses import munchausen_target, quantile_td_loss, td_error
from jaxrl.dqn.network import QNetwork

Params = Any


class DQNState(NamedTuple):
    """Everything an update changes."""

    params: Params  # online Q-network parameters (flax variables dict)
    target_params: Params  # target network parameters, same tree as params
    opt_state: optax.OptState  # optax Adam state (+ clipping state)
    num_updates: jax.Array  # () int32, optimizer steps taken


class DQN(NamedTuple):
    """The agent's pure functions, with the hyper-parameters bound by `make_dqn`."""

    init: Callable[[jax.Array], DQNState]
    loss: Callable[..., tuple[jax.Array, dict]]
    update: Callable[..., tuple[DQNState, dict, jax.Array]]  # (state, batch, weights [B] = None) -> (+ td [B])
    act: Callable[..., jax.Array]
    q_values: Callable[[Params, jax.Array], jax.Array]
    # obs [..., D] uint8 -> the network's input (`jaxrl.dqn.encoders.encode`); q_values(params, x, encoded=True)
    # reads that input, so a learner that passes over the same rows several times encodes them once
    encode: Callable[[jax.Array], jax.Array]
    # (params, obs [..., D]) -> the head's [..., A, K] values (K = max(num_quantiles, 1); q_values is their mean
    # over K); ``encoded=True`` as q_values
    quantile_values: Callable[..., jax.Array]


def _loss(params, target_params, batch: Transition, weights=None, *, network, gamma, huber_delta, double_dqn,
          munchausen_alpha=0.0, munchausen_temperature=0.03):
    """Mean (importance-weighted) TD loss over a batch.

    Args:
      batch: Transition, leaves [B, ...].
      weights: optional [B] importance weights (prioritized replay); None weighs every row 1.

    Returns:
      (() loss, aux): aux has scalars loss and q_mean, and td_error [B].
    """
    if batch.discount is None:  # one-step rows
        discount_t = gamma * (1.0 - batch.terminated.astype(jnp.float32))  # [B]
    else:  # n-step rows carry their own gamma^k (0 after a terminal)
        discount_t = batch.discount.astype(jnp.float32)  # [B]
    reward = batch.reward.astype(jnp.float32)  # [B]
    if network.num_quantiles > 0:
        per_example, errors, q_tm1 = _quantile_terms(params, target_params, batch, reward, discount_t,
                                                     network=network, huber_delta=huber_delta,
                                                     double_dqn=double_dqn)
    else:
        q_tm1 = network.apply(params, batch.obs)  # [B, A]
        q_t_target = network.apply(target_params, batch.next_obs)  # [B, A]
        q_t_online = network.apply(params, batch.next_obs) if double_dqn else None  # [B, A]
        if munchausen_alpha > 0:
            q_tm1_target = network.apply(target_params, batch.obs)  # [B, A]
            target = jax.vmap(functools.partial(munchausen_target, temperature=munchausen_temperature,
                                                alpha=munchausen_alpha))(
                q_tm1_target, batch.action, reward, discount_t, q_t_target)  # [B]
            errors = target - _taken(q_tm1, batch.action)
        else:
            errors = jax.vmap(td_error, in_axes=(0, 0, 0, 0, 0, None if q_t_online is None else 0))(
                q_tm1, batch.action, reward, discount_t, q_t_target, q_t_online
            )  # [B]
        per_example = optax.losses.huber_loss(errors, delta=huber_delta)  # [B]
    loss = jnp.mean(per_example if weights is None else weights * per_example)
    return loss, {"loss": loss, "q_mean": jnp.mean(_taken(q_tm1, batch.action)), "td_error": errors}


def _taken(q: jax.Array, action: jax.Array) -> jax.Array:
    """q [B, A], action [B] -> [B]: each row's value of its action."""
    return jnp.take_along_axis(q, action[:, None].astype(jnp.int32), axis=1)[:, 0]


def _quantile_terms(params, target_params, batch, reward, discount_t, *, network, huber_delta, double_dqn):
    """`_loss`'s per-row terms for a quantile head: `quantile_td_loss` [B], its mean TD error [B] and the
    online Q-values (quantile means) at o_tm1 [B, A]."""
    quantiles = functools.partial(network.apply, method=type(network).quantile_values)
    dist_tm1 = quantiles(params, batch.obs)  # [B, A, N]
    dist_t_target = quantiles(target_params, batch.next_obs)  # [B, A, N]
    if double_dqn:
        q_t_selector = network.apply(params, batch.next_obs)  # [B, A] online means choose the action
    else:
        q_t_selector = jnp.mean(dist_t_target, axis=-1)  # [B, A]
    per_example, errors = jax.vmap(functools.partial(quantile_td_loss, huber_delta=huber_delta))(
        dist_tm1, batch.action, reward, discount_t, dist_t_target, q_t_selector)  # [B], [B]
    return per_example, errors, jnp.mean(dist_tm1, axis=-1)


def _init(key, *, network, optimizer, obs_size: int = NUM_RAM_BYTES) -> DQNState:
    """Fresh parameters (target = online copy) and optimizer state."""
    params = network.init(key, jnp.zeros((1, obs_size), jnp.uint8))
    return DQNState(
        params=params,
        target_params=jax.tree.map(jnp.copy, params),
        opt_state=optimizer.init(params),
        num_updates=jnp.zeros((), jnp.int32),
    )


def _update(state: DQNState, batch: Transition, weights: jax.Array | None = None, *, loss_fn, optimizer,
            target_update_period, tau) -> tuple[DQNState, dict, jax.Array]:
    """One optimizer step on `batch`, then the target sync.

    Args:
      state: the agent's state.
      batch: Transition, leaves [B, ...].
      weights: optional [B] float32 loss weights (prioritized replay's importance weights); None weighs every
        row 1 (the plain mean, not a multiplication by ones).

    Returns:
      (state, metrics of scalars loss / q_mean / grad_norm, td_error [B] of the batch before the step: the
      priorities of prioritized replay; unused, it costs nothing under `jit`).
    """
    grads, aux = jax.grad(loss_fn, has_aux=True)(state.params, state.target_params, batch, weights)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    num_updates = state.num_updates + 1
    if tau < 1.0:
        target_params = optax.incremental_update(params, state.target_params, step_size=tau)
    else:
        target_params = optax.periodic_update(
            params, state.target_params, num_updates, target_update_period
        )
    metrics = {"loss": aux["loss"], "q_mean": aux["q_mean"], "grad_norm": optax.tree.norm(grads)}
    return DQNState(params, target_params, opt_state, num_updates), metrics, aux["td_error"]


def _q_values(params, obs, *, network, encoded: bool = False):
    """obs [..., D] uint8 (``encoded``: the network's input, ``DQN.encode(obs)``) -> q [..., A] float32."""
    return network.clone(encoded_input=True).apply(params, obs) if encoded else network.apply(params, obs)


def _quantile_values(params, obs, *, network, encoded: bool = False):
    """As `_q_values`, the head's values before their mean: [..., A, max(num_quantiles, 1)] float32."""
    network = network.clone(encoded_input=True) if encoded else network
    return network.apply(params, obs, method=type(network).quantile_values)


def epsilon_greedy(q: jax.Array, key: jax.Array, epsilon) -> jax.Array:
    """ε-greedy actions from Q-values, independent per env.

    Args:
      q: [N, A] Q-values.
      key: PRNG key, split into one key per env.
      epsilon: () probability of a uniformly random action over ALL A actions.

    Returns:
      actions: [N] int32.
    """
    assert q.ndim == 2, q.shape
    greedy = jnp.argmax(q, axis=-1).astype(jnp.int32)  # [N]

    def one_env(env_key, greedy_action):
        explore_key, action_key = jax.random.split(env_key)
        random_action = jax.random.randint(action_key, (), 0, q.shape[-1], jnp.int32)
        return jnp.where(jax.random.uniform(explore_key) < epsilon, random_action, greedy_action)

    return jax.vmap(one_env)(jax.random.split(key, q.shape[0]), greedy)


def epsilon_greedy_act(params, obs, key, epsilon, *, network, num_actions):
    """ε-greedy actions of the Q-network on ``obs`` [N, D] uint8 (`epsilon_greedy`); [N] int32."""
    assert obs.ndim == 2, obs.shape
    q = network.apply(params, obs)
    assert q.shape[-1] == num_actions, q.shape
    return epsilon_greedy(q, key, epsilon)


def epsilon_schedule(
    start: float = 0.08, end: float = 0.01, decay_steps: int = 1_000_000
) -> optax.Schedule:
    """Linear ε from `start` to `end` over `decay_steps` env steps, constant after (optax.linear_schedule)."""
    for name, value in (("start", start), ("end", end)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"epsilon {name} must be in [0, 1], got {value}.")
    return optax.linear_schedule(start, end, check_int("decay_steps", decay_steps, 0))


def make_dqn(config: DQNConfig, num_actions: int) -> DQN:
    """Build the DQN agent's pure functions from ``config``'s network and loss fields.

    Reads: hidden_sizes, obs_encoding, conv_channels, conv_strides, conv_layer_norm, dueling, layer_norm,
    num_quantiles (the Q-network, `jaxrl.dqn.network.QNetwork`; its input is ``config.obs_size`` bytes),
    learning_rate, learning_rate_end (a linear decay over ``config.learning_rate_decay_updates`` updates,
    ``optax.linear_schedule``), max_grad_norm (global-norm clipping before Adam), gamma, huber_delta, double_dqn
    (van Hasselt et al., 2016), munchausen_alpha / munchausen_temperature (`munchausen_target`; with n-step rows the
    bonus is that of the row's first action only), num_quantiles > 0 (QR-DQN, `quantile_td_loss`: huber_delta is
    then the quantile Huber threshold kappa), target_update_period (hard copy every this many updates when tau == 1)
    and tau (< 1: Polyak averaging after every update). ``config`` was validated on construction.

    Args:
      config: the run's DQNConfig.
      num_actions: A, size of the discrete action set.

    Returns:
      DQN(init, loss, update, act, q_values, encode, quantile_values).
    """
    num_actions = check_int("num_actions", num_actions)
    network = QNetwork(num_actions=num_actions, hidden_sizes=config.hidden_sizes,
                       obs_encoding=config.obs_encoding, conv_channels=config.conv_channels,
                       conv_strides=config.conv_strides, conv_layer_norm=config.conv_layer_norm,
                       dueling=config.dueling, layer_norm=config.layer_norm, num_quantiles=config.num_quantiles)
    optimizer = make_optimizer(config)
    loss_fn = functools.partial(
        _loss, network=network, gamma=config.gamma, huber_delta=config.huber_delta, double_dqn=config.double_dqn,
        munchausen_alpha=config.munchausen_alpha, munchausen_temperature=config.munchausen_temperature,
    )
    return DQN(
        init=functools.partial(_init, network=network, optimizer=optimizer, obs_size=config.obs_size),
        loss=loss_fn,
        update=functools.partial(_update, loss_fn=loss_fn, optimizer=optimizer,
                                 target_update_period=config.target_update_period, tau=config.tau),
        act=functools.partial(epsilon_greedy_act, network=network, num_actions=num_actions),
        q_values=functools.partial(_q_values, network=network),
        encode=functools.partial(encode, encoding=config.obs_encoding),
        quantile_values=functools.partial(_quantile_values, network=network),
    )


def make_optimizer(config: DQNConfig) -> optax.GradientTransformation:
    """Adam (or RAdam, ``optimizer="radam"``) at learning_rate, decaying linearly to learning_rate_end over
    ``config.learning_rate_decay_updates`` updates when that is set, after optional global-norm clipping."""
    learning_rate = config.learning_rate
    if config.learning_rate_end is not None:
        learning_rate = optax.linear_schedule(config.learning_rate, config.learning_rate_end,
                                              config.learning_rate_decay_updates)
    if config.optimizer == "radam":
        optimizer = optax.radam(learning_rate, eps=config.adam_eps)
    else:
        optimizer = optax.adam(learning_rate, eps=config.adam_eps)
    if config.max_grad_norm is not None:
        optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optimizer)
    return optimizer
