"""Benchmark: scaling over processes / devices with ``jaxrl launch`` (JAX's multi-controller runtime).

For each count P in ``--processes`` (default 1 2 4) it starts ``jaxrl launch -n P --devices-per-process 1`` of
this script as a worker (every process one device: one CPU device per process on a CPU machine, one GPU per
process on a multi-GPU machine) and measures, in the same run:

1. a 64-model grid: ``fit_grid(MLPClassifier(hidden_layer_sizes=(100,), solver="adam", max_iter=E), digits,
   alpha=64 values, shard_runs=True)``: the runs split over the P devices; the first call (with compile) and
   a second, compiled call; models fitted per second of the second call;
2. 8 DQN agents: ``jaxrl dqn train --num-seeds 8`` (``train_seeds``, the ``objects`` preset with
   ``learning_starts`` lowered so that updates start at once), the agents split over the P devices, each
   process stepping its agents' envpool envs: env steps per second of all agents together over the second half
   of the run (compiled; from the agents' ``metrics.csv`` rows).

Efficiency = throughput with P devices / (P x throughput with one). On a machine with fewer cores than
processes the processes share the cores, and the table says so (cores are printed).

    python experiments/bench_scaling.py                   # 1, 2, 4 processes
    python experiments/bench_scaling.py --processes 1 2 --dqn-steps 2000
"""
from __future__ import annotations

import fair_blas  # noqa: F401  (first: drops the OpenBLAS pins before NumPy loads)

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULT = "BENCH_SCALING_RESULT "


def _grid_worker(args) -> dict:
    import numpy as np
    from sklearn.datasets import load_digits

    from jaxrl import MLPClassifier
    from jaxrl.mlp import fit_grid

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    alphas = np.logspace(-6, 1, args.models)
    template = MLPClassifier(hidden_layer_sizes=(100,), solver="adam", max_iter=args.epochs, tol=0.0,
                             n_iter_no_change=args.epochs + 1, random_state=0)
    start = time.perf_counter()
    fit_grid(template, x, y, alpha=alphas, shard_runs=True)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    result = fit_grid(template, x, y, alpha=alphas, shard_runs=True)
    warm = time.perf_counter() - start
    return dict(cold_s=cold, warm_s=warm, models_per_s=args.models / warm,
                mean_accuracy=float(np.mean([m.score(x, y) for m in result.estimators[:4]])))


def _dqn_worker(args) -> dict:
    """One run of 2T env steps per agent logging every T: each agent's second metrics.csv row has its speed over
    steps (T, 2T], compiled; all agents step in lockstep, so the run's speed is the sum over agents."""
    import csv

    import jax

    from jaxrl.dqn.config import preset
    from jaxrl.dqn.run.multi_seed import agent_dir, allgather_json, train_seeds

    steps = args.dqn_steps
    config = preset("objects", num_seeds=args.agents, learning_starts=256, total_steps=2 * steps,
                    checkpoint_every=2 * steps, eval_episodes=0, log_every=steps, keep_checkpoints=1)
    start = time.perf_counter()
    train_seeds(config, args.run_dir, overwrite=True, progress=False, log=lambda _: None)
    wall = time.perf_counter() - start
    allgather_json(0)  # every process has written its agents' rows
    speeds = []
    for i in range(args.agents):
        with (agent_dir(args.run_dir, i) / "metrics.csv").open() as f:
            speeds.append(float(list(csv.DictReader(f))[1]["steps_per_s"]))
    return dict(wall_s=wall, steps_per_s=sum(speeds), processes=jax.process_count())


def _worker(args) -> None:
    from jaxrl import distributed

    distributed.initialize()
    import jax

    out = _grid_worker(args) if args.worker == "grid" else _dqn_worker(args)
    if jax.process_index() == 0:
        out["device"] = f"{jax.devices()[0].platform} x{jax.device_count()}"
        print(RESULT + json.dumps(out), flush=True)


def _launch(args, kind: str, processes: int, run_dir: str) -> dict:
    command = [sys.executable, "-m", "jaxrl", "launch", "-n", str(processes), "--devices-per-process", "1",
               "--timeout", str(args.timeout), "--", sys.executable, __file__, "--worker", kind,
               "--models", str(args.models), "--epochs", str(args.epochs), "--agents", str(args.agents),
               "--dqn-steps", str(args.dqn_steps), "--run-dir", run_dir]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if RESULT in line:
            return json.loads(line.split(RESULT, 1)[1])
    raise SystemExit(f"{kind} with {processes} processes failed (exit {proc.returncode}):\n"
                     f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--models", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--dqn-steps", type=int, default=4000, help="T: each agent runs 2T env steps, T timed")
    parser.add_argument("--timeout", type=int, default=1200)
    parser.add_argument("--worker", choices=("grid", "dqn"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args)

    print(f"{os.cpu_count()} CPU cores visible; {fair_blas.describe_blas()}; {time.strftime('%Y-%m-%d')}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for processes in args.processes:
            grid = _launch(args, "grid", processes, os.path.join(tmp, "unused"))
            dqn = _launch(args, "dqn", processes, os.path.join(tmp, f"dqn-{processes}"))
            rows.append((processes, grid, dqn))
            print(f"{processes} processes ({grid['device']}): grid {grid['models_per_s']:.1f} models/s, "
                  f"DQN {dqn['steps_per_s']:,.0f} env steps/s", flush=True)
    base_grid, base_dqn = rows[0][1]["models_per_s"], rows[0][2]["steps_per_s"]
    base_p = rows[0][0]
    print(f"\n| processes x devices | {args.models}-model grid: first call (s) | compiled call (s) | models/s | "
          f"efficiency | {args.agents} DQN agents: env steps/s | efficiency |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for processes, grid, dqn in rows:
        scale = processes / base_p
        print(f"| {processes} x 1 | {grid['cold_s']:.2f} | {grid['warm_s']:.2f} | {grid['models_per_s']:.1f} | "
              f"{grid['models_per_s'] / (scale * base_grid):.0%} | {dqn['steps_per_s']:,.0f} | "
              f"{dqn['steps_per_s'] / (scale * base_dqn):.0%} |")


if __name__ == "__main__":
    main()
