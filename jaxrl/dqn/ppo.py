"""PPO on the same RAM envs as the DQN agent: a policy-gradient check of what an MLP on Atari RAM learns.

CleanRL's Atari PPO (`ppo_atari_envpool_xla_jax.py`: 8 envs x 128 steps, GAE lambda 0.95, gamma 0.99, 4 epochs
of 4 minibatches, clip 0.1, entropy 0.01, Adam 2.5e-4 annealed to 0, eps 1e-5, gradient norm 0.5, rewards
clipped to their sign, a lost life ends the value's horizon) with an MLP actor-critic on the encoded RAM
(`jaxrl.dqn.encoders`, ``obs_encoding``) instead of the conv net, on any `jaxrl.dqn.envs.atari.XlaEnv` (envpool's
XLA step as `jaxrl dqn train --loop xla` uses, or the toy env in tests).

Differences from CleanRL kept on purpose: envpool's next-step auto-reset row (the step after an episode ends,
whose action is ignored) is masked out of the loss instead of trained on; a life loss cuts the GAE horizon
without resetting the game (as ``life_loss_terminal`` does for DQN), so episode returns are full games.

    ppo = make_ppo(env, PPOConfig(total_steps=20_000))
    state = ppo.init(jax.random.key(0))
    state, finished, losses = ppo.iteration(state)      # one rollout + its epochs of updates, jitted

``experiments/ppo_ram_check.py`` is the command line (and docs/notes/dqn-learning.md the results).
"""
from __future__ import annotations

import dataclasses
import re
import time
from functools import partial
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrl.dqn.config import GAME_ENCODINGS, OBS_ENCODINGS, Choice, Int, Real, Sizes
from jaxrl.dqn.encoders import encode
from jaxrl.dqn.envs.atari import XlaEnv
from jaxrl.dqn.run.train import keep_recent, mean_or_nan


def _field(default, help: str, rule) -> Any:
    """A PPOConfig field with its help text and validation rule (``jaxrl.dqn.config``'s rules)."""
    return dataclasses.field(default=default, metadata={"help": help, "rule": rule})


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO's settings (CleanRL's Atari PPO defaults); a bad value raises a ValueError naming the field."""

    total_steps: int = _field(2_500_000, "env steps (x4 frames)", Int())
    seed: int = _field(0, "PRNG and env seed", Int(0))
    num_envs: int = _field(8, "envs stepped together", Int())
    num_steps: int = _field(128, "rollout length per env", Int())
    num_minibatches: int = _field(4, "minibatches per epoch", Int())
    epochs: int = _field(4, "passes over each rollout", Int())
    learning_rate: float = _field(2.5e-4, "Adam's initial step size (annealed linearly to 0)",
                                  Real(0.0, low_open=True))
    gamma: float = _field(0.99, "discount", Real(0.0, 1.0))
    gae_lambda: float = _field(0.95, "GAE's lambda", Real(0.0, 1.0))
    clip: float = _field(0.1, "clip range of the policy ratio and of the value change", Real(0.0, low_open=True))
    ent_coef: float = _field(0.01, "weight of the entropy bonus", Real(0.0))
    vf_coef: float = _field(0.5, "weight of the value loss", Real(0.0))
    max_grad_norm: float = _field(0.5, "global gradient norm clip", Real(0.0, low_open=True))
    hidden_sizes: tuple[int, ...] = _field((256, 256), "widths of the shared ReLU trunk", Sizes())
    log_every: int = _field(50, "iterations between log rows", Int())
    frame_stack: int = _field(1, "observe each env's last K RAM snapshots", Int())
    obs_encoding: str = _field("scale", "how the network reads the RAM (jaxrl.dqn.encoders)",
                               Choice(OBS_ENCODINGS))

    def __post_init__(self):
        if isinstance(self.hidden_sizes, list):
            object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))
        for field in dataclasses.fields(self):
            field.metadata["rule"](field.name, getattr(self, field.name))
        if self.num_envs * self.num_steps % self.num_minibatches:
            raise ValueError(f"num_envs * num_steps ({self.num_envs} * {self.num_steps}) must be divisible by "
                             f"num_minibatches ({self.num_minibatches})")
        if self.obs_encoding in GAME_ENCODINGS and self.frame_stack < 2:
            raise ValueError(f"obs_encoding={self.obs_encoding!r} needs frame_stack >= 2 (bullets are seen as "
                             f"changes between consecutive RAM snapshots), got {self.frame_stack}")


def as_flags(message: str) -> str:
    """``message`` with each PPOConfig field name written as its command-line flag (``num_envs`` -> ``--num-envs``)."""
    names = sorted((field.name for field in dataclasses.fields(PPOConfig)), key=len, reverse=True)
    return re.sub(r"\b(" + "|".join(names) + r")\b", lambda match: "--" + match.group(1).replace("_", "-"), message)


class ActorCritic(nn.Module):
    """MLP actor-critic on encoded RAM: shared ReLU trunk, linear policy logits [..., A] and value [...]."""

    num_actions: int
    hidden_sizes: tuple[int, ...] = (256, 256)
    obs_encoding: str = "scale"

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = encode(obs, self.obs_encoding)
        x = x.reshape(obs.shape[:-1] + (-1,))  # a spatial encoding ("planes") is flattened for the MLP
        for width in self.hidden_sizes:
            x = nn.relu(nn.Dense(width, kernel_init=nn.initializers.orthogonal(np.sqrt(2)))(x))
        logits = nn.Dense(self.num_actions, kernel_init=nn.initializers.orthogonal(0.01))(x)
        value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0))(x)[..., 0]
        return logits, value


class Rollout(NamedTuple):
    """T steps of N envs (leaves [T, N, ...])."""

    obs: jax.Array  # uint8 [T, N, obs_size]
    action: jax.Array  # int32
    log_prob: jax.Array  # float32, of the action under the acting policy
    value: jax.Array  # float32
    reward: jax.Array  # float32, clipped to its sign
    done: jax.Array  # bool: terminated, truncated or a life lost at this step (no bootstrap past it)
    valid: jax.Array  # bool: False on envpool's auto-reset row (the action was ignored)


class RunnerState(NamedTuple):
    params: dict
    opt_state: optax.OptState
    env_state: object
    obs: jax.Array  # uint8 [N, obs_size]
    needs_reset: jax.Array  # bool [N]: the next step is an auto-reset row
    episode_return: jax.Array  # float32 [N], raw reward of the running game
    key: jax.Array


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
    weight = batch.valid.astype(jnp.float32)
    count = jnp.maximum(weight.sum(), 1.0)

    def mean(x):
        return jnp.sum(x * weight) / count

    adv_mean = mean(advantages)
    adv_std = jnp.sqrt(mean((advantages - adv_mean) ** 2))
    adv = (advantages - adv_mean) / (adv_std + 1e-8)
    ratio = jnp.exp(log_prob - batch.log_prob)
    policy_loss = mean(jnp.maximum(-adv * ratio, -adv * jnp.clip(ratio, 1 - clip, 1 + clip)))
    value_clipped = batch.value + jnp.clip(value - batch.value, -clip, clip)
    value_loss = 0.5 * mean(jnp.maximum((value - returns) ** 2, (value_clipped - returns) ** 2))
    entropy = mean(-jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1))
    return policy_loss + vf_coef * value_loss - ent_coef * entropy, (policy_loss, value_loss, entropy)


def rollout_step(state: RunnerState, _, *, network: ActorCritic, env: XlaEnv):
    """One env step with actions sampled from the policy (a `lax.scan` body).

    Returns:
      (state, (row, finished)): row, a Rollout of this step's [N] leaves; finished [N], the return of each game
      that ended at this step, NaN elsewhere.
    """
    key, act_key = jax.random.split(state.key)
    logits, value = network.apply(state.params, state.obs)
    action = jax.random.categorical(act_key, logits)
    log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], axis=-1)[:, 0]
    env_state, (obs, reward, terminated, truncated, life_lost) = env.step(state.env_state, action)
    ended = terminated | truncated
    row = Rollout(state.obs, action, log_prob, value, jnp.sign(reward), ended | life_lost, ~state.needs_reset)
    episode_return = state.episode_return + reward
    finished = jnp.where(ended, episode_return, jnp.nan)  # NaN: no game ended here
    new_state = state._replace(env_state=env_state, obs=obs, needs_reset=ended,
                               episode_return=jnp.where(ended, 0.0, episode_return), key=key)
    return new_state, (row, finished)


class PPO(NamedTuple):
    """make_ppo's functions: init(key) -> RunnerState; collect(state) -> (state, Rollout [T, N], finished [T, N]
    returns of the games that ended at each step, NaN elsewhere); iteration(state) -> (state, finished, mean
    losses (total, policy, value, entropy)) = collect + the epochs of updates, jitted; iterations: how many
    make total_steps; network: the ActorCritic."""

    init: Callable
    collect: Callable
    iteration: Callable
    iterations: int
    network: ActorCritic


def make_ppo(env: XlaEnv, config: PPOConfig) -> PPO:
    """PPO on env's N envs with ``config``'s settings (its num_envs is the env's, not the config's)."""
    n, t = env.num_envs, config.num_steps
    network = ActorCritic(env.num_actions, tuple(config.hidden_sizes), config.obs_encoding)
    iterations = max(1, config.total_steps // (n * t))
    minibatch = n * t // config.num_minibatches
    schedule = optax.linear_schedule(config.learning_rate, 0.0, iterations * config.epochs * config.num_minibatches)
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(schedule, eps=1e-5))
    loss_grad = jax.value_and_grad(partial(ppo_loss, apply_fn=network.apply, clip=config.clip,
                                           ent_coef=config.ent_coef, vf_coef=config.vf_coef), has_aux=True)

    def init(key):
        key, init_key = jax.random.split(key)
        env_state, obs = env.reset()
        params = network.init(init_key, jnp.zeros((1,) + obs.shape[1:], jnp.uint8))
        return RunnerState(params, optimizer.init(params), env_state, obs, jnp.zeros(n, bool),
                           jnp.zeros(n, jnp.float32), key)

    def collect(state: RunnerState):
        step = partial(rollout_step, network=network, env=env)
        state, (rollout, finished) = jax.lax.scan(step, state, None, length=t)
        return state, rollout, finished

    def epoch(flat, carry, key):
        """One pass over the flat rollout [n t] in shuffled minibatches."""
        order = jax.random.permutation(key, n * t).reshape(config.num_minibatches, minibatch)

        def minibatch_update(carry, idx):
            params, opt_state = carry
            batch, adv, ret = jax.tree.map(lambda x: x[idx], flat)
            (loss, aux), grads = loss_grad(params, batch=batch, advantages=adv, returns=ret)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), (loss, *aux)

        return jax.lax.scan(minibatch_update, carry, order)

    @jax.jit
    def iteration(state: RunnerState):
        state, rollout, finished = collect(state)
        _, last_value = network.apply(state.params, state.obs)
        advantages, returns = gae(rollout, last_value, config.gamma, config.gae_lambda)
        flat = jax.tree.map(lambda x: x.reshape((n * t,) + x.shape[2:]), (rollout, advantages, returns))
        key, *epoch_keys = jax.random.split(state.key, config.epochs + 1)
        (params, opt_state), losses = jax.lax.scan(partial(epoch, flat), (state.params, state.opt_state),
                                                   jnp.stack(epoch_keys))
        state = state._replace(params=params, opt_state=opt_state, key=key)
        return state, finished, jax.tree.map(jnp.mean, losses)

    return PPO(init, jax.jit(collect), iteration, iterations, network)


def evaluate(network, params, env: XlaEnv, key, *, greedy: bool, max_steps: int) -> np.ndarray:
    """The return of the first full game of each of env's M envs with the frozen policy, [M] float64."""
    m = env.num_envs

    def cond(carry):
        _, _, _, done, _, steps = carry
        return (~jnp.all(done)) & (steps < max_steps)

    def body(carry):
        env_state, obs, total, done, key, steps = carry
        key, act_key = jax.random.split(key)
        logits, _ = network.apply(params, obs)
        action = jnp.argmax(logits, -1) if greedy else jax.random.categorical(act_key, logits)
        env_state, (obs, reward, terminated, truncated, _) = env.step(env_state, action)
        total = total + jnp.where(done, 0.0, reward)
        return env_state, obs, total, done | terminated | truncated, key, steps + 1

    env_state, obs = env.reset()
    carry = (env_state, obs, jnp.zeros(m), jnp.zeros(m, bool), key, jnp.int32(0))
    carry = jax.jit(lambda c: jax.lax.while_loop(cond, body, c))(carry)
    if not bool(jnp.all(carry[3])):
        raise RuntimeError(f"evaluation stopped after {max_steps} steps with unfinished games")
    return np.asarray(carry[2], np.float64)


def train(env: XlaEnv, config: PPOConfig, log=print) -> tuple[ActorCritic, Any, list[dict]]:
    """Train PPO on env for config.total_steps env steps; returns (network, params, logged rows).

    A row every ``log_every`` iterations and at the end: iteration, env_steps, frames (4 per step),
    mean_return_100 (training return of the last 100 games), episodes_in_mean, loss, value_loss, entropy,
    steps_per_s, wall_s.
    """
    ppo = make_ppo(env, config)
    state = ppo.init(jax.random.key(config.seed))
    recent: list[float] = []
    rows = []
    start = time.perf_counter()
    for i in range(1, ppo.iterations + 1):
        state, finished, losses = ppo.iteration(state)
        finished = np.asarray(finished)
        recent = keep_recent(recent, finished[~np.isnan(finished)])
        if i % config.log_every == 0 or i == ppo.iterations:
            steps = i * env.num_envs * config.num_steps
            wall = time.perf_counter() - start
            row = dict(iteration=i, env_steps=steps, frames=4 * steps,
                       mean_return_100=mean_or_nan(recent), episodes_in_mean=len(recent),
                       loss=float(losses[0]), value_loss=float(losses[2]), entropy=float(losses[3]),
                       steps_per_s=steps / wall, wall_s=wall)
            rows.append(row)
            log(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    return ppo.network, state.params, rows
