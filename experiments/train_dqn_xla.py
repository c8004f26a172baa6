"""Train S independent DQN agents at once with the compiled XLA loop (envpool inside `lax.scan`, vmap over seeds).

Uses the same config presets as `jaxrl dqn train` (`jaxrl.dqn.config`) and the same `learner.step`; only the loop
differs: `jaxrl.dqn.run.xla_loop.make_xla_loop`, K env steps per compiled call, logging between calls. Writes one CSV
row per call and seed. No checkpoints (use `jaxrl dqn train` for resumable runs).

    python experiments/train_dqn_xla.py --preset seed --seeds 4 --total-steps 2500000 --out runs_xla.csv
    python experiments/train_dqn_xla.py --preset tiny --seeds 2 --total-steps 4000      # a quick check
    python experiments/train_dqn_xla.py --seeds 2 --life-loss-terminal --gamma 0.99     # any `jaxrl dqn train` flag

Every config flag of `jaxrl dqn train` (``--learning-rate``, ``--life-loss-terminal`` ...) is accepted; like
there, they override ``--preset``. ``--total-steps`` counts env steps PER AGENT.
"""
from __future__ import annotations

import argparse
import csv
import time

import jax
import numpy as np

from jaxrl.dqn.config import preset
from jaxrl.dqn.envs.xla import make_envpool_xla_env
from jaxrl.dqn.learner import make_learner
from jaxrl.dqn.run.cli import add_config_flags, config_overrides
from jaxrl.dqn.run.train import keep_recent, mean_or_nan
from jaxrl.dqn.run.xla_loop import make_xla_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="seed")
    parser.add_argument("--seeds", type=int, default=2, help="S independent agents, each with --num-envs envs")
    parser.add_argument("--steps-per-call", type=int, default=1_000, help="K env steps per compiled call")
    parser.add_argument("--out", default="train_dqn_xla.csv")
    parser.add_argument("--save-params", default=None, metavar="FILE",
                        help="write the final Q-network parameters of all agents (leaves [S, ...]) as flax msgpack")
    parser.add_argument("--final-eval-episodes", type=int, default=0,
                        help="after training, evaluate each agent for this many episodes (at --eval-epsilon)")
    add_config_flags(parser)
    args = parser.parse_args()

    config = preset(args.preset, **{**config_overrides(args), "backend": "envpool"})
    if args.seeds < 1 or args.steps_per_call < 1:
        raise SystemExit("--seeds and --steps-per-call must be >= 1")
    n, s = config.num_envs, args.seeds
    env = make_envpool_xla_env(s * n, config.seed, env_id=config.env_id, frame_skip=config.frame_skip,
                               repeat_action_probability=config.repeat_action_probability,
                               noop_max=config.noop_max, max_episode_frames=config.max_episode_frames,
                               frame_stack=config.frame_stack)
    learner = make_learner(config, env.num_actions, axis_name="seed")
    loop = make_xla_loop(learner, env, args.steps_per_call, num_seeds=s)
    state = loop.init(jax.random.key(config.seed))
    calls = -(-config.total_steps // (args.steps_per_call * n))
    recent = [[] for _ in range(s)]  # last 100 episode returns per seed
    start = time.perf_counter()
    with open(args.out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["call", "seed", "env_steps", "frames", "episodes", "mean_return_100", "loss", "epsilon",
                         "steps_per_s_all_seeds", "wall_s"])
        for call in range(calls):
            tick = time.perf_counter()
            state, metrics = loop.run(state)
            metrics = jax.device_get(metrics)
            speed = args.steps_per_call * n * s / (time.perf_counter() - tick)
            for seed in range(s):
                done = np.asarray(metrics["episode_done"][:, seed])
                recent[seed] = keep_recent(recent[seed], np.asarray(metrics["episode_return"][:, seed])[done])
                updated = np.asarray(metrics["did_update"][:, seed])
                loss = float(np.mean(metrics["loss"][:, seed][updated])) if updated.any() else float("nan")
                env_steps = int(metrics["env_steps"][-1, seed])
                mean_return = mean_or_nan(recent[seed])
                writer.writerow([call, seed, env_steps, env_steps * config.frame_skip, int(done.sum()),
                                 mean_return, loss, float(metrics["epsilon"][-1, seed]), speed,
                                 time.perf_counter() - start])
            f.flush()
            returns = ", ".join(f"{np.mean(r):.0f}" if r else "-" for r in recent)
            print(f"call {call + 1}/{calls}: {int(metrics['env_steps'][-1].sum()):,} steps (all seeds), "
                  f"{speed:,.0f} steps/s, mean return of last 100 per seed: {returns}", flush=True)
    env.close()
    if args.save_params:
        from flax import serialization

        with open(args.save_params, "wb") as f:
            f.write(serialization.to_bytes(jax.device_get(state.learner.dqn.params)))
        print(f"saved the {s} agents' parameters to {args.save_params}")
    if args.final_eval_episodes > 0:
        from jaxrl.dqn.run.evaluate import evaluate_returns

        params = jax.device_get(state.learner.dqn.params)
        for seed in range(s):
            returns = evaluate_returns(config, jax.tree.map(lambda p: p[seed], params), args.final_eval_episodes,
                                       epsilon=config.eval_epsilon, seed=10_000 + seed)
            print(f"seed {seed}: eval over {len(returns)} episodes at epsilon {config.eval_epsilon}: "
                  f"{returns.mean():.1f} +- {returns.std():.1f}", flush=True)


if __name__ == "__main__":
    main()
