"""Training and frozen-policy evaluation of an on-policy learner (`jaxrl.dqn.ppo`): the host loop
around its jitted ``iteration``, the log rows, and evaluations of the parameters at chosen points of the run."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from jaxrl.dqn.envs.atari import XlaEnv
from jaxrl.dqn.on_policy import OnPolicy
from jaxrl.dqn.run.train import keep_recent, mean_or_nan


def format_row(row: dict) -> str:
    """One log row as ``key=value, ...`` (floats to 4 significant digits)."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def train(algo: OnPolicy, env: XlaEnv, key, *, num_steps: int, log_every: int, loss_names: tuple[str, ...],
          milestones: tuple[int, ...] = (), at_milestone: Callable | None = None,
          log: Callable = print) -> tuple[object, list[dict]]:
    """Run ``algo.iterations`` iterations of ``algo`` from ``algo.init(key)``; returns (final params, log rows).

    A row every ``log_every`` iterations and at the end: iteration, env_steps, frames (4 per step),
    mean_return_100 (training return of the last 100 games), episodes_in_mean, the mean losses under
    ``loss_names``, steps_per_s, wall_s (training only). ``at_milestone(env_steps, params)`` is called after the first
    iteration that reaches each of ``milestones`` (env steps; once for several reached together) with its env
    steps and parameters; its time is not counted in wall_s.
    """
    state = algo.init(key)
    steps_per_iteration = env.num_envs * num_steps
    pending = sorted(milestones)
    recent: list[float] = []
    rows = []
    wall = 0.0
    for i in range(1, algo.iterations + 1):
        start = time.perf_counter()
        state, finished, losses = algo.iteration(state)
        finished = np.asarray(finished)
        wall += time.perf_counter() - start
        recent = keep_recent(recent, finished[~np.isnan(finished)])
        steps = i * steps_per_iteration
        if i % log_every == 0 or i == algo.iterations:
            row = dict(iteration=i, env_steps=steps, frames=4 * steps, mean_return_100=mean_or_nan(recent),
                       episodes_in_mean=len(recent), **{name: float(value) for name, value in zip(loss_names, losses)},
                       steps_per_s=steps / wall, wall_s=wall)
            rows.append(row)
            log(format_row(row))
        if pending and steps >= pending[0]:
            pending = [milestone for milestone in pending if milestone > steps]
            if at_milestone is not None:
                at_milestone(steps, state.params)
    return state.params, rows
