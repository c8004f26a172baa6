"""A policy-gradient check of what SpaceInvaders-RAM allows in 10M frames: PPO on the same envs as our DQN.

Issue 3 asks for a DQN agent at >= 1,000 mean return within 10M frames; every DQN variant tried here (docs/notes/
dqn-learning.md) plateaus at 250-390. This script answers a different question: is that plateau the DQN agent's,
or what an MLP on the 128 RAM bytes under sticky actions gets in 10M frames whatever the learning rule? It trains
CleanRL's Atari PPO (`ppo_atari_envpool_xla_jax.py`: 8 envs x 128 steps, GAE lambda 0.95, gamma 0.99, 4 epochs of 4
minibatches, clip 0.1, entropy 0.01, Adam 2.5e-4 annealed to 0, eps 1e-5, gradient norm 0.5, rewards clipped to
their sign, a lost life ends the value's horizon) with an MLP actor-critic on RAM / 255 instead of the conv net,
on the envs `jaxrl dqn train --loop xla` uses (envpool's XLA step: sticky actions 0.25, no-op starts, full games).

Differences from CleanRL kept on purpose: envpool's next-step auto-reset row (the step after an episode ends,
whose action is ignored) is masked out of the loss instead of trained on; a life loss cuts the GAE horizon without
resetting the game (as `--life-loss-terminal` does for DQN), so episode returns are full games as in our DQN evals.

    python experiments/ppo_ram_check.py --total-steps 2500000 --seed 0 --out ppo_s0.csv   # 10M frames, ~15 min
    python experiments/ppo_ram_check.py --total-steps 20000 --eval-episodes 8              # a smoke run

Prints and writes (CSV) the training return of the last 100 episodes every --log-every iterations, and at the end
a frozen-policy evaluation: --eval-episodes fresh envs, one full game each, actions sampled from the policy (the
PPO convention) and greedy. Not a library feature: an experiment behind a note.
"""
from __future__ import annotations

import argparse
import csv
import time
from functools import partial
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrl.dqn.atari import XlaEnv
from jaxrl.dqn.train import keep_recent, mean_or_nan


class ActorCritic(nn.Module):
    """MLP actor-critic on RAM: shared ReLU trunk, linear policy logits [..., A] and value [...]."""

    num_actions: int
    hidden_sizes: tuple[int, ...] = (256, 256)

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = obs.astype(jnp.float32) / 255.0
        for width in self.hidden_sizes:
            x = nn.relu(nn.Dense(width, kernel_init=nn.initializers.orthogonal(np.sqrt(2)))(x))
        logits = nn.Dense(self.num_actions, kernel_init=nn.initializers.orthogonal(0.01))(x)
        value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0))(x)[..., 0]
        return logits, value


class Rollout(NamedTuple):
    """T steps of N envs (leaves [T, N, ...])."""

    obs: jax.Array  # uint8 [T, N, 128]
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
    obs: jax.Array  # uint8 [N, 128]
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
    """Clipped surrogate + clipped value loss - entropy bonus, means over the valid rows of a flat batch [B]."""
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


def make_ppo(env: XlaEnv, args) -> PPO:
    """PPO on env's N envs with args' settings (see `parse_args`)."""
    n, t = env.num_envs, args.num_steps
    network = ActorCritic(env.num_actions, tuple(args.hidden_sizes))
    iterations = max(1, args.total_steps // (n * t))
    minibatch = n * t // args.num_minibatches
    schedule = optax.linear_schedule(args.learning_rate, 0.0, iterations * args.epochs * args.num_minibatches)
    optimizer = optax.chain(optax.clip_by_global_norm(args.max_grad_norm), optax.adam(schedule, eps=1e-5))

    def init(key):
        key, init_key = jax.random.split(key)
        params = network.init(init_key, jnp.zeros((1, 128), jnp.uint8))
        env_state, obs = env.reset()
        return RunnerState(params, optimizer.init(params), env_state, obs, jnp.zeros(n, bool),
                           jnp.zeros(n, jnp.float32), key)

    def env_step(state: RunnerState, _):
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

    loss_grad = jax.value_and_grad(partial(ppo_loss, apply_fn=network.apply, clip=args.clip,
                                           ent_coef=args.ent_coef, vf_coef=args.vf_coef), has_aux=True)

    def collect(state: RunnerState):
        state, (rollout, finished) = jax.lax.scan(env_step, state, None, length=t)
        return state, rollout, finished

    @jax.jit
    def iteration(state: RunnerState):
        state, rollout, finished = collect(state)
        _, last_value = network.apply(state.params, state.obs)
        advantages, returns = gae(rollout, last_value, args.gamma, args.gae_lambda)
        flat = jax.tree.map(lambda x: x.reshape((n * t,) + x.shape[2:]), (rollout, advantages, returns))

        def epoch(carry, key):
            params, opt_state = carry
            order = jax.random.permutation(key, n * t).reshape(args.num_minibatches, minibatch)

            def minibatch_update(carry, idx):
                params, opt_state = carry
                batch, adv, ret = jax.tree.map(lambda x: x[idx], flat)
                (loss, aux), grads = loss_grad(params, batch=batch, advantages=adv, returns=ret)
                updates, opt_state = optimizer.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), (loss, *aux)

            return jax.lax.scan(minibatch_update, (params, opt_state), order)

        key, *epoch_keys = jax.random.split(state.key, args.epochs + 1)
        (params, opt_state), losses = jax.lax.scan(epoch, (state.params, state.opt_state), jnp.stack(epoch_keys))
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


def train(env: XlaEnv, args, log=print) -> tuple[object, object, list[dict]]:
    """Train PPO on env for args.total_steps env steps; returns (network, params, logged rows)."""
    ppo = make_ppo(env, args)
    state = ppo.init(jax.random.key(args.seed))
    recent: list[float] = []
    rows = []
    start = time.perf_counter()
    for i in range(1, ppo.iterations + 1):
        state, finished, losses = ppo.iteration(state)
        finished = np.asarray(finished)
        recent = keep_recent(recent, finished[~np.isnan(finished)])
        if i % args.log_every == 0 or i == ppo.iterations:
            steps = i * env.num_envs * args.num_steps
            wall = time.perf_counter() - start
            row = dict(iteration=i, env_steps=steps, frames=4 * steps,
                       mean_return_100=mean_or_nan(recent), episodes_in_mean=len(recent),
                       loss=float(losses[0]), value_loss=float(losses[2]), entropy=float(losses[3]),
                       steps_per_s=steps / wall, wall_s=wall)
            rows.append(row)
            log(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    return ppo.network, state.params, rows


def parse_args(argv=None) -> argparse.Namespace:
    """The command line's settings (CleanRL's Atari PPO defaults); a bad value exits naming the flag."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--total-steps", type=int, default=2_500_000, help="env steps (x4 frames)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--num-steps", type=int, default=128, help="rollout length per env")
    parser.add_argument("--num-minibatches", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=2.5e-4)
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--gae-lambda", type=float, default=0.95)
    parser.add_argument("--clip", type=float, default=0.1)
    parser.add_argument("--ent-coef", type=float, default=0.01)
    parser.add_argument("--vf-coef", type=float, default=0.5)
    parser.add_argument("--max-grad-norm", type=float, default=0.5)
    parser.add_argument("--hidden-sizes", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--log-every", type=int, default=50, help="iterations between log rows")
    parser.add_argument("--eval-episodes", type=int, default=100, help="fresh envs, one full game each")
    parser.add_argument("--out", default=None, help="CSV of the log rows")
    args = parser.parse_args(argv)
    for name in ("total_steps", "num_envs", "num_steps", "num_minibatches", "epochs", "log_every", "eval_episodes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if min(args.hidden_sizes) < 1:
        parser.error("--hidden-sizes must be >= 1")
    for name in ("gamma", "gae_lambda"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            parser.error(f"--{name.replace('_', '-')} must be in [0, 1]")
    for name in ("learning_rate", "clip", "max_grad_norm"):
        if not getattr(args, name) > 0.0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    for name in ("ent_coef", "vf_coef"):
        if not getattr(args, name) >= 0.0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    if args.num_envs * args.num_steps % args.num_minibatches:
        parser.error("--num-envs x --num-steps must be divisible by --num-minibatches")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    from jaxrl.dqn.xla_env import make_envpool_xla_env

    env = make_envpool_xla_env(args.num_envs, args.seed)
    network, params, rows = train(env, args)
    if args.out:
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    eval_env = make_envpool_xla_env(args.eval_episodes, 10_000 + args.seed)
    for greedy in (False, True):
        start = time.perf_counter()
        returns = evaluate(network, params, eval_env, jax.random.key(args.seed + 1), greedy=greedy,
                           max_steps=108_000 // 4 + 1)
        print(f"eval ({'greedy' if greedy else 'sampled'} actions, {len(returns)} games): "
              f"{returns.mean():.1f} +- {returns.std():.1f} (min {returns.min():.0f}, max {returns.max():.0f}) "
              f"[{time.perf_counter() - start:.1f} s]", flush=True)


if __name__ == "__main__":
    main()
