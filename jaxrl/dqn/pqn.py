"""PQN: Q-learning from many envs without a replay buffer or target network (Gallici et al., 2024, "Simplifying
Deep Temporal Difference Learning"; CleanRL's ``pqn_atari_envpool.py``, ``mttga/purejaxql``).

Each iteration steps N envs T times epsilon-greedily (`jaxrl.dqn.on_policy` does the rollouts and updates),
computes Q(lambda) returns over the rollout with max_a Q bootstraps, then regresses Q(s, a) on them for a few
epochs of minibatches. LayerNorm in the Q-network keeps this stable without a target network. Settings are
CleanRL's Atari ones (8 envs x 128 steps, 4 epochs of 4 minibatches, RAdam 2.5e-4 annealed to 0, gradient norm
10, lambda 0.65, gamma 0.99, epsilon 1 -> 0.01 over the first 10% of the steps, rewards clipped to their sign, a
lost life ends the bootstrap horizon) on the RAM envs and encodings of the DQN agent: the network is
`jaxrl.dqn.network.QNetwork` with ``layer_norm=True`` (an MLP on encoded RAM, or convolutions on
``--obs-encoding planes``), so a PQN agent's parameters act, evaluate and play exactly as a DQN agent's.

Differences from CleanRL kept on purpose: the Q(lambda) recursion stops at every episode or life end (CleanRL's
carries the next return across a done; purejaxql's does not); envpool's next-step auto-reset row is left out of
the loss; LayerNorm after the hidden dense layers only (CleanRL also normalises after each convolution).

    pqn = make_pqn(env, PQNConfig(total_steps=20_000))
    state = pqn.init(jax.random.key(0))
    state, finished, losses = pqn.iteration(state)      # one rollout + its epochs of updates, jitted
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from jaxrl.dqn.agent import epsilon_greedy_act, epsilon_schedule
from jaxrl.dqn.config import Real
from jaxrl.dqn.envs.atari import XlaEnv
from jaxrl.dqn.network import QNetwork
from jaxrl.dqn.on_policy import OnPolicy, OnPolicyConfig, Rollout, config_field, make_on_policy, masked_mean


@dataclasses.dataclass(frozen=True)
class PQNConfig(OnPolicyConfig):
    """PQN's settings (CleanRL's Atari PQN defaults): OnPolicyConfig's and the fields below."""

    max_grad_norm: float = config_field(10.0, "global gradient norm clip", Real(0.0, low_open=True))
    q_lambda: float = config_field(0.65, "lambda of the Q(lambda) returns (0: one-step Q-learning targets)",
                                   Real(0.0, 1.0))
    epsilon_start: float = config_field(1.0, "exploration epsilon at the start", Real(0.0, 1.0))
    epsilon_end: float = config_field(0.01, "exploration epsilon after the decay", Real(0.0, 1.0))
    exploration_fraction: float = config_field(0.1, "fraction of total_steps over which epsilon decays linearly",
                                               Real(0.0, 1.0, low_open=True))


def q_lambda_returns(rollout: Rollout, last_value: jax.Array, gamma: float, lam: float) -> jax.Array:
    """Q(lambda) returns [T, N] of a rollout whose ``value`` [T, N] is max_a Q(s_t, a) (Watkins-free, PQN's).

    ``G_t = r_t + gamma (1 - done_t) ((1 - lam) max_a Q(s_{t+1}, a) + lam G_{t+1})``, with ``G_T = last_value``
    [N] = max_a Q(s_T, a) (so the last step is the one-step target). lam = 0 gives one-step Q-learning targets,
    lam = 1 the discounted return to the episode end (or the rollout's bootstrap).
    """
    next_values = jnp.concatenate([rollout.value[1:], last_value[None]], axis=0)

    def backward(next_return, step):
        reward, done, next_value = step
        not_done = 1.0 - done.astype(jnp.float32)
        target = reward + gamma * not_done * ((1.0 - lam) * next_value + lam * next_return)
        return target, target

    _, returns = jax.lax.scan(backward, last_value, (rollout.reward, rollout.done, next_values), reverse=True)
    return returns


def pqn_loss(params, apply_fn, batch: Rollout, returns: jax.Array):
    """Half the mean squared error of Q(s, a) against the Q(lambda) returns [B], over the valid rows.

    Returns:
      (loss, (mean Q(s, a),)), scalars.
    """
    q = apply_fn(params, batch.obs)
    q_taken = jnp.take_along_axis(q, batch.action[:, None], axis=-1)[:, 0]
    return 0.5 * masked_mean((q_taken - returns) ** 2, batch.valid), (masked_mean(q_taken, batch.valid),)


def q_network(config: PQNConfig, num_actions: int) -> QNetwork:
    """The PQN agent's Q-network: `QNetwork` with LayerNorm after each hidden layer."""
    return QNetwork(num_actions, tuple(config.hidden_sizes), config.obs_encoding, tuple(config.conv_channels),
                    layer_norm=True)


def make_pqn(env: XlaEnv, config: PQNConfig) -> OnPolicy:
    """PQN on env's N envs with ``config``'s settings (its num_envs is the env's, not the config's).

    The losses ``iteration`` returns are (loss, mean Q(s, a)).
    """
    network = q_network(config, env.num_actions)
    updates = max(1, config.total_steps // (env.num_envs * config.num_steps)) * config.epochs * config.num_minibatches
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                            optax.radam(optax.linear_schedule(config.learning_rate, 0.0, updates)))

    epsilon = epsilon_schedule(config.epsilon_start, config.epsilon_end,
                               max(1, round(config.exploration_fraction * config.total_steps)))

    def policy(params, obs, key, env_steps):
        action = epsilon_greedy_act(params, obs, key, epsilon(env_steps), network=network,
                                    num_actions=env.num_actions)
        # the bootstrap value max_a Q(s, a) of the state acted in (one more forward pass; XLA shares the work)
        return action, jnp.zeros(obs.shape[:1]), jnp.max(network.apply(params, obs), -1)

    def targets(params, rollout, last_obs):
        last_value = jnp.max(network.apply(params, last_obs), -1)
        return dict(returns=q_lambda_returns(rollout, last_value, config.gamma, config.q_lambda))

    def loss(params, batch, batch_targets):
        return pqn_loss(params, network.apply, batch, batch_targets["returns"])

    return make_on_policy(env, network, policy, targets, loss, optimizer, num_steps=config.num_steps,
                          num_minibatches=config.num_minibatches, epochs=config.epochs,
                          total_steps=config.total_steps)


def act(network: QNetwork, *, epsilon: float):
    """The frozen policy for `jaxrl.dqn.on_policy.evaluate`: epsilon-greedy on the Q-values (0.05: the eval's)."""

    def choose(params, obs, key):
        return epsilon_greedy_act(params, obs, key, epsilon, network=network, num_actions=network.num_actions)

    return choose
