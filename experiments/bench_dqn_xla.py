"""Benchmark: raw envpool speed vs DQN training speed (Python env loop and compiled XLA loop), seeds x steps/s.

All rows are measured in the same run, interleaved round by round (the machine may be shared: the median of
the rounds is reported). Speeds are agent steps per second over all envs (one step = frame_skip=4 frames).
Training rows are measured after warm-up past learning_starts, i.e. while updating.

    python experiments/bench_dqn_xla.py --num-envs 8 --seeds 4 --update-every 4

Rows:
  raw envpool (python)   pool.step(random actions) in a Python loop, N envs
  raw envpool (xla scan) envpool's XLA step with random actions inside lax.scan, N envs
  train python loop      jaxrl.dqn.envs.host.make_vec_env + jitted learner.step per env step
  train xla loop         jaxrl.dqn.run.xla_loop: lax.scan(env step + learner.step), K steps per call
  raw envpool S*N        as the first row with S*N envs
  train xla S seeds      S agents vmapped, one envpool of S*N envs
"""
from __future__ import annotations

import fair_blas  # noqa: F401  (first: drops the OpenBLAS pins before NumPy loads)

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl.dqn.config import DQNConfig
from jaxrl.dqn.envs.xla import make_envpool_xla_env
from jaxrl.dqn.learner import make_learner
from jaxrl.dqn.run.xla_loop import make_xla_loop


class _Timer:
    """Wall-clock and process CPU time (all threads: envpool workers and XLA) of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def _atari_pool(num_envs, seed, num_threads):
    import envpool

    return envpool.make("SpaceInvaders-v5", env_type="gymnasium", num_envs=num_envs, batch_size=num_envs,
                        num_threads=num_threads, seed=seed, frame_skip=4, repeat_action_probability=0.25,
                        noop_max=30, max_episode_steps=27_000, stack_num=1, episodic_life=False,
                        reward_clip=False, use_fire_reset=False, full_action_space=False,
                        img_height=8, img_width=8, gray_scale=True)


class RawPython:
    def __init__(self, num_envs, args):
        self.pool = _atari_pool(num_envs, 0, args.num_threads)
        self.pool.reset()
        self.num_envs = num_envs
        self.rng = np.random.default_rng(0)
        self.calls = args.steps_per_call * args.calls_per_round

    def measure(self):
        n = self.pool.action_space.n
        actions = self.rng.integers(0, n, (self.calls, self.num_envs)).astype(np.int32)
        with _Timer() as timer:
            for a in actions:
                self.pool.step(a)
        return self.calls * self.num_envs, timer


class RawXla:
    def __init__(self, num_envs, args):
        self.env = make_envpool_xla_env(num_envs, 0, num_threads=args.num_threads)
        handle, _ = self.env.reset()
        num_actions, steps = self.env.num_actions, args.steps_per_call

        def run(carry):
            def body(carry, _):
                handle, key = carry
                key, action_key = jax.random.split(key)
                actions = jax.random.randint(action_key, (num_envs,), 0, num_actions, jnp.int32)
                handle, (obs, reward, _, _, _) = self.env.step(handle, actions)
                return (handle, key), reward.sum()

            return jax.lax.scan(body, carry, None, length=steps)

        self.run = jax.jit(run)
        self.carry = (handle, jax.random.key(0))
        self.carry, out = self.run(self.carry)  # compile
        jax.block_until_ready(out)
        self.steps = steps * num_envs * args.calls_per_round
        self.calls = args.calls_per_round

    def measure(self):
        with _Timer() as timer:
            for _ in range(self.calls):
                self.carry, out = self.run(self.carry)
            jax.block_until_ready(out)
        return self.steps, timer


def _learner(num_envs, num_actions, args, axis_name=None):
    config = DQNConfig(num_envs=num_envs, buffer_size=args.buffer_size, batch_size=args.batch_size,
                       learning_starts=args.learning_starts, update_every=args.update_every,
                       updates_per_call=args.updates_per_call, target_update_period=250)
    return make_learner(config, num_actions, axis_name=axis_name)


class TrainXla:
    def __init__(self, num_envs, args, seeds=None):
        total_envs = num_envs * (seeds or 1)
        self.env = make_envpool_xla_env(total_envs, 0, num_threads=args.num_threads)
        learner = _learner(num_envs, self.env.num_actions, args, axis_name=None if seeds is None else "seed")
        self.loop = make_xla_loop(learner, self.env, args.steps_per_call, num_seeds=seeds)
        self.state = self.loop.init(jax.random.key(0))
        warm_calls = -(-args.learning_starts // (args.steps_per_call * num_envs)) + 1
        for _ in range(warm_calls):  # compile + fill past learning_starts
            self.state, metrics = self.loop.run(self.state)
        assert bool(np.all(np.asarray(metrics["did_update"][-args.update_every:]).any(axis=0))), "not updating"
        self.steps = args.steps_per_call * total_envs * args.calls_per_round
        self.calls = args.calls_per_round

    def measure(self):
        with _Timer() as timer:
            for _ in range(self.calls):
                self.state, metrics = self.loop.run(self.state)
            jax.block_until_ready(metrics)
        return self.steps, timer


class TrainPython:
    def __init__(self, num_envs, args):
        from jaxrl.dqn.envs.host import make_vec_env

        self.env = make_vec_env(num_envs, 0, backend="envpool")
        learner = _learner(num_envs, self.env.num_actions, args)
        self.step = jax.jit(learner.step, donate_argnums=0)
        self.state, self.actions = jax.jit(learner.init)(jax.random.key(0), self.env.reset())
        self.num_envs = num_envs
        warm = -(-args.learning_starts // num_envs) + args.update_every + 1
        self._steps(warm)
        self.calls = args.steps_per_call * args.calls_per_round

    def _steps(self, calls):
        for _ in range(calls):
            obs, reward, terminated, truncated = self.env.step(np.asarray(self.actions))
            self.state, self.actions, metrics = self.step(self.state, obs, reward, terminated, truncated,
                                                          self.env.life_lost)
        return metrics

    def measure(self):
        with _Timer() as timer:
            metrics = self._steps(self.calls)
            jax.block_until_ready(metrics)
        return self.calls * self.num_envs, timer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=4, help="S for the seeds row (0 skips it)")
    parser.add_argument("--steps-per-call", type=int, default=250, help="K env steps per compiled call")
    parser.add_argument("--calls-per-round", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--update-every", type=int, default=4)
    parser.add_argument("--updates-per-call", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--buffer-size", type=int, default=100_000)
    parser.add_argument("--learning-starts", type=int, default=2_000)
    parser.add_argument("--num-threads", type=int, default=0, help="envpool threads (0: envpool default)")
    parser.add_argument("--skip-python", action="store_true", help="skip the Python-loop training row")
    args = parser.parse_args()

    n, s = args.num_envs, args.seeds
    rows = {f"raw envpool, python loop ({n} envs)": RawPython(n, args),
            f"raw envpool, xla scan ({n} envs)": RawXla(n, args)}
    if not args.skip_python:
        rows[f"train, python loop ({n} envs)"] = TrainPython(n, args)
    rows[f"train, xla loop ({n} envs)"] = TrainXla(n, args)
    if s:
        rows[f"raw envpool, python loop ({s}x{n} envs)"] = RawPython(s * n, args)
        rows[f"train, xla loop, {s} seeds x {n} envs"] = TrainXla(n, args, seeds=s)
    results = {name: [] for name in rows}
    for _ in range(args.rounds):
        for name, row in rows.items():
            steps, timer = row.measure()
            results[name].append((steps / timer.wall, steps / timer.cpu))

    print(fair_blas.describe_blas())
    print(f"\njax {jax.__version__}, {jax.devices()[0].device_kind}, os.cpu_count()={os.cpu_count()}, "
          f"load average at end {os.getloadavg()[0]:.1f} (other processes share the cores)")
    print(f"replay ratio: {args.updates_per_call} update(s) of batch {args.batch_size} every "
          f"{args.update_every} calls of {n} envs = 1 update / {args.update_every * n / args.updates_per_call:g} "
          f"env steps (per seed); buffer {args.buffer_size}; K={args.steps_per_call} steps per xla call")
    print("steps/s = agent steps (4 frames) per wall second, median of rounds; steps/cpu-s = per second of this "
          "process's CPU time (all threads), less sensitive to other load\n")
    median = {name: (statistics.median(v[0] for v in values), statistics.median(v[1] for v in values))
              for name, values in results.items()}
    raw_n = median[f"raw envpool, python loop ({n} envs)"]
    raw_sn = median[f"raw envpool, python loop ({s}x{n} envs)"] if s else None
    print(f"| {'row':40s} | steps/s | rounds (steps/s) | vs raw | steps/cpu-s | vs raw (cpu) |")
    print(f"|{'-' * 42}|--------:|------------------|-------:|------------:|-------------:|")
    for name, values in results.items():
        wall, cpu = median[name]
        raw = raw_sn if (f"{s}x{n}" in name or "seeds" in name) else raw_n
        rounds = ", ".join(f"{v[0]:,.0f}" for v in values)
        print(f"| {name:40s} | {wall:7,.0f} | {rounds} | {wall / raw[0]:6.0%} | {cpu:11,.0f} | "
              f"{cpu / raw[1]:12.0%} |")

if __name__ == "__main__":
    main()
