"""An on-policy learner whose whole iteration is one compiled call: many envs stepped together for a rollout of T
steps, targets, epochs of minibatch updates (PPO, `jaxrl.dqn.ppo`, is one `make_on_policy` call).

Its three pieces:

* ``policy(params, obs [N, D], key, env_steps) -> (action [N], log_prob [N], value [N])``: how the rollout acts
  (PPO samples its policy);
* ``targets(params, rollout, last_obs) -> dict of [T, N] arrays``: what the updates regress to (GAE advantages
  and returns), computed once per rollout;
* ``loss(params, batch: Rollout [B], targets: dict of [B]) -> (loss, aux tuple of scalars)``, over the rollout's
  valid rows; with ``encode`` given, ``batch.obs`` is ``encode(obs)`` (the rollout is encoded once, before its
  epochs), else the uint8 RAM.

The rollout follows CleanRL's Atari conventions on the `jaxrl.dqn.envs.atari.XlaEnv` envs (envpool's XLA step,
or the toy env in tests): rewards clipped to their sign, a lost life ends the bootstrap horizon without resetting
the game (so episode returns are full games), and envpool's next-step auto-reset row (the step after an episode
ends, whose action is ignored) is marked invalid and left out of every loss.

    algo = make_on_policy(env, network, policy, targets, loss, optimizer, num_steps=128, num_minibatches=4,
                          epochs=4, total_steps=10_000_000)
    state = algo.init(key)
    state, finished, losses = algo.iteration(state)   # rollout + targets + epochs of updates, one jitted call
"""
from __future__ import annotations

import dataclasses
import re
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrl.dqn.config import GAME_ENCODINGS, OBS_ENCODINGS, Choice, Flag, Int, Real, Sizes
from jaxrl.dqn.envs.atari import XlaEnv


def config_field(default, help: str, rule) -> Any:
    """A config field with its help text and validation rule (``jaxrl.dqn.config``'s rules)."""
    return dataclasses.field(default=default, metadata={"help": help, "rule": rule})


@dataclasses.dataclass(frozen=True)
class OnPolicyConfig:
    """The settings of an on-policy learner (CleanRL's Atari defaults); a bad value raises a ValueError naming the
    field.

    Subclasses add their own fields; ``as_flags`` turns field names in an error message into flags.
    """

    total_steps: int = config_field(2_500_000, "env steps (x4 frames)", Int())
    seed: int = config_field(0, "PRNG and env seed", Int(0))
    num_envs: int = config_field(8, "envs stepped together", Int())
    num_steps: int = config_field(128, "rollout length per env", Int())
    num_minibatches: int = config_field(4, "minibatches per epoch", Int())
    epochs: int = config_field(4, "passes over each rollout", Int())
    learning_rate: float = config_field(2.5e-4, "initial step size (annealed linearly to 0)",
                                        Real(0.0, low_open=True))
    gamma: float = config_field(0.99, "discount", Real(0.0, 1.0))
    max_grad_norm: float = config_field(0.5, "global gradient norm clip", Real(0.0, low_open=True))
    hidden_sizes: tuple[int, ...] = config_field((256, 256), "widths of the hidden ReLU layers", Sizes())
    conv_channels: tuple[int, ...] = config_field((16, 32), "channels of the 3x3 convolutions on a spatial "
                                                            "--obs-encoding (planes, ego-planes, ...)", Sizes())
    conv_strides: tuple[int, ...] = config_field((2, 2), "stride of each of those convolutions (one per "
                                                         "--conv-channels entry)", Sizes("STRIDE"))
    conv_layer_norm: bool = config_field(False, "LayerNorm after each convolution, before its ReLU", Flag())
    log_every: int = config_field(50, "iterations between log rows", Int())
    frame_stack: int = config_field(1, "observe each env's last K RAM snapshots", Int())
    obs_encoding: str = config_field("scale", "how the network reads the RAM (jaxrl.dqn.encoders)",
                                     Choice(OBS_ENCODINGS))

    def __post_init__(self):
        for name in ("hidden_sizes", "conv_channels", "conv_strides"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        for field in dataclasses.fields(self):
            field.metadata["rule"](field.name, getattr(self, field.name))
        if len(self.conv_strides) != len(self.conv_channels):
            raise ValueError(f"conv_strides {list(self.conv_strides)} must give one stride per convolution of "
                             f"conv_channels {list(self.conv_channels)}")
        if self.num_envs * self.num_steps % self.num_minibatches:
            raise ValueError(f"num_envs * num_steps ({self.num_envs} * {self.num_steps}) must be divisible by "
                             f"num_minibatches ({self.num_minibatches})")
        if self.obs_encoding in GAME_ENCODINGS and self.frame_stack < 2:
            raise ValueError(f"obs_encoding={self.obs_encoding!r} needs frame_stack >= 2 (bullets are seen as "
                             f"changes between consecutive RAM snapshots), got {self.frame_stack}")

    @classmethod
    def as_flags(cls, message: str) -> str:
        """``message`` with each field name written as its command-line flag (``num_envs`` -> ``--num-envs``)."""
        names = sorted((field.name for field in dataclasses.fields(cls)), key=len, reverse=True)
        return re.sub(r"\b(" + "|".join(names) + r")\b", lambda m: "--" + m.group(1).replace("_", "-"), message)


class Rollout(NamedTuple):
    """T steps of N envs (leaves [T, N, ...]), or a flat minibatch of them (leaves [B, ...])."""

    obs: jax.Array  # uint8 [T, N, D]: what the policy saw (in a minibatch: encoded, with make_on_policy's encode)
    action: jax.Array  # int32
    log_prob: jax.Array  # float32, of the action under the acting policy
    value: jax.Array  # float32: V(s)
    reward: jax.Array  # float32, clipped to its sign
    done: jax.Array  # bool: terminated, truncated or a life lost at this step (no bootstrap past it)
    valid: jax.Array  # bool: False on envpool's auto-reset row (the action was ignored)


class RunnerState(NamedTuple):
    params: dict
    opt_state: optax.OptState
    env_state: object
    obs: jax.Array  # uint8 [N, D]
    needs_reset: jax.Array  # bool [N]: the next step is an auto-reset row
    episode_return: jax.Array  # float32 [N], raw reward of the running game
    env_steps: jax.Array  # int32: env steps taken so far, all envs together (drives epsilon schedules)
    key: jax.Array


class OnPolicy(NamedTuple):
    """make_on_policy's functions.

    init(key) -> RunnerState; collect(state) -> (state, Rollout [T, N], finished [T, N]: the return of each game
    that ended at a step, NaN elsewhere); iteration(state) -> (state, finished, mean losses (loss, *aux)) =
    collect + targets + the epochs of updates, jitted; iterations: how many make total_steps; network: the flax
    module whose ``apply(params, obs)`` the policy and loss use.
    """

    init: Callable
    collect: Callable
    iteration: Callable
    iterations: int
    network: object


def rollout_step(state: RunnerState, _, *, policy: Callable, env: XlaEnv):
    """One env step of all N envs under ``policy`` (a `lax.scan` body).

    Returns:
      (state, (row, finished)): row, a Rollout of this step's [N] leaves; finished [N], the return of each game
      that ended at this step, NaN elsewhere.
    """
    key, act_key = jax.random.split(state.key)
    action, log_prob, value = policy(state.params, state.obs, act_key, state.env_steps)
    env_state, (obs, reward, terminated, truncated, life_lost) = env.step(state.env_state, action)
    ended = terminated | truncated
    row = Rollout(state.obs, action, log_prob, value, jnp.sign(reward), ended | life_lost, ~state.needs_reset)
    episode_return = state.episode_return + reward
    finished = jnp.where(ended, episode_return, jnp.nan)  # NaN: no game ended here
    new_state = state._replace(env_state=env_state, obs=obs, needs_reset=ended,
                               episode_return=jnp.where(ended, 0.0, episode_return),
                               env_steps=state.env_steps + env.num_envs, key=key)
    return new_state, (row, finished)


def make_on_policy(env: XlaEnv, network, policy: Callable, targets: Callable, loss: Callable,
                   optimizer: optax.GradientTransformation, *, num_steps: int, num_minibatches: int, epochs: int,
                   total_steps: int, encode: Callable | None = None) -> OnPolicy:
    """An on-policy learner on env's N envs (see the module doc for policy / targets / loss).

    ``encode``: ``uint8 [B, D] -> the network's input [B, ...]``, applied to the whole rollout once per iteration
    (each row is read ``epochs`` times); None: the loss reads the RAM.

    Each iteration steps the N envs ``num_steps`` times, computes the targets once, then makes ``epochs`` passes
    over the N * T rows in ``num_minibatches`` shuffled minibatches, one optimizer step each.
    """
    n, t = env.num_envs, num_steps
    if n * t % num_minibatches:
        raise ValueError(f"num_envs * num_steps ({n} * {t}) must be divisible by num_minibatches ({num_minibatches})")
    iterations = max(1, total_steps // (n * t))
    minibatch = n * t // num_minibatches
    loss_grad = jax.value_and_grad(loss, has_aux=True)

    def init(key):
        key, init_key = jax.random.split(key)
        env_state, obs = env.reset()
        # compiled: a game decoder run op by op costs seconds on a CPU
        params = jax.jit(network.init)(init_key, jnp.zeros((1,) + obs.shape[1:], jnp.uint8))
        return RunnerState(params, optimizer.init(params), env_state, obs, jnp.zeros(n, bool),
                           jnp.zeros(n, jnp.float32), jnp.int32(0), key)

    def collect(state: RunnerState):
        step = partial(rollout_step, policy=policy, env=env)
        state, (rollout, finished) = jax.lax.scan(step, state, None, length=t)
        return state, rollout, finished

    def epoch(flat, carry, key):
        """One pass over the flat rollout [n t] in shuffled minibatches."""
        order = jax.random.permutation(key, n * t).reshape(num_minibatches, minibatch)

        def minibatch_update(carry, idx):
            params, opt_state = carry
            batch, batch_targets = jax.tree.map(lambda x: x[idx], flat)
            (value, aux), grads = loss_grad(params, batch, batch_targets)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), (value, *aux)

        return jax.lax.scan(minibatch_update, carry, order)

    @jax.jit
    def iteration(state: RunnerState):
        state, rollout, finished = collect(state)
        rollout_targets = targets(state.params, rollout, state.obs)
        flat = jax.tree.map(lambda x: x.reshape((n * t,) + x.shape[2:]), (rollout, rollout_targets))
        if encode is not None:
            flat = (flat[0]._replace(obs=encode(flat[0].obs)), flat[1])
        key, *epoch_keys = jax.random.split(state.key, epochs + 1)
        (params, opt_state), losses = jax.lax.scan(partial(epoch, flat), (state.params, state.opt_state),
                                                   jnp.stack(epoch_keys))
        state = state._replace(params=params, opt_state=opt_state, key=key)
        return state, finished, jax.tree.map(jnp.mean, losses)

    return OnPolicy(init, jax.jit(collect), iteration, iterations, network)


def evaluate(act: Callable, params, env: XlaEnv, key, *, max_steps: int) -> np.ndarray:
    """The return of the first full game of each of env's M envs under a frozen policy, [M] float64.

    ``act(params, obs [M, D], key) -> action [M]``. Raises RuntimeError when a game is still running after
    ``max_steps`` steps.
    """
    m = env.num_envs

    def cond(carry):
        _, _, _, done, _, steps = carry
        return (~jnp.all(done)) & (steps < max_steps)

    def body(carry):
        env_state, obs, total, done, key, steps = carry
        key, act_key = jax.random.split(key)
        env_state, (obs, reward, terminated, truncated, _) = env.step(env_state, act(params, obs, act_key))
        total = total + jnp.where(done, 0.0, reward)
        return env_state, obs, total, done | terminated | truncated, key, steps + 1

    env_state, obs = env.reset()
    carry = (env_state, obs, jnp.zeros(m), jnp.zeros(m, bool), key, jnp.int32(0))
    carry = jax.jit(lambda c: jax.lax.while_loop(cond, body, c))(carry)
    if not bool(jnp.all(carry[3])):
        raise RuntimeError(f"evaluation stopped after {max_steps} steps with unfinished games")
    return np.asarray(carry[2], np.float64)
