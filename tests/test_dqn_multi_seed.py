"""`jaxrl dqn train --num-seeds S`: S agents in one run, each the agent its seed trains alone.

- the learner's inactive call (an agent waiting at a boundary) changes nothing;
- one process, one device (agents vmapped): every agent matches its one-agent run (same env steps, episodes
  and metrics rows; parameters to float rounding), per-agent files, eval of every agent, `--agent i`;
- 2 processes x 2 CPU devices through `jaxrl launch` (one agent per device): `--num-seeds 4` trains,
  checkpoints, is resumed, and each agent's whole state equals, bit for bit, its agent trained alone in one go.
"""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import FAST_BACKEND, assert_same_tree, final_state, read_rows, small_config
from jaxrl.dqn.config import preset
from jaxrl.dqn.run.evaluate import load_agents, load_params
from jaxrl.dqn.learner import make_learner
from jaxrl.dqn.run.multi_seed import agent_dir, train_seeds
from jaxrl.dqn.run.train import train


@pytest.mark.parametrize("overrides", [{}, {"n_step": 3}, {"prioritized_replay": True}])
def test_an_inactive_call_changes_nothing(overrides):
    config = small_config(num_envs=2, learning_starts=4, batch_size=4, update_every=1, **overrides)
    learner = make_learner(config, num_actions=3)
    step = jax.jit(learner.step)
    state, actions = learner.init(jax.random.PRNGKey(0), jnp.zeros((2, 128), jnp.uint8))
    rng = np.random.default_rng(0)
    for _ in range(12):  # warm the buffer so that an active call would update
        obs = rng.integers(0, 255, (2, 128), dtype=np.uint8)
        state, actions, _ = step(state, obs, np.ones(2, np.float32), np.zeros(2, bool), np.zeros(2, bool))
    obs = rng.integers(0, 255, (2, 128), dtype=np.uint8)
    args = (obs, np.ones(2, np.float32), np.array([True, False]), np.zeros(2, bool), np.zeros(2, bool))
    held, held_actions, metrics = step(state, *args, np.bool_(False))
    assert_same_tree(held, state)
    np.testing.assert_array_equal(held_actions, state.action_tm1)
    assert not metrics["did_update"] and not np.any(metrics["episode_done"])
    moved, _, moved_metrics = step(state, *args, np.bool_(True))  # active: the plain call, bit for bit
    plain, _, _ = step(state, *args)
    assert_same_tree(moved, plain)
    assert moved_metrics["did_update"] and int(moved.env_steps) == int(state.env_steps) + 2


def _config(**overrides):
    return preset("tiny", **{"backend": FAST_BACKEND, "seed": 3, "total_steps": 800, **overrides})


@pytest.fixture(scope="module")
def two_agents(tmp_path_factory):
    """A run of 2 agents (seeds 3, 4) on this process's one device, 800 steps each: (config, run dir, results)."""
    config, run = _config(num_seeds=2), tmp_path_factory.mktemp("two_agents") / "multi"
    return config, run, train_seeds(config, run, progress=False, log=lambda _: None)


def test_every_agent_matches_its_run_alone_on_one_device(two_agents, tmp_path):
    config, run, results = two_agents
    assert [r.env_steps for r in results] == [800, 800] and [r.last_checkpoint for r in results] == [800, 800]
    agents, step = load_agents(run)
    assert step == 800 and [c.seed for _, c in agents] == [3, 4]
    for i in (1,):  # agent 0 is checked over two processes below
        alone_config = config.for_agent(i).replace(loop="python")
        alone = train(alone_config, tmp_path / f"alone-{i}", progress=False, log=lambda _: None)
        assert results[i].episodes == alone.episodes
        rows, alone_rows = read_rows(agent_dir(run, i)), read_rows(tmp_path / f"alone-{i}")
        timing = ("steps_per_s", "wall_s", "loss", "q_mean")  # losses are means of floats: compared below
        assert [{k: v for k, v in r.items() if k not in timing} for r in rows] == \
               [{k: v for k, v in r.items() if k not in timing} for r in alone_rows]
        # two agents on one device are vmapped: XLA's batched matmuls round differently from one agent's
        alone_params = final_state(tmp_path / f"alone-{i}", alone_config)[0].dqn.params
        for a, b in zip(jax.tree.leaves(agents[i][0]), jax.tree.leaves(alone_params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5)
    params, agent_config, _ = load_params(run, agent=1)
    assert agent_config.seed == 4 and agent_config.num_seeds == 1
    with pytest.raises(ValueError, match="holds 2 agents: choose one with --agent 0..1"):
        load_params(run)
    with pytest.raises(ValueError, match="agent must be in"):
        load_params(run, agent=2)
    with pytest.raises(ValueError, match="holds one agent"):
        load_params(tmp_path / "alone-1", agent=1)


def test_eval_and_play_of_a_multi_seed_run(two_agents, tmp_path, capsys):
    from jaxrl.cli import main

    run = two_agents[1]
    assert main(["dqn", "eval", "--run-dir", str(run), "--episodes", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "agent 0 (seed 3) checkpoint 800" in lines[0] and "agent 1 (seed 4)" in lines[1]
    assert "2 agents:" in lines[2] and "mean ± std over agents" in lines[2]
    video = tmp_path / "agent1.gif"
    assert main(["dqn", "play", "--run-dir", str(run), "--agent", "1", "--video", str(video),
                 "--max-steps", "5"]) == 0
    assert video.is_file() and "agent 1" in capsys.readouterr().out
    assert main(["dqn", "play", "--run-dir", str(run), "--video", str(video)]) == 2
    assert "choose one with --agent" in capsys.readouterr().err


def test_num_seeds_refuses_the_compiled_loop():
    with pytest.raises(ValueError, match="num_seeds > 1 steps each agent's envs on the host"):
        _config(num_seeds=2, loop="xla")


def _launch_train(run_dir, *args):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXRL_DISTRIBUTED")}
    command = [sys.executable, "-m", "jaxrl", "launch", "-n", "2", "--devices-per-process", "2", "--timeout", "400",
               "--", sys.executable, "-m", "jaxrl", "dqn", "train", "--run-dir", str(run_dir), "--no-progress", *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=450, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_four_agents_over_two_processes_resume_and_equal_their_runs_alone(tmp_path):
    run = tmp_path / "multi"
    common = ["--preset", "tiny", "--backend", FAST_BACKEND, "--seed", "3", "--num-seeds", "4"]
    out = _launch_train(run, *common, "--total-steps", "800")
    assert "[0] done: 800 steps" in out and "[1] done: 800 steps" in out and "agent-3" in out
    out = _launch_train(run, "--resume", "--total-steps", "1200")
    assert "resumed" in out and "[1] done: 1200 steps" in out
    config = preset("tiny", backend=FAST_BACKEND, seed=3, num_seeds=4)
    multi_config = config.replace(loop="python", total_steps=1200)
    from jaxrl.dqn.run import checkpoint as ckpt
    from jaxrl.dqn.learner import abstract_learner_states

    abstract = abstract_learner_states(make_learner(multi_config, 6), multi_config)
    manager = ckpt.open_manager(run, read_only=True)
    try:
        state, host, _, step = ckpt.restore_checkpoint(manager, abstract)
    finally:
        manager.close()
    assert step == 1200 and len(host["agents"]) == 4
    for i in (0, 3):  # one agent of each process
        alone_config = config.for_agent(i).replace(loop="python", total_steps=1200)
        train(alone_config, tmp_path / f"alone-{i}", progress=False, log=lambda _: None)
        alone_state = final_state(tmp_path / f"alone-{i}", alone_config)[0]
        assert_same_tree(jax.tree.map(lambda x: x[i], state), alone_state)
        assert len(read_rows(agent_dir(run, i))) == len(read_rows(tmp_path / f"alone-{i}")) == 6
