"""PPO on the same RAM envs and encodings as the DQN agent (`jaxrl.dqn.on_policy` does the rollouts and updates).

CleanRL's Atari PPO (`ppo_atari_envpool_xla_jax.py`: 8 envs x 128 steps, GAE lambda 0.95, gamma 0.99, 4 epochs
of 4 minibatches, clip 0.1, entropy 0.01, Adam 2.5e-4 annealed to 0, eps 1e-5, gradient norm 0.5, rewards
clipped to their sign, a lost life ends the value's horizon) with the Q-network's torso
(`jaxrl.dqn.network.features`: an MLP on the encoded RAM, or convolutions on the spatial encodings) instead of
the Nature CNN on pixels, on any `jaxrl.dqn.envs.atari.XlaEnv`.

Differences from CleanRL kept on purpose: envpool's next-step auto-reset row is masked out of the loss instead of
trained on; a life loss cuts the GAE horizon without resetting the game, so episode returns are full games.

    ppo = make_ppo(env, PPOConfig(total_steps=20_000))
    state = ppo.init(jax.random.key(0))
    state, finished, losses = ppo.iteration(state)      # one rollout + its epochs of updates, jitted

``experiments/train_on_policy.py ppo`` is the command line (and docs/notes/dqn-learning.md the results).
"""
from __future__ import annotations

import dataclasses
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrl.dqn.agent import epsilon_greedy
from jaxrl.dqn.config import Real
from jaxrl.dqn.encoders import encode
from jaxrl.dqn.envs.atari import XlaEnv
from jaxrl.dqn.network import features
from jaxrl.dqn.losses import masked_mean
from jaxrl.dqn.on_policy import OnPolicy, OnPolicyConfig, Rollout, config_field, make_on_policy


@dataclasses.dataclass(frozen=True)
class PPOConfig(OnPolicyConfig):
    """PPO's settings (CleanRL's Atari PPO defaults): OnPolicyConfig's and the fields below."""

    gae_lambda: float = config_field(0.95, "GAE's lambda", Real(0.0, 1.0))
    clip: float = config_field(0.1, "clip range of the policy ratio and of the value change",
                               Real(0.0, low_open=True))
    ent_coef: float = config_field(0.01, "weight of the entropy bonus", Real(0.0))
    vf_coef: float = config_field(0.5, "weight of the value loss", Real(0.0))


def as_flags(message: str) -> str:
    """``message`` with each PPOConfig field name written as its command-line flag."""
    return PPOConfig.as_flags(message)


class ActorCritic(nn.Module):
    """Actor-critic on encoded RAM: the Q-network's torso (`jaxrl.dqn.network.features`: convolutions for the
    spatial encodings, then a shared ReLU trunk), linear policy logits [..., A] and value [...].

    ``encoded_input=True`` (a clone, same parameters) reads ``jaxrl.dqn.encoders.encode(obs, obs_encoding)``
    instead of the RAM: the updates encode each rollout once, not once per minibatch.
    """

    num_actions: int
    hidden_sizes: tuple[int, ...] = (256, 256)
    obs_encoding: str = "scale"
    conv_channels: tuple[int, ...] = (16, 32)
    conv_strides: tuple[int, ...] | None = None
    conv_layer_norm: bool = False
    encoded_input: bool = False

    @classmethod
    def from_config(cls, num_actions: int, config: PPOConfig) -> "ActorCritic":
        """The network ``config`` describes (its hidden_sizes, obs_encoding and conv_* fields)."""
        return cls(num_actions, tuple(config.hidden_sizes), config.obs_encoding, tuple(config.conv_channels),
                   tuple(config.conv_strides), config.conv_layer_norm)

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = features(obs, self.obs_encoding, self.conv_channels, self.hidden_sizes, conv_strides=self.conv_strides,
                     conv_layer_norm=self.conv_layer_norm, kernel_init=nn.initializers.orthogonal(np.sqrt(2)),
                     encoded=self.encoded_input)
        logits = nn.Dense(self.num_actions, kernel_init=nn.initializers.orthogonal(0.01))(x)
        value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0))(x)[..., 0]
        return logits, value


def gae(rollout: Rollout, last_value: jax.Array, gamma: float, lam: float) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimates and returns, [T, N] each (Schulman et al. 2016).

    A step with ``done`` does not bootstrap; an auto-reset row's estimate is never used (masked in the loss),
    and the row before it is ``done``, so nothing flows across an episode end.
    """

    def backward(carry, step):
        next_advantage, next_value = carry
        value, reward, done = step
        not_done = 1.0 - done.astype(jnp.float32)
        delta = reward + gamma * next_value * not_done - value
        advantage = delta + gamma * lam * not_done * next_advantage
        return (advantage, value), advantage

    _, advantages = jax.lax.scan(
        backward, (jnp.zeros_like(last_value), last_value), (rollout.value, rollout.reward, rollout.done),
        reverse=True,
    )
    return advantages, advantages + rollout.value


def ppo_loss(params, apply_fn, batch: Rollout, advantages, returns, *, clip: float, ent_coef: float,
             vf_coef: float):
    """Clipped surrogate + clipped value loss - entropy bonus, means over the valid rows of a flat batch [B].

    Returns:
      (loss, (policy_loss, value_loss, entropy)), scalars.
    """
    logits, value = apply_fn(params, batch.obs)
    log_probs = jax.nn.log_softmax(logits)
    log_prob = jnp.take_along_axis(log_probs, batch.action[:, None], axis=-1)[:, 0]

    def mean(x):
        return masked_mean(x, batch.valid)

    adv_mean = mean(advantages)
    adv_std = jnp.sqrt(mean((advantages - adv_mean) ** 2))
    adv = (advantages - adv_mean) / (adv_std + 1e-8)
    ratio = jnp.exp(log_prob - batch.log_prob)
    policy_loss = mean(jnp.maximum(-adv * ratio, -adv * jnp.clip(ratio, 1 - clip, 1 + clip)))
    value_clipped = batch.value + jnp.clip(value - batch.value, -clip, clip)
    value_loss = 0.5 * mean(jnp.maximum((value - returns) ** 2, (value_clipped - returns) ** 2))
    entropy = mean(-jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1))
    return policy_loss + vf_coef * value_loss - ent_coef * entropy, (policy_loss, value_loss, entropy)


def make_ppo(env: XlaEnv, config: PPOConfig) -> OnPolicy:
    """PPO on env's N envs with ``config``'s settings (its num_envs is the env's, not the config's).

    The losses ``iteration`` returns are (loss, policy_loss, value_loss, entropy); the loss reads the rollout's
    observations encoded once (``ActorCritic(encoded_input=True)``).
    """
    network = ActorCritic.from_config(env.num_actions, config)
    encoded_network = network.clone(encoded_input=True)
    updates = max(1, config.total_steps // (env.num_envs * config.num_steps)) * config.epochs * config.num_minibatches
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                            optax.adam(optax.linear_schedule(config.learning_rate, 0.0, updates), eps=1e-5))

    def policy(params, obs, key, _env_steps):
        logits, value = network.apply(params, obs)
        action = jax.random.categorical(key, logits)
        return action, jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], axis=-1)[:, 0], value

    def targets(params, rollout, last_obs):
        _, last_value = network.apply(params, last_obs)
        advantages, returns = gae(rollout, last_value, config.gamma, config.gae_lambda)
        return dict(advantages=advantages, returns=returns)

    def loss(params, batch, batch_targets):
        return ppo_loss(params, encoded_network.apply, batch, batch_targets["advantages"], batch_targets["returns"],
                        clip=config.clip, ent_coef=config.ent_coef, vf_coef=config.vf_coef)

    return make_on_policy(env, network, policy, targets, loss, optimizer, num_steps=config.num_steps,
                          num_minibatches=config.num_minibatches, epochs=config.epochs,
                          total_steps=config.total_steps, encode=partial(encode, encoding=config.obs_encoding))


def act(network: ActorCritic, *, greedy: bool, epsilon: float = 0.0):
    """The frozen policy for `jaxrl.dqn.on_policy.evaluate`: argmax of the logits, or a sample of them.

    ``epsilon`` > 0 (greedy only) takes a uniformly random action with that probability, per env, exactly as the
    DQN agent's evaluation does (`jaxrl.dqn.agent.epsilon_greedy` on the logits), so both are scored alike.
    """
    if epsilon and not greedy:
        raise ValueError(f"epsilon={epsilon} needs greedy=True (a sampled policy already explores)")

    def choose(params, obs, key):
        logits, _ = network.apply(params, obs)
        if epsilon:
            return epsilon_greedy(logits, key, epsilon)
        return jnp.argmax(logits, -1) if greedy else jax.random.categorical(key, logits)

    return choose
