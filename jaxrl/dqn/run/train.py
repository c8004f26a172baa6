"""DQN training runs: the shell around ``learner.step`` (envs, progress bar, ``metrics.csv`` and TensorBoard,
checkpoints, resume, SIGINT and the divergence guard), with two interchangeable segment runners.

    result = train(preset("seed", total_steps=1_000_000), "checkpoints/my-run")
    result = train(preset("seed", loop="xla"), "checkpoints/my-xla-run")     # envpool only

Everything the agent does happens inside ``learner.step`` (the pure core, ``jaxrl.dqn.learner``). The only
part that depends on ``config.loop`` is the *segment runner*, which steps the envs and calls the learner:

- ``PythonSegmentRunner`` (``loop="python"``, both backends): the host steps the vectorised env and calls the
  jitted ``learner.step`` once per env step;
- ``XlaSegmentRunner`` (``loop="xla"``, envpool): ``jaxrl.dqn.run.xla_loop.make_xla_loop``'s ``run_until``, one
  compiled ``lax.while_loop`` of (envpool XLA step -> ``learner.step``) for up to ``xla_chunk_calls`` calls.

Both return the metrics of every learner call (plus the segment-boundary flags), and one host loop in
``train`` does all the rest from them, call by call, so both loops write the same ``metrics.csv`` rows (up to
the timing columns) and the same checkpoints. The host logs, checks for Ctrl-C and saves only between runner
calls; the XLA runner ends a compiled call early after the call that is due a ``metrics.csv`` row and at a
segment boundary, so rows and checkpoints fall on the same env steps as with the Python loop.

**Segments and exact resume.** The emulator state of envpool envs cannot be saved, so a checkpoint is taken
at a *segment boundary*: at that call every env's episode is cut as a time-limit truncation (bootstrapped,
never stored as terminal, exactly like the env's own time limit), the checkpoint is written, and the next
segment starts from freshly made envs seeded from ``(seed, segment index)``. A run resumed from a checkpoint
therefore sees exactly the transitions, random numbers and updates of an uninterrupted run, and on CPU ends
with bit-identical parameters. Episodes cut at a boundary are not counted in the episode statistics. With the
seed preset's ``checkpoint_every`` (100k steps, 12.5k calls per env with 8 envs) about one episode in ten is cut;
with many envs the calls per env between boundaries (``checkpoint_every / num_envs``) are few, and the cut share
grows as the agent's games get longer.
The first learner call on a segment's new envs (their reset observations) stores nothing: ``done_tm1`` is set
for every env first, also for an env whose episode had ended on the call just before the boundary.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxrl.dqn.config import DQNConfig
from jaxrl.dqn.envs.host import make_env_from_config, resolve_backend
from jaxrl.dqn.envs.xla import make_xla_env_from_config
from jaxrl.dqn.learner import abstract_learner_state, make_learner
from jaxrl.dqn.run import checkpoint as ckpt
from jaxrl.dqn.run.evaluate import evaluate_returns
from jaxrl.dqn.run.plots import EVALS_FILE
from jaxrl.dqn.run.run_dir import CONFIG_FILE, METRICS_FILE, load_run_config, prepare_run_dir, write_json_atomic
from jaxrl.dqn.run.xla_loop import LoopState, make_xla_loop

TENSORBOARD_SUBDIR = "tb"
METRIC_COLUMNS = ("step", "frames", "episodes", "mean_return", "window_return", "loss", "q_mean", "epsilon",
                  "updates", "steps_per_s", "wall_s")
RECENT_EPISODES = 100


class DivergenceError(RuntimeError):
    """A loss or parameter became NaN/inf; the run stopped without saving over the last good checkpoint."""


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    env_steps: int
    frames: int
    episodes: int
    mean_return: float  # mean of the last 100 completed episodes (nan if none)
    interrupted: bool
    last_checkpoint: int | None
    wall_s: float


# -- small helpers --------------------------------------------------------------------------------------
def segment_seed(seed: int, segment: int, num_envs: int) -> int:
    """Env seed of segment ``segment`` (env i gets this + i), derived from the run seed."""
    value = int(np.random.SeedSequence([int(seed), int(segment)]).generate_state(1)[0])
    return value % (2**31 - 1 - num_envs)


def eval_seed(seed: int, step: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(step), 7]).generate_state(1)[0]) % (2**31 - 4096)


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop ``metrics.csv`` rows written after the checkpoint a run resumes from."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [row for row in rows[1:] if row and int(row[0]) <= last_step]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        csv.writer(f).writerows(kept)
    os.replace(tmp, path)


def _write_evals(path: Path, evals: list, frame_skip: int) -> None:
    """(Re)write ``evals.csv`` from the run's ``[step, eval_return]`` pairs (atomically: a crash keeps the old)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["step", "frames", "eval_return"])
        out.writerows([int(step), int(step) * frame_skip, _fmt(score)] for step, score in evals)
    os.replace(tmp, path)


def _fmt(value: float) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.6g}"


class _StopFlag:
    """SIGINT/SIGTERM set a flag the loop checks once per call (handlers restored on exit)."""

    def __init__(self):
        self.signal_name = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C aborts at once
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _non_finite(metrics: dict) -> str | None:
    """What went NaN/inf in this call's metrics (the loss of an update, or any parameter), else None."""
    if metrics["did_update"] and not np.isfinite(metrics["loss"]):
        return f"the loss is {float(metrics['loss'])}"
    if not metrics["params_finite"]:
        return "a parameter is not finite"
    return None


def keep_recent(recent: list[float], returns) -> list[float]:
    """``recent`` with ``returns`` appended, cut to the last RECENT_EPISODES: the "last 100 episodes" window."""
    return (list(recent) + [float(value) for value in returns])[-RECENT_EPISODES:]


def mean_or_nan(values) -> float:
    """Mean of ``values``, NaN when there are none (no episode finished yet)."""
    return float(np.mean(values)) if len(values) else float("nan")


def _record(host: dict, metrics: dict, ended: np.ndarray) -> None:
    """Add one call's update metrics and the returns of episodes that ``ended`` [N] bool to ``host``."""
    if metrics["did_update"]:
        host["loss_sum"] += float(metrics["loss"])
        host["q_sum"] += float(metrics.get("q_mean", float("nan")))
        host["loss_count"] += 1
    for value in np.asarray(metrics["episode_return"])[ended]:
        host["episodes"] += 1
        host["recent_returns"] = keep_recent(host["recent_returns"], [value])
        host["window_returns"].append(float(value))


def guard_step(step):
    """``learner.step`` plus a ``params_finite`` metric (all parameters finite) for the divergence guard."""
    def guarded_step(state, obs_t, reward_t, terminated_t, truncated_t, life_lost_t=None):
        state, actions_t, metrics = step(state, obs_t, reward_t, terminated_t, truncated_t, life_lost_t)
        finite = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(state.dqn.params)]
        return state, actions_t, dict(metrics, params_finite=jnp.all(jnp.stack(finite)))

    return guarded_step


def make_train_step(learner):
    """``learner.step`` with the divergence metric (``guard_step``), jitted with the state donated."""
    return jax.jit(guard_step(learner.step), donate_argnums=0)


def resolve_loop(loop: str, backend: str, num_seeds: int = 1) -> tuple[str, str | None]:
    """The loop to run with the (resolved) ``backend``, and a line to log about the choice (or None).

    ``loop="auto"`` is the compiled loop whenever the backend is envpool, the Python loop otherwise (both
    learn the same agent from the same envs; the compiled one is faster), and says which it chose.
    ``loop="xla"`` needs envpool's XLA interface. An explicit ``backend="gymnasium"`` with it is refused by
    ``DQNConfig``; here ``backend`` is already resolved, so ``"gymnasium"`` means ``--backend auto`` found no
    envpool: the run falls back to the Python loop (same agent, same results on the same envs, slower) with a
    warning, and the saved config says ``loop="python"``.
    """
    if loop == "auto" and num_seeds > 1:
        return "python", "loop auto: the agents of a multi-seed run step their envs on the host (--loop python)"
    if loop == "auto":
        if backend == "envpool":
            return "xla", "loop auto: envpool is available, training with the compiled loop (--loop xla)"
        return "python", ("loop auto: the gymnasium backend has no XLA interface, training with the Python loop "
                          "(--loop python)")
    if loop == "xla" and backend != "envpool":
        return "python", ("warning: --loop xla needs envpool's XLA interface and envpool is not installed "
                          "(--backend auto chose gymnasium): falling back to --loop python")
    return loop, None


# -- segment runners: the only part that differs between --loop python and --loop xla ----------------------
class Chunk(NamedTuple):
    """What one ``advance`` of a segment runner did: host metrics of each learner call, in order."""

    calls: list  # [n] dicts of NumPy values (``learner.step`` metrics + params_finite, cut, forced [N])
    cut: bool  # the last call was a segment boundary


def _begin_segment(train_step, state, obs_0):
    """First learner call on freshly made envs (a new segment, or a resume): ``obs_0`` [N, 128] is not the
    result of the previous actions, so ``done_tm1`` is set for every env and nothing enters the buffer."""
    num_envs = obs_0.shape[0]
    state = state._replace(done_tm1=jnp.ones_like(state.done_tm1))
    no = np.zeros(num_envs, bool)
    state, actions, _ = train_step(state, obs_0, np.zeros(num_envs, np.float32), no, no, no)
    return state, actions


class PythonSegmentRunner:
    """``--loop python``: the host steps the envs (``make_vec_env``, either backend) and calls the jitted
    learner step once per vectorised env step; each ``advance`` is one call."""

    def __init__(self, config: DQNConfig, learner):
        self.config = config
        self.learner = learner
        self.train_step = make_train_step(learner)
        self.env = None

    def start(self, segment: int, state=None) -> None:
        """(Re)make the envs of ``segment``; a fresh agent when ``state`` is None, else continue ``state``."""
        self.close()
        self.env = make_env_from_config(self.config, seed=segment_seed(self.config.seed, segment,
                                                                        self.config.num_envs))
        obs_0 = self.env.reset()
        if state is None:
            self.state, self.actions = jax.jit(self.learner.init)(jax.random.PRNGKey(self.config.seed), obs_0)
        else:
            self.state, self.actions = _begin_segment(self.train_step, state, obs_0)
        self._env_steps = int(jax.device_get(self.state.env_steps))
        self._done_tm1 = np.asarray(jax.device_get(self.state.done_tm1))

    def advance(self, pause_at: int, stop_at: int) -> Chunk:
        """One env step and learner call; it is a segment boundary when ``stop_at`` env steps are due."""
        obs, reward, terminated, truncated = self.env.step(self.actions)
        cut = self._env_steps + int(np.sum(~self._done_tm1)) >= stop_at
        forced = ~self._done_tm1 & ~(terminated | truncated) & cut
        if cut:  # every episode ends here as a time-limit truncation
            truncated = np.ones_like(truncated)
        self.state, self.actions, metrics = self.train_step(self.state, obs, reward, terminated, truncated,
                                                            self.env.life_lost)
        metrics = dict(jax.device_get(metrics), cut=cut, forced=forced)
        self._env_steps = int(metrics["env_steps"])
        self._done_tm1 = np.asarray(metrics["episode_done"])
        return Chunk([metrics], cut)

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None


class XlaSegmentRunner:
    """``--loop xla``: envpool's XLA step and the learner step compiled together (``make_xla_loop``'s
    ``run_until``); each ``advance`` is one compiled call of up to ``config.xla_chunk_calls`` learner calls
    that ends early after a ``metrics.csv`` row is due (``pause_at``) or at a segment boundary (``stop_at``).

    The envpool handle is baked into the compiled call, so each segment's new envs mean one new compile.
    """

    def __init__(self, config: DQNConfig, learner):
        self.config = config
        self.learner = learner
        self.train_step = make_train_step(learner)  # the first call of each segment (see _begin_segment)
        self.guarded = learner._replace(step=guard_step(learner.step))
        self.env = None

    def start(self, segment: int, state=None) -> None:
        self.close()
        self.env = make_xla_env_from_config(self.config, segment_seed(self.config.seed, segment,
                                                                      self.config.num_envs))
        self.loop = make_xla_loop(self.guarded, self.env, steps_per_call=self.config.xla_chunk_calls)
        env_state, obs_0 = self.env.reset()
        if state is None:
            state, actions = jax.jit(self.learner.init)(jax.random.PRNGKey(self.config.seed), obs_0)
        else:
            state, actions = _begin_segment(self.train_step, state, obs_0)
        self.loop_state = LoopState(learner=state, env_state=env_state, actions=actions)

    @property
    def state(self):
        return self.loop_state.learner

    def advance(self, pause_at: int, stop_at: int) -> Chunk:
        limit = np.iinfo(np.int32).max
        self.loop_state, metrics, num_calls = self.loop.run_until(
            self.loop_state, np.int32(min(pause_at, limit)), np.int32(min(stop_at, limit)))
        metrics, num_calls = jax.device_get((metrics, num_calls))
        calls = [{name: value[i] for name, value in metrics.items()} for i in range(int(num_calls))]
        return Chunk(calls, bool(calls[-1]["cut"]))

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None


SEGMENT_RUNNERS = {"python": PythonSegmentRunner, "xla": XlaSegmentRunner}


# -- the run: its steps, then the loop ----------------------------------------------------------------------
def _resolve_run(config: DQNConfig, run_dir, *, resume: bool, log) -> tuple[DQNConfig, int, Any]:
    """The config to run and save (backend and loop resolved), the number of actions and the learner.

    Everything that can fail on bad input fails here, before the run directory is touched: on ``resume`` the
    saved config must match ``config`` (except RESUMABLE_FIELDS).
    """
    backend = resolve_backend(config.backend)
    loop, warning = resolve_loop(config.loop, backend, config.num_seeds)
    config = config.replace(backend=backend, loop=loop)  # the resolved backend and loop are what gets saved
    if resume:
        saved = load_run_config(prepare_run_dir(run_dir, resume=True, overwrite=False))
        ckpt.check_config(saved, config, where=f"the run in {run_dir}")
    if warning:
        log(warning)
    probe = make_env_from_config(config, num_envs=1, seed=0)
    num_actions = probe.num_actions
    probe.close()
    return config, num_actions, make_learner(config, num_actions)


def _fresh_host(config: DQNConfig) -> dict[str, Any]:
    """The host-side counters a checkpoint carries (segment, episode stats, next log row, wall time)."""
    return dict(segment=0, episodes=0, recent_returns=[], window_returns=[], loss_sum=0.0, q_sum=0.0,
                loss_count=0, next_log_at=config.log_every, wall_s=0.0, checkpoints=0)


def _start_or_resume(runner, manager, learner, config: DQNConfig, run_dir: Path, *, resume: bool,
                     log) -> tuple[dict[str, Any], int]:
    """Start ``runner`` from the newest readable checkpoint (``resume``) or from scratch; returns (host, start
    step). A resume drops the metrics.csv rows and evals written after that checkpoint; a fresh start deletes
    both files. metrics.csv has its header afterwards."""
    host = _fresh_host(config)
    start_step = 0
    metrics_path = run_dir / METRICS_FILE
    if resume and ckpt.saved_steps(manager):
        abstract = abstract_learner_state(learner, config)
        try:  # the newest readable checkpoint; damaged newer ones are moved aside (the new saves reuse their steps)
            state, host, _, start_step = ckpt.restore_checkpoint(
                manager, abstract, config, host_keys=tuple(host), warn=lambda message: log(f"warning: {message}"),
                set_aside_damaged=True)
        except BaseException:
            manager.close()
            raise
        _truncate_metrics(metrics_path, start_step)
        if host.get("evals"):  # drop an eval written after that checkpoint (a crash between the two)
            _write_evals(run_dir / EVALS_FILE, host["evals"], config.frame_skip)
        log(f"resumed {run_dir} from checkpoint {start_step} (segment {host['segment']})")
        runner.start(host["segment"], jax.tree.map(jax.numpy.asarray, state))
    else:
        if resume:
            log(f"no checkpoint in {run_dir} yet: starting it from scratch")
        metrics_path.unlink(missing_ok=True)
        (run_dir / EVALS_FILE).unlink(missing_ok=True)
        runner.start(0)
    write_metrics_header(metrics_path)
    return host, start_step


def write_metrics_header(path: Path) -> None:
    """Start ``metrics.csv`` with its header row unless it exists (a resumed run appends to it)."""
    if not path.is_file():
        with path.open("w", newline="") as f:
            csv.writer(f).writerow(METRIC_COLUMNS)


def _open_tensorboard(run_dir: Path, start_step: int, log):
    """A TensorBoard writer into ``run_dir/tb`` (events after ``start_step`` purged on resume), or None."""
    try:
        from tensorboardX import SummaryWriter

        return SummaryWriter(str(run_dir / TENSORBOARD_SUBDIR), purge_step=start_step or None)
    except ImportError:  # pragma: no cover - tensorboardX is a dependency, but keep training without it
        log("tensorboardX not installed: no TensorBoard event files")
        return None


class AgentLog:
    """One agent's host bookkeeping between learner calls: the divergence guard, episode and loss stats,
    ``metrics.csv`` / TensorBoard rows, and its evals (``evals.csv``). ``host`` is the dict its checkpoints
    carry; ``directory`` holds its files (the run directory, or ``agent-<i>/`` of a multi-seed run)."""

    def __init__(self, config: DQNConfig, directory: Path, host: dict, *, env_steps: int, start_step: int,
                 num_actions: int, log, name: str = ""):
        self.config, self.directory, self.host, self.num_actions, self.log = config, directory, host, num_actions, log
        self.name = name  # "agent 3 " in messages of a multi-seed run
        self.path = directory / METRICS_FILE
        self.writer = _open_tensorboard(directory, start_step, log)
        self.wall_start = time.perf_counter() - float(host["wall_s"])  # wall_s carries over resumes
        self.env_steps = env_steps
        self.window_start_time, self.window_start_step = time.perf_counter(), env_steps

    def account(self, metrics: dict, *, intact: str) -> int:
        """Bookkeeping of one learner call (``intact``: where the last good checkpoint is, for the divergence
        message); returns the env steps it added."""
        config, host = self.config, self.host
        new_env_steps = int(metrics["env_steps"])
        problem = _non_finite(metrics)
        if problem:
            raise DivergenceError(
                f"{self.name}training diverged at step {new_env_steps} (update {int(metrics['num_updates'])}): "
                f"{problem}; stopped without saving, {intact}; try a lower --learning-rate or --max-grad-norm")
        _record(host, metrics, np.asarray(metrics["episode_done"]) & ~np.asarray(metrics["forced"]))
        added = max(0, min(new_env_steps, config.total_steps) - min(self.env_steps, config.total_steps))
        self.env_steps = new_env_steps
        while self.env_steps >= host["next_log_at"]:
            self.last_row = self._write_row(self.env_steps, metrics)
            host["next_log_at"] += config.log_every
        return added

    def _write_row(self, step: int, metrics: dict) -> dict:
        """One metrics.csv row (and TensorBoard scalars) for the calls since the last row; resets the window."""
        config, host = self.config, self.host
        now = time.perf_counter()
        speed = (step - self.window_start_step) / max(now - self.window_start_time, 1e-9)
        recent, window = host["recent_returns"], host["window_returns"]
        row = dict(step=step, frames=step * config.frame_skip, episodes=host["episodes"],
                   mean_return=mean_or_nan(recent), window_return=mean_or_nan(window),
                   loss=host["loss_sum"] / host["loss_count"] if host["loss_count"] else float("nan"),
                   q_mean=host["q_sum"] / host["loss_count"] if host["loss_count"] else float("nan"),
                   epsilon=float(metrics["epsilon"]), updates=int(metrics["num_updates"]),
                   steps_per_s=speed, wall_s=now - self.wall_start)
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([row[c] if c in ("step", "frames", "episodes", "updates") else _fmt(row[c])
                                    for c in METRIC_COLUMNS])
        if self.writer is not None:
            for name in METRIC_COLUMNS[2:]:
                if not (isinstance(row[name], float) and math.isnan(row[name])):
                    self.writer.add_scalar(f"dqn/{name}", row[name], step)
        host.update(window_returns=[], loss_sum=0.0, q_sum=0.0, loss_count=0)
        self.window_start_time, self.window_start_step = now, step
        return row

    def score(self, params) -> float | None:
        """The checkpoint's score: an eval's mean return (eval_episodes > 0), else the last 100 episodes'."""
        config, step = self.config, self.env_steps
        if config.eval_episodes > 0:
            returns = evaluate_returns(config, params, config.eval_episodes, epsilon=config.eval_epsilon,
                                       seed=eval_seed(config.seed, step), num_actions=self.num_actions)
            return float(np.mean(returns))
        recent = self.host["recent_returns"]
        return float(np.mean(recent)) if recent else None

    def log_eval(self, score: float, say) -> None:
        """Append an eval to evals.csv, ``say`` (one line) and TensorBoard."""
        config, step = self.config, self.env_steps
        self.host.setdefault("evals", []).append([step, score])
        _write_evals(self.directory / EVALS_FILE, self.host["evals"], config.frame_skip)
        say(f"{self.name}step {step}: eval return {score:.1f} (mean of {config.eval_episodes} episodes, "
            f"epsilon {config.eval_epsilon:g})")
        if self.writer is not None:
            self.writer.add_scalar("dqn/eval_return", score, step)

    def end_segment(self, interrupted: bool, params, say) -> float | None:
        """Boundary bookkeeping: the eval (unless ``interrupted``) and the host counters; returns the score."""
        score = None if interrupted else self.score(params)
        if score is not None and self.config.eval_episodes > 0:
            self.log_eval(score, say)
        self.host["segment"] += 1
        self.host["checkpoints"] += 1
        self.host["wall_s"] = time.perf_counter() - self.wall_start
        return score

    def result(self, interrupted: bool, last_checkpoint: int | None) -> TrainResult:
        return TrainResult(run_dir=self.directory, env_steps=self.env_steps,
                           frames=self.env_steps * self.config.frame_skip, episodes=self.host["episodes"],
                           mean_return=mean_or_nan(self.host["recent_returns"]), interrupted=interrupted,
                           last_checkpoint=last_checkpoint, wall_s=time.perf_counter() - self.wall_start)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def next_checkpoint_after(step: int, checkpoint_every: int) -> int:
    return (step // checkpoint_every + 1) * checkpoint_every


class _RunHost:
    """The host side of a one-agent run between runner calls: the agent's bookkeeping (``AgentLog``), the
    progress bar and the segment boundaries (eval, checkpoint, next segment's envs)."""

    def __init__(self, config: DQNConfig, run_dir: Path, manager, runner, host: dict, *, start_step: int,
                 num_actions: int, progress: bool, log):
        self.config, self.manager, self.runner, self.host = config, manager, runner, host
        self.progress, self.log = progress, log
        env_steps = int(jax.device_get(runner.state.env_steps))
        self.agent = AgentLog(config, run_dir, host, env_steps=env_steps, start_step=start_step,
                              num_actions=num_actions, log=log)
        self.last_checkpoint = manager.latest_step()
        self.next_checkpoint_at = next_checkpoint_after(env_steps, config.checkpoint_every)
        self.interrupted = False
        self.bar = tqdm(total=config.total_steps, initial=min(env_steps, config.total_steps), unit="step",
                        disable=not progress, dynamic_ncols=True, smoothing=0.05)

    @property
    def env_steps(self) -> int:
        return self.agent.env_steps

    def account(self, metrics: dict) -> None:
        """Host bookkeeping of one learner call: the agent's (``AgentLog.account``) and the progress bar."""
        intact = (f"checkpoint {self.last_checkpoint} in {self.manager.directory} is intact"
                  if self.last_checkpoint is not None else "no checkpoint had been written yet")
        rows_before = self.host["next_log_at"]
        self.bar.update(self.agent.account(metrics, intact=intact))
        if self.host["next_log_at"] != rows_before:
            row = self.agent.last_row
            self.bar.set_postfix(ret=_fmt(row["mean_return"]), loss=_fmt(row["loss"]), eps=f"{row['epsilon']:.3f}")

    def end_segment(self, signal_name: str | None) -> bool:
        """Segment boundary: eval (unless stopped by ``signal_name``), checkpoint, then the next segment's envs.

        Returns:
          False when the run ends here (a signal, or total_steps reached), True when it goes on.
        """
        config = self.config
        self.interrupted = signal_name is not None
        state = self.runner.state
        score = self.agent.end_segment(self.interrupted, state.dqn.params,
                                       self.bar.write if self.progress else self.log)
        if self.env_steps != self.last_checkpoint:
            ckpt.save_checkpoint(self.manager, self.env_steps, state, self.host, config, eval_return=score)
            self.last_checkpoint = self.env_steps
        self.next_checkpoint_at = next_checkpoint_after(self.env_steps, config.checkpoint_every)
        if self.interrupted:
            self.log(f"\n{signal_name} at step {self.env_steps}: checkpoint saved in {self.manager.directory}; "
                     f"continue with --resume")
            return False
        if self.env_steps >= config.total_steps:
            return False
        self.runner.start(self.host["segment"], state)
        return True

    def close(self) -> None:
        self.bar.close()
        self.runner.close()
        self.agent.close()
        self.manager.close()

    def result(self) -> TrainResult:
        return self.agent.result(self.interrupted, self.last_checkpoint)


def train(config: DQNConfig, run_dir: str | os.PathLike, *, resume: bool = False, overwrite: bool = False,
          progress: bool = True, log=print) -> TrainResult:
    """Train a DQN agent with ``config`` into ``run_dir`` (see the module docstring).

    Args:
        config: the run's settings; on ``resume`` it must match the checkpoint's (except RESUMABLE_FIELDS).
        run_dir: directory for config.json, metrics.csv, tb/ and checkpoints/.
        resume: continue from the latest checkpoint in ``run_dir``.
        overwrite: delete an existing ``run_dir`` first.
        progress: show a tqdm progress bar.
        log: one-line messages (``print`` by default).

    Returns:
        TrainResult. Raises ``DivergenceError`` on NaN/inf (nothing saved after the last good checkpoint),
        ``RunDirError`` / ``ConfigMismatchError`` (a ValueError) on a run dir that cannot be used.
    """
    config, num_actions, learner = _resolve_run(config, run_dir, resume=resume, log=log)
    run_dir = prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
    write_json_atomic(run_dir / CONFIG_FILE, config.to_dict())
    manager = ckpt.open_manager(run_dir, config.keep_checkpoints)
    runner = SEGMENT_RUNNERS[config.loop](config, learner)
    host, start_step = _start_or_resume(runner, manager, learner, config, run_dir, resume=resume, log=log)
    run = _RunHost(config, run_dir, manager, runner, host, start_step=start_step, num_actions=num_actions,
                   progress=progress, log=log)
    try:
        with _StopFlag() as stop:
            while run.env_steps < config.total_steps:
                stop_at = 0 if stop.signal_name is not None else min(run.next_checkpoint_at, config.total_steps)
                chunk = runner.advance(pause_at=host["next_log_at"], stop_at=stop_at)
                for metrics in chunk.calls:
                    run.account(metrics)
                if chunk.cut and not run.end_segment(stop.signal_name):
                    break
    finally:
        run.close()
    return run.result()
