"""Many DQN agents in one run (``jaxrl dqn train --num-seeds S``), sharded over every device of every process.

Agent ``i`` is exactly the agent that ``jaxrl dqn train --seed (seed + i)`` trains alone: the same initial
key, the same envs in each segment (seeded from its own seed), the same segment boundaries and the same
updates. The run holds all S learner states as one pytree with leaves ``[S, ...]``, a global ``jax.Array``
sharded over a 1-D mesh ``("agent",)`` of the devices of every process (``jaxrl.distributed.initialize()``,
e.g. under ``jaxrl launch``): each device updates its block of agents (one agent per device: the plain
``learner.step``; several: ``jax.vmap`` of it), and each process steps the envs of its own agents on the host.

    result = train_seeds(preset("objects", num_seeds=8), "checkpoints/eight")   # agents seed .. seed + 7

**Boundaries.** Each agent cuts its segment at the learner call where it alone would (its own env steps
reach the next checkpoint), then waits (its calls are no-ops: ``learner.step(..., active_t=False)``) until
every agent has cut; then all are evaluated and one orbax checkpoint holds the whole sharded state (each
process writes its agents' shards) and every agent's host counters, and the next segment starts with fresh
envs for every agent. A resumed run therefore continues every agent exactly.

Run directory: ``config.json`` (``num_seeds`` = S), ``checkpoints/<step>/`` (``<step>``: the fewest env steps
of any agent at that boundary) and ``agent-<i>/`` with agent i's ``metrics.csv``, ``evals.csv`` and ``tb/``;
``jaxrl dqn eval|play --run-dir DIR --agent i`` loads one agent.
"""
from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from jaxrl.dqn.run import checkpoint as ckpt
from jaxrl.dqn.config import DQNConfig
from jaxrl.dqn.envs.host import make_env_from_config
from jaxrl.dqn.learner import Learner, abstract_learner_states, make_learner
from jaxrl.dqn.run.plots import EVALS_FILE
from jaxrl.dqn.run.run_dir import CONFIG_FILE, METRICS_FILE, prepare_run_dir, write_json_atomic
from jaxrl.dqn.run.train import (AgentLog, TrainResult, _StopFlag, _fresh_host, _resolve_run, _truncate_metrics,
                             _write_evals, next_checkpoint_after, segment_seed, write_metrics_header)

AGENT_AXIS = "agent"
SEED_AXIS = "seed"  # the vmap axis over the agents of one device


def agent_config(config: DQNConfig, agent: int) -> DQNConfig:
    """The config of agent ``agent`` of a multi-seed run: the one-agent run it equals (``config.for_agent``)."""
    return config.for_agent(agent)


def agent_dir(run_dir: str | os.PathLike, agent: int) -> Path:
    return Path(run_dir) / f"agent-{agent}"


# -- placement: which device and process holds which agents --------------------------------------------------
class AgentShards(NamedTuple):
    """S agents over a mesh: ``sharding`` splits the leading agent axis; this process holds agents ``local``."""

    mesh: Mesh
    sharding: NamedSharding
    local: range  # this process's agents, in order
    per_device: int  # agents per device


def shard_agents(num_seeds: int) -> AgentShards:
    """Spread ``num_seeds`` agents evenly over the processes and, within each, over as many of its devices as
    divide its share (one process with 2 devices and 3 agents uses 1 device).

    Raises:
      ValueError when the agents do not split evenly over the processes.
    """
    processes = jax.process_count()
    if num_seeds % processes:
        raise ValueError(f"num_seeds ({num_seeds}) must be a multiple of the number of processes ({processes})")
    per_process = num_seeds // processes
    by_process: dict[int, list] = {}
    for device in sorted(jax.devices(), key=lambda d: (d.process_index, d.id)):
        by_process.setdefault(device.process_index, []).append(device)
    fewest = min(len(devices) for devices in by_process.values())
    used = max(d for d in range(1, min(fewest, per_process) + 1) if per_process % d == 0)
    mesh = Mesh(np.array([d for p in sorted(by_process) for d in by_process[p][:used]]), (AGENT_AXIS,))
    first = jax.process_index() * per_process
    return AgentShards(mesh, NamedSharding(mesh, P(AGENT_AXIS)), range(first, first + per_process),
                       per_process // used)


def to_global(local_rows, shards: AgentShards):
    """This process's rows ``[len(local), ...]`` (a pytree) as global arrays ``[S, ...]`` sharded over agents."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(shards.sharding, np.asarray(x)),
                        local_rows)


def local_rows(tree):
    """The rows of this process's agents of every global ``[S, ...]`` array in ``tree``, as NumPy."""
    def rows(array):
        shards = sorted(array.addressable_shards, key=lambda shard: shard.index[0].start or 0)
        return np.concatenate([np.asarray(shard.data) for shard in shards])

    return jax.tree.map(rows, tree)


def _per_agent(fn, per_device: int):
    """``fn`` of one agent over a device's block of agents (leaves ``[per_device, ...]``): the function itself on
    the block's one agent (the program of an agent trained alone), else ``jax.vmap``."""
    if per_device > 1:
        return jax.vmap(fn, axis_name=SEED_AXIS)

    def one(*args):
        return jax.tree.map(lambda x: x[None], fn(*jax.tree.map(lambda x: x[0], args)))

    return one


# -- the compiled pieces ---------------------------------------------------------------------------------------
def _agent_call(state, obs, reward, terminated, truncated, life_lost, begin, active, stop_at, *, step):
    """One learner call of one agent, with the boundary rule of ``jaxrl.dqn.run.train``: a ``begin`` call is the
    first on a segment's fresh envs (``obs`` their reset observations, nothing stored), the call due to reach
    ``stop_at`` env steps reports every env as truncated (``cut``), and an inactive agent (waiting at its
    boundary) does nothing."""
    state = state._replace(done_tm1=state.done_tm1 | begin)
    due = state.env_steps + jnp.sum(~state.done_tm1, dtype=jnp.int32)
    cut = active & ~begin & (due >= stop_at)
    forced = cut & ~state.done_tm1 & ~(terminated | truncated)
    state, actions, metrics = step(state, obs, reward, terminated, truncated | cut, life_lost, active)
    finite = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(state.dqn.params)]
    return state, actions, dict(metrics, cut=cut, forced=forced, params_finite=jnp.all(jnp.stack(finite)))


def _block_call(state, obs, reward, terminated, truncated, life_lost, begin, active, stop, stop_at, *, call):
    # stop_at [k]: each agent's next boundary (its own env steps, as when trained alone; 0: stop now)
    """``_agent_call`` over one device's agents, and over all agents (collectives): how many are still running
    (active and not cut), how many processes asked to stop, and the fewest env steps of any agent."""
    state, actions, metrics = call(state, obs, reward, terminated, truncated, life_lost, begin, active, stop_at)
    running = jax.lax.psum(jnp.sum(active & ~metrics["cut"], dtype=jnp.int32), AGENT_AXIS)
    stops = jax.lax.psum(jnp.sum(stop, dtype=jnp.int32), AGENT_AXIS)
    fewest = jax.lax.pmin(jnp.min(state.env_steps), AGENT_AXIS)
    return state, actions, metrics, running, stops, fewest


def make_multi_step(learner: Learner, shards: AgentShards):
    """The jitted call of all agents: ``(state [S], obs [S, N, D], reward, terminated, truncated, life_lost
    [S, N], begin, active, stop [S] bool, stop_at [S] int32) -> (state, actions [S, N], metrics [S, ...], running (),
    stops (), fewest_env_steps ())``, the state donated."""
    call = _per_agent(functools.partial(_agent_call, step=learner.step), shards.per_device)
    spec = P(AGENT_AXIS)
    block = jax.shard_map(functools.partial(_block_call, call=call), mesh=shards.mesh,
                          in_specs=(spec,) * 10, out_specs=(spec, spec, spec, P(), P(), P()),
                          check_vma=False)
    return jax.jit(block, donate_argnums=0)


def make_multi_init(learner: Learner, shards: AgentShards):
    """The jitted ``init`` of all agents: ``(keys [S, 2], obs_0 [S, N, D]) -> (state [S], actions [S, N])``."""
    spec = P(AGENT_AXIS)
    return jax.jit(jax.shard_map(_per_agent(learner.init, shards.per_device), mesh=shards.mesh,
                                 in_specs=(spec, spec), out_specs=(spec, spec)))


# -- host helpers ----------------------------------------------------------------------------------------------
def allgather_json(value: Any) -> list:
    """``value`` (JSON-serialisable) of every process, in process order (a collective)."""
    if jax.process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(value).encode("utf-8"), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int32))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[:data.size] = data
    everything = np.asarray(multihost_utils.process_allgather(padded))
    return [json.loads(bytes(everything[p, :sizes[p]]).decode("utf-8")) for p in range(len(sizes))]


def _scalar(array) -> int:
    """A replicated () array's value (readable on every process)."""
    return int(np.asarray(array.addressable_data(0)))


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


class _LocalEnvs:
    """The host envs of this process's agents for one segment, and the inputs of the next learner call."""

    def __init__(self, config: DQNConfig, agents: range, segment: int):
        self.envs = [make_env_from_config(agent_config(config, i),
                                          seed=segment_seed(config.seed + i, segment, config.num_envs))
                     for i in agents]
        n = config.num_envs
        self.obs = np.stack([env.reset() for env in self.envs])
        self.reward = np.zeros((len(agents), n), np.float32)
        self.terminated = np.zeros((len(agents), n), bool)
        self.truncated = np.zeros((len(agents), n), bool)
        self.life_lost = np.zeros((len(agents), n), bool)

    def step(self, actions: np.ndarray, active: np.ndarray, begin: np.ndarray) -> None:
        """Step the envs of the active agents that are not at a segment's first call; the rest report nothing."""
        for j, env in enumerate(self.envs):
            if active[j] and not begin[j]:
                self.obs[j], self.reward[j], self.terminated[j], self.truncated[j] = env.step(actions[j])
                self.life_lost[j] = env.life_lost
            else:
                self.reward[j], self.terminated[j], self.truncated[j], self.life_lost[j] = 0, False, False, False

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []


# -- the run ---------------------------------------------------------------------------------------------------
class _SeedsRun:
    """The host side of a multi-seed run: this process's agents (envs, ``AgentLog``s), the global state, the
    boundaries (evals, one checkpoint of everything, next segment)."""

    def __init__(self, config: DQNConfig, run_dir: Path, shards: AgentShards, learner: Learner, num_actions: int,
                 *, resume: bool, progress: bool, log):
        self.config, self.run_dir, self.log = config, run_dir, log
        self.primary = jax.process_index() == 0
        self.shards = shards
        block_learner = learner if self.shards.per_device == 1 else make_learner(config, num_actions, SEED_AXIS)
        self.multi_step = make_multi_step(block_learner, self.shards)
        self.manager = ckpt.open_manager(run_dir, config.keep_checkpoints)
        self.local = self.shards.local
        hosts, start = self._start_or_resume(learner, block_learner, resume=resume)
        self.agents = [AgentLog(agent_config(config, i), agent_dir(run_dir, i), hosts[j], env_steps=int(start[j]),
                                start_step=int(start[j]) if resume else 0, num_actions=num_actions, log=log,
                                name=f"agent {i}: ") for j, i in enumerate(self.local)]
        self.last_checkpoint = self.manager.latest_step()
        self.interrupted = False
        total = config.total_steps * len(self.local)
        self.bar = tqdm(total=total, initial=sum(min(int(s), config.total_steps) for s in start), unit="step",
                        disable=not (progress and self.primary), dynamic_ncols=True, smoothing=0.05)

    def _start_or_resume(self, learner: Learner, block_learner: Learner, *, resume: bool):
        """Restore the newest readable checkpoint (``resume``) or initialise every agent; start the segment's
        envs. Returns (this process's agents' host dicts, their env steps)."""
        config, k = self.config, len(self.local)
        for i in self.local:
            agent_dir(self.run_dir, i).mkdir(parents=True, exist_ok=True)
        if resume and ckpt.saved_steps(self.manager):
            abstract = abstract_learner_states(learner, config, self.shards.sharding)
            self.state, saved, _, step = ckpt.restore_checkpoint(
                self.manager, abstract, config, host_keys=("agents",),
                warn=lambda message: self.log(f"warning: {message}"), set_aside_damaged=self.primary)
            hosts = [saved["agents"][i] for i in self.local]
            start = local_rows(self.state.env_steps)
            for j, i in enumerate(self.local):
                _truncate_metrics(agent_dir(self.run_dir, i) / METRICS_FILE, int(start[j]))
                if hosts[j].get("evals"):
                    _write_evals(agent_dir(self.run_dir, i) / EVALS_FILE, hosts[j]["evals"], config.frame_skip)
            self.log(f"resumed {self.run_dir} from checkpoint {step} (segment {hosts[0]['segment']})")
            self.envs = _LocalEnvs(config, self.local, hosts[0]["segment"])
            self.actions = np.zeros((k, config.num_envs), np.int32)
            self.begin = np.ones(k, bool)
        else:
            if resume:
                self.log(f"no checkpoint in {self.run_dir} yet: starting it from scratch")
            hosts = [_fresh_host(config) for _ in self.local]
            for i in self.local:
                (agent_dir(self.run_dir, i) / METRICS_FILE).unlink(missing_ok=True)
                (agent_dir(self.run_dir, i) / EVALS_FILE).unlink(missing_ok=True)
            self.envs = _LocalEnvs(config, self.local, 0)
            keys = np.stack([np.asarray(jax.random.PRNGKey(config.seed + i)) for i in self.local])
            init = make_multi_init(block_learner, self.shards)
            self.state, actions = init(*to_global((keys, self.envs.obs), self.shards))
            self.actions = local_rows(actions)
            self.begin = np.zeros(k, bool)
            start = np.zeros(k, np.int64)
        for i in self.local:
            write_metrics_header(agent_dir(self.run_dir, i) / METRICS_FILE)
        self.active = np.ones(k, bool)
        self.next_checkpoint_at = np.array([next_checkpoint_after(int(s), config.checkpoint_every) for s in start])
        return hosts, start

    def advance(self, stopping: bool, stop: bool) -> tuple[int, int, int]:
        """One learner call of every agent (``stopping``: every agent cuts now; ``stop``: this process was asked
        to stop); returns (agents still running, processes asking to stop, the fewest env steps of any agent)."""
        envs = self.envs
        envs.step(self.actions, self.active, self.begin)
        stop_at = np.zeros(len(self.local), np.int32) if stopping else np.minimum(
            self.next_checkpoint_at, self.config.total_steps).astype(np.int32)
        inputs = to_global((envs.obs, envs.reward, envs.terminated, envs.truncated, envs.life_lost, self.begin,
                            self.active, np.full(len(self.local), stop), stop_at), self.shards)
        self.state, actions, metrics, running, stops, fewest = self.multi_step(self.state, *inputs)
        self.actions, metrics = local_rows((actions, metrics))
        for j, agent in enumerate(self.agents):
            if self.active[j] and not self.begin[j]:
                intact = (f"checkpoint {self.last_checkpoint} in {self.manager.directory} is intact"
                          if self.last_checkpoint is not None else "no checkpoint had been written yet")
                self.bar.update(agent.account({name: value[j] for name, value in metrics.items()}, intact=intact))
        self.active &= ~metrics["cut"]
        self.begin[:] = False
        return _scalar(running), _scalar(stops), _scalar(fewest)

    def end_segment(self, interrupted: bool, fewest: int) -> bool:
        """Every agent is at its boundary: evals, one checkpoint, the next segment (False: the run ends here)."""
        config = self.config
        self.interrupted = interrupted
        say = self.bar.write if not self.bar.disable else self.log
        params = local_rows(self.state.dqn.params)
        scores = [agent.end_segment(interrupted, jax.tree.map(lambda x: x[j], params), say)
                  for j, agent in enumerate(self.agents)]
        gathered = allgather_json([[agent.host for agent in self.agents], scores])
        hosts = [host for part in gathered for host in part[0]]
        everyone = [score for part in gathered for score in part[1]]
        score = None if any(s is None for s in everyone) else float(np.mean(everyone))
        if fewest != self.last_checkpoint:
            ckpt.save_checkpoint(self.manager, fewest, self.state, dict(agents=hosts), config, eval_return=score)
            self.last_checkpoint = fewest
        self.envs.close()
        if interrupted:
            self.log(f"\ncheckpoint {fewest} saved in {self.manager.directory}; continue with --resume")
            return False
        if fewest >= config.total_steps:
            return False
        self.envs = _LocalEnvs(config, self.local, self.agents[0].host["segment"])
        self.next_checkpoint_at = np.array([next_checkpoint_after(agent.env_steps, config.checkpoint_every)
                                            for agent in self.agents])
        self.active[:] = True
        self.begin[:] = True
        return True

    def close(self) -> None:
        self.bar.close()
        self.envs.close()
        for agent in self.agents:
            agent.close()
        self.manager.close()


def train_seeds(config: DQNConfig, run_dir: str | os.PathLike, *, resume: bool = False, overwrite: bool = False,
                progress: bool = True, log=print) -> list[TrainResult]:
    """Train ``config.num_seeds`` agents into ``run_dir`` (see the module docstring); with several processes
    every process calls it with the same arguments.

    Returns:
        one ``TrainResult`` per agent of this process (``run_dir`` = its ``agent-<i>/``). Raises as
        ``jaxrl.dqn.run.train.train``.
    """
    config, num_actions, learner = _resolve_run(config, run_dir, resume=resume, log=log)
    shards = shard_agents(config.num_seeds)  # refuses a count that does not split over the processes
    if jax.process_index() == 0:
        prepared = prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
        write_json_atomic(prepared / CONFIG_FILE, config.to_dict())
    _barrier("jaxrl dqn run directory")
    run_dir = Path(run_dir)
    run = _SeedsRun(config, run_dir, shards, learner, num_actions, resume=resume, progress=progress, log=log)
    stopping = False
    done = min(allgather_json(min(agent.env_steps for agent in run.agents))) >= config.total_steps
    try:
        with _StopFlag() as stop:
            while not done:
                running, stops, fewest = run.advance(stopping, stop.signal_name is not None)
                stopping = stopping or stops > 0
                done = running == 0 and not run.end_segment(stopping, fewest)
    finally:
        run.close()
    return [agent.result(run.interrupted, run.last_checkpoint) for agent in run.agents]
