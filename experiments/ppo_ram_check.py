"""A policy-gradient check of what SpaceInvaders-RAM allows in 10M frames: PPO on the same envs as our DQN.

Issue 3 asks for a DQN agent at >= 1,000 mean return within 10M frames; every DQN variant tried here (docs/notes/
dqn-learning.md) plateaus at 250-390. This script answers a different question: is that plateau the DQN agent's,
or what an MLP on the 128 RAM bytes under sticky actions gets in 10M frames whatever the learning rule? It trains
CleanRL's Atari PPO with an MLP actor-critic (`jaxrl.dqn.ppo`, where the settings and the differences from CleanRL
are described) on the envs `jaxrl dqn train --loop xla` uses (envpool's XLA step: sticky actions 0.25, no-op
starts, full games).

    python experiments/ppo_ram_check.py --total-steps 2500000 --seed 0 --out ppo_s0.csv   # 10M frames, ~15 min
    python experiments/ppo_ram_check.py --total-steps 20000 --eval-episodes 8              # a smoke run

Prints and writes (CSV) the training return of the last 100 episodes every --log-every iterations, and at the end
a frozen-policy evaluation: --eval-episodes fresh envs, one full game each, actions sampled from the policy (the
PPO convention) and greedy. Not a library feature: an experiment behind a note.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import time

from jaxrl.dqn.config import Choice
from jaxrl.dqn.ppo import PPOConfig, as_flags


def build_parser() -> argparse.ArgumentParser:
    """One flag per PPOConfig field (same name, dashed; same default and help), plus --eval-episodes and --out."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in dataclasses.fields(PPOConfig):
        flag = "--" + field.name.replace("_", "-")
        kwargs = dict(default=field.default, help=field.metadata["help"])
        if isinstance(field.default, tuple):
            kwargs.update(type=int, nargs="+")
        else:
            kwargs.update(type=type(field.default))
        if isinstance(field.metadata["rule"], Choice):
            kwargs.update(choices=field.metadata["rule"].options)
        parser.add_argument(flag, **kwargs)
    parser.add_argument("--eval-episodes", type=int, default=100, help="fresh envs, one full game each")
    parser.add_argument("--out", default=None, help="CSV of the log rows")
    return parser


def parse_args(argv=None) -> tuple[PPOConfig, argparse.Namespace]:
    """The command line's PPOConfig and its other settings; a bad value exits naming the flag."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.eval_episodes < 1:
        parser.error("--eval-episodes must be >= 1")
    try:
        config = PPOConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(PPOConfig)})
    except ValueError as error:
        parser.error(as_flags(str(error)))
    return config, args


def main(argv=None) -> None:
    config, args = parse_args(argv)
    import jax

    from jaxrl.dqn.envs.xla import make_envpool_xla_env
    from jaxrl.dqn.ppo import evaluate, train

    env = make_envpool_xla_env(config.num_envs, config.seed, frame_stack=config.frame_stack)
    network, params, rows = train(env, config)
    if args.out:
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    eval_env = make_envpool_xla_env(args.eval_episodes, 10_000 + config.seed, frame_stack=config.frame_stack)
    for greedy in (False, True):
        start = time.perf_counter()
        returns = evaluate(network, params, eval_env, jax.random.key(config.seed + 1), greedy=greedy,
                           max_steps=108_000 // 4 + 1)
        print(f"eval ({'greedy' if greedy else 'sampled'} actions, {len(returns)} games): "
              f"{returns.mean():.1f} +- {returns.std():.1f} (min {returns.min():.0f}, max {returns.max():.0f}) "
              f"[{time.perf_counter() - start:.1f} s]", flush=True)


if __name__ == "__main__":
    main()
