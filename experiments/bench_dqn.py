"""Raw env speed vs Python-loop DQN training speed, same num_envs, same run.

    python experiments/bench_dqn.py                       # envpool, 8 envs, seed preset
    python experiments/bench_dqn.py --num-envs 4 8 16 --steps 40000 --backend gymnasium

Raw: ``make_vec_env`` stepped with uniformly random actions over all actions (numpy), no learning.
Training: ``jaxrl.dqn.train.train`` itself (the loop of ``jaxrl dqn train``: env step, one jitted
``learner.step`` with replay add + update + act, NaN guard, logging), with no checkpoint or eval inside the
measured window; steps/s is read from its ``metrics.csv`` over the rows after learning has started (the
first row, which holds the compile time and the no-update warm-up, is dropped).
"""
from __future__ import annotations

import argparse
import csv
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def raw_env_speed(config, num_envs: int, steps: int) -> float:
    from jaxrl.dqn.envs import make_env_from_config

    rng = np.random.default_rng(0)
    with make_env_from_config(config, num_envs=num_envs, seed=0) as env:
        env.reset()
        for _ in range(50):  # warm-up
            env.step(rng.integers(0, env.num_actions, size=num_envs))
        calls = max(1, steps // num_envs)
        actions = rng.integers(0, env.num_actions, size=(calls, num_envs))
        start = time.perf_counter()
        for a in actions:
            env.step(a)
        return calls * num_envs / (time.perf_counter() - start)


def training_speed(config, num_envs: int, steps: int) -> tuple[float, int]:
    from jaxrl.dqn.train import train

    log_every = max(steps // 5, num_envs)
    total = config.learning_starts + steps + log_every
    run_config = config.replace(num_envs=num_envs, total_steps=total, log_every=log_every,
                                checkpoint_every=10 * total, eval_episodes=0)
    with tempfile.TemporaryDirectory() as tmp:
        train(run_config, Path(tmp) / "run", progress=False, log=lambda *_: None)
        with (Path(tmp) / "run" / "metrics.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
    rows = [r for r in rows[1:] if int(r["step"]) > config.learning_starts]
    measured_steps = int(rows[-1]["step"]) - int(rows[0]["step"]) + log_every
    seconds = sum(log_every / float(r["steps_per_s"]) for r in rows)
    return measured_steps / seconds, int(rows[-1]["updates"])


def main(argv=None) -> None:
    from jaxrl.dqn.config import PRESETS, preset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, nargs="+", default=[8])
    parser.add_argument("--steps", type=int, default=20_000, help="measured env steps per row (all envs)")
    parser.add_argument("--backend", choices=("auto", "envpool", "gymnasium"), default="auto")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="seed")
    parser.add_argument("--updates-per-call", type=int, default=None)
    args = parser.parse_args(argv)
    overrides = dict(backend=args.backend)
    if args.updates_per_call is not None:
        overrides["updates_per_call"] = args.updates_per_call
    config = preset(args.preset, **overrides)
    from jaxrl.dqn.envs import resolve_backend

    backend = resolve_backend(config.backend)
    print(f"# {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPUs; backend {backend}; "
          f"preset {args.preset}; {args.steps} measured steps per row")
    print("| num_envs | raw env steps/s (random actions) | training steps/s (Python loop) | training / raw "
          "| updates per step |")
    print("|---:|---:|---:|---:|---:|")
    for num_envs in args.num_envs:
        raw = raw_env_speed(config, num_envs, args.steps)
        trained, _ = training_speed(config, num_envs, args.steps)
        per_step = config.updates_per_call / (config.update_every * num_envs)
        print(f"| {num_envs} | {raw:,.0f} | {trained:,.0f} | {trained / raw:.0%} | {per_step:.3g} |", flush=True)


if __name__ == "__main__":
    main()
