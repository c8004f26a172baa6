"""Raw envpool speed vs PPO training speed (`jaxrl.dqn.ppo`), same envs, same run (PQN, a learner with the DQN
agent's step, is measured by ``experiments/bench_dqn.py --preset pqn``).

    python experiments/bench_on_policy.py                                  # PPO, scale and planes
    python experiments/bench_on_policy.py --encodings planes --iterations 8

Raw: envpool's XLA step on the same N envs in a compiled `lax.scan` with uniformly random actions (no network).
Training: the learner's whole compiled ``iteration`` (rollout of N envs x T steps with the network acting,
targets, epochs of minibatch updates), timed over --iterations calls after one compiling call. Encodings that
decode Space Invaders' RAM run on 2 stacked snapshots. Prints env steps/s and the share of raw speed.
"""
from __future__ import annotations

import fair_blas  # noqa: F401  (first: drops the OpenBLAS pins before NumPy loads)

import argparse
import os
import platform
import time

from jaxrl.dqn.config import OBS_ENCODINGS  # jax-free


def raw_speed(num_envs: int, frame_stack: int, calls: int) -> float:
    import jax
    import jax.numpy as jnp

    from jaxrl.dqn.envs.xla import make_envpool_xla_env

    env = make_envpool_xla_env(num_envs, 0, frame_stack=frame_stack)
    state, _ = env.reset()

    @jax.jit
    def run(state, key):
        def body(carry, _):
            state, key = carry
            key, action_key = jax.random.split(key)
            actions = jax.random.randint(action_key, (num_envs,), 0, env.num_actions)
            state, (obs, *_) = env.step(state, actions)
            return (state, key), obs[0, 0]
        return jax.lax.scan(body, (state, key), None, length=calls)

    (state, _), out = run(state, jax.random.key(0))
    jax.block_until_ready(out)
    start = time.perf_counter()
    (state, _), out = run(state, jax.random.key(1))
    jax.block_until_ready(out)
    elapsed = time.perf_counter() - start
    env.close()
    return num_envs * calls / elapsed


def training_speed(algo: str, encoding: str, iterations: int) -> tuple[float, int, int]:
    import jax

    from jaxrl.dqn.config import GAME_ENCODINGS
    from jaxrl.dqn.envs.xla import make_envpool_xla_env
    from jaxrl.dqn.ppo import PPOConfig, make_ppo

    stack = 2 if encoding in GAME_ENCODINGS else 1
    assert algo == "ppo", algo
    config = PPOConfig(obs_encoding=encoding, frame_stack=stack)
    env = make_envpool_xla_env(config.num_envs, 0, frame_stack=stack)
    learner = make_ppo(env, config)
    state = learner.init(jax.random.key(0))
    state, _, losses = learner.iteration(state)  # compiles
    jax.block_until_ready(losses)
    start = time.perf_counter()
    for _ in range(iterations):
        state, _, losses = learner.iteration(state)
    jax.block_until_ready(losses)
    elapsed = time.perf_counter() - start
    env.close()
    return config.num_envs * config.num_steps * iterations / elapsed, config.num_envs, stack


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=["ppo"], choices=["ppo"])
    parser.add_argument("--encodings", nargs="+", default=["scale", "planes"], choices=OBS_ENCODINGS)
    parser.add_argument("--iterations", type=int, default=10, help="timed iterations (of N x T env steps)")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error("--iterations must be >= 1")
    from threadpoolctl import threadpool_info

    import jax

    blas = next((f"{i['internal_api']} {i['version']} ({i.get('architecture')}, {i['num_threads']} threads)"
                 for i in threadpool_info() if i["user_api"] == "blas"), "none loaded")
    print(f"# BLAS: {blas}")
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__} on {jax.default_backend()}; "
          f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| algo | encoding | num_envs | raw env steps/s (random actions) | training steps/s | training / raw |")
    print("|---|---|---:|---:|---:|---:|")
    for algo in args.algos:
        for encoding in args.encodings:
            speed, num_envs, stack = training_speed(algo, encoding, args.iterations)
            raw = raw_speed(num_envs, stack, calls=max(1, int(speed * 2 / num_envs)))
            print(f"| {algo} | {encoding} | {num_envs} | {raw:,.0f} | {speed:,.0f} | {speed / raw:.0%} |", flush=True)
    print(f"# load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
