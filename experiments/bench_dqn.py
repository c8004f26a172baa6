"""Raw env speed vs DQN training speed with the Python loop and with the XLA loop, same num_envs, same run.

    python experiments/bench_dqn.py                       # envpool, 8 envs, seed preset
    python experiments/bench_dqn.py --num-envs 4 8 16 --steps 40000 --backend gymnasium
    python experiments/bench_dqn.py --obs-encoding bits --update-every 4     # any `jaxrl dqn train` config flag
    python experiments/bench_dqn.py --preset pqn-ego --breakdown             # where a PQN rollout's time goes

Raw: ``make_vec_env`` stepped with uniformly random actions over all actions (numpy), no learning.
Training: ``jaxrl.dqn.run.train.train`` itself, i.e. ``jaxrl dqn train`` with ``--loop python`` (env step from
Python, one jitted ``learner.step`` with replay add + update + act, NaN guard, logging) and with ``--loop xla``
(envpool's XLA step and ``learner.step`` compiled together, up to ``xla_chunk_calls`` calls per compiled call;
envpool only), with no checkpoint or eval inside the measured window; steps/s is read from its
``metrics.csv`` over the rows after learning has started (the first row, which holds the compile time and the
no-update warm-up, is dropped).

``--breakdown`` (PQN presets) instead splits one rollout of T calls x N envs of the compiled loop into the env
(raw envpool, T x N random-action steps), the learning (the call of the jitted ``learner.step`` that computes
the Q(lambda) returns, encodes the rollout once and takes the epochs x minibatches of gradient steps, less a
call that only acts; on random RAM bytes, whose values the decoders' cost does not depend on) and the rest
(acting, recording rows, the loop itself), the difference to the compiled loop's measured time.
"""
from __future__ import annotations

import fair_blas  # noqa: F401  (first: drops the OpenBLAS pins before NumPy loads)

import argparse
import csv
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def raw_env_speed(config, num_envs: int, steps: int) -> float:
    from jaxrl.dqn.envs.host import make_env_from_config

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
    """Steps/s of ``train`` with ``config`` (its ``loop``) after warm-up, and the number of updates done."""
    from jaxrl.dqn.run.train import train

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


def pqn_breakdown(config, steps: int, repeats: int = 3) -> None:
    """Print where a PQN rollout's time goes in ``jaxrl dqn train``'s compiled loop (see the module doc)."""
    import jax
    import jax.numpy as jnp

    from jaxrl.dqn.pqn import make_pqn_learner

    n, t = config.num_envs, config.rollout_steps
    raw = raw_env_speed(config, n, t * n * repeats)
    learner = make_pqn_learner(config, num_actions=6)
    obs = jnp.asarray(np.random.default_rng(0).integers(0, 256, size=(n, config.obs_size)), jnp.uint8)
    zeros, false = jnp.zeros(n), jnp.zeros(n, bool)
    step = jax.jit(learner.step)
    state, _ = learner.init(jax.random.key(0), obs)
    act_s, learn_s = [], []
    for _ in range(repeats + 1):  # the first rollout compiles
        start = time.perf_counter()
        for _ in range(t - 1):
            state, actions, _ = step(state, obs, zeros, false, false)
        jax.block_until_ready(actions)
        middle = time.perf_counter()
        state, actions, metrics = step(state, obs, zeros, false, false)
        jax.block_until_ready(actions)
        assert bool(metrics["did_update"])
        act_s.append((middle - start) / (t - 1))
        learn_s.append(time.perf_counter() - middle)
    learn = np.median(learn_s[1:]) - np.median(act_s[1:])  # the learning call also records a row and acts
    training, _ = training_speed(config.replace(loop="xla", backend="envpool"), n, steps)
    whole, env = t * n / training, t * n / raw
    print(f"# one rollout: {t} calls x {n} envs = {t * n} env steps; {config.epochs} epochs x "
          f"{config.num_minibatches} minibatches of {t * n // config.num_minibatches} rows; obs_encoding "
          f"{config.obs_encoding}, conv_channels {list(config.conv_channels)}, hidden_sizes "
          f"{list(config.hidden_sizes)}; training measured over {steps} env steps")
    print("| part | ms per rollout | share |")
    print("|---|---:|---:|")
    for name, seconds in (("env (raw envpool, random actions)", env),
                          ("learn (Q(lambda) returns, encode, gradient steps; one call timed alone)", learn),
                          ("the rest: acting, recording, the loop (by difference)", whole - env - learn)):
        print(f"| {name} | {1e3 * seconds:,.1f} | {seconds / whole:.0%} |")
    print(f"| `jaxrl dqn train`'s compiled loop ({training:,.0f} env steps/s) | {1e3 * whole:,.1f} | 100% |",
          flush=True)


def main(argv=None) -> None:
    from jaxrl.dqn.config import PRESETS, preset
    from jaxrl.dqn.run.cli import add_config_flags, config_overrides

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, nargs="+", default=[8])
    parser.add_argument("--steps", type=int, default=20_000, help="measured env steps per row (all envs)")
    parser.add_argument("--backend", choices=("auto", "envpool", "gymnasium"), default="auto")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="seed")
    parser.add_argument("--updates-per-call", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=1, help="repeat the three rows; medians are reported")
    parser.add_argument("--xla-chunk-calls", type=int, default=256,
                        help="learner calls per compiled call of the XLA loop")
    parser.add_argument("--breakdown", action="store_true",
                        help="PQN presets: time a rollout's parts (env, acting, learning) instead")
    own = ("num_envs", "backend", "loop", "xla_chunk_calls", "updates_per_call")  # this script's flags
    add_config_flags(parser, exclude=own)
    args = parser.parse_args(argv)
    flags = {k: v for k, v in config_overrides(args).items() if k not in own}
    overrides = dict(flags, backend=args.backend)
    if args.updates_per_call is not None:
        overrides["updates_per_call"] = args.updates_per_call
    config = preset(args.preset, **overrides)
    from jaxrl.dqn.envs.host import resolve_backend

    backend = resolve_backend(config.backend)
    print("#", fair_blas.describe_blas())
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; backend {backend}; "
          f"preset {args.preset}; {args.steps} measured steps per row; median of {args.rounds} round(s)")
    if flags:
        print(f"# config flags over the preset: {flags}")
    print(f"# load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.breakdown:
        if config.algo != "pqn":
            parser.error(f"--breakdown times a PQN rollout; --preset {args.preset} is algo {config.algo}")
        for num_envs in args.num_envs:
            pqn_breakdown(config.replace(num_envs=num_envs), args.steps, repeats=max(3, args.rounds))
        print(f"# load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        return
    print("| num_envs | raw env steps/s (random actions) | training steps/s (Python loop) | Python / raw "
          "| training steps/s (XLA loop) | XLA / raw | updates per step |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for num_envs in args.num_envs:
        rounds = []  # rows measured round by round (raw, python, xla), so load changes hit all of them
        for _ in range(args.rounds):
            raw = raw_env_speed(config, num_envs, args.steps)
            python_loop, _ = training_speed(config.replace(loop="python"), num_envs, args.steps)
            xla_loop = float("nan")
            if backend == "envpool":
                xla_loop, _ = training_speed(config.replace(loop="xla", backend="envpool",
                                                            xla_chunk_calls=args.xla_chunk_calls),
                                             num_envs, args.steps)
            rounds.append((raw, python_loop, xla_loop))
        raw, python_loop, xla_loop = np.median(np.asarray(rounds), axis=0)
        if backend == "envpool":
            xla_cells = f"{xla_loop:,.0f} | {xla_loop / raw:.0%}"
        else:
            xla_cells = "n/a (no XLA interface on gymnasium) | n/a"
        per_step = 1.0 / config.replace(num_envs=num_envs).steps_per_update  # DQN: the replay ratio; PQN: 1 / 64
        print(f"| {num_envs} | {raw:,.0f} | {python_loop:,.0f} | {python_loop / raw:.0%} | {xla_cells} "
              f"| {per_step:.3g} |", flush=True)
    print(f"# load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
