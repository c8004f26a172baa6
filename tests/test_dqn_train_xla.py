"""``jaxrl dqn train --loop xla``: the compiled segment runner behind the same run-directory shell as the
Python loop (metrics.csv, config.json, TensorBoard, checkpoints, exact resume, SIGINT, NaN guard)."""
import json
import signal

import jax
import numpy as np
import pytest

from jaxrl.cli import main
from jaxrl.dqn.buffers import frames
from jaxrl.dqn.config import DQNConfig, config_differences, preset
from jaxrl.dqn.run.train import METRIC_COLUMNS, DivergenceError, resolve_loop, train

from conftest import (HAS_ENVPOOL, assert_same_tree, final_state, finished_checkpoints, read_rows, small_config,
                      start_training, wait_for)

needs_envpool = pytest.mark.skipif(not HAS_ENVPOOL, reason="envpool is not installed (the XLA loop needs its "
                                                           "XLA interface); the same shell is tested with "
                                                           "--loop python in test_dqn_train.py")
TIMING = {"steps_per_s", "wall_s"}


def tiny_xla(**overrides):
    # 800 steps, checkpoints every 400 (two segments: each one compile); small compiled calls (16 learner calls
    # of 4 envs), so chunks end by size, at metrics rows (every 200 steps) and at segment boundaries
    return preset("tiny", **{"backend": "envpool", "loop": "xla", "xla_chunk_calls": 16, "total_steps": 800,
                             **overrides})


def quiet(*_):
    pass


def strip_timing(rows):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


@pytest.fixture(scope="module")
def straight_xla(tmp_path_factory):
    """An uninterrupted tiny --loop xla run (800 steps, checkpoints every 400: two segments)."""
    run = tmp_path_factory.mktemp("xla") / "straight"
    result = train(tiny_xla(), run, progress=False, log=quiet)
    return run, result


@needs_envpool
def test_xla_run_writes_the_run_directory_and_equals_the_python_loop(straight_xla, tmp_path):
    run, result = straight_xla
    config = tiny_xla()
    assert result.env_steps >= config.total_steps and not result.interrupted and result.episodes > 0
    rows = read_rows(run)
    assert tuple(rows[0]) == METRIC_COLUMNS
    assert [int(r["step"]) for r in rows] == list(range(200, 801, 200))  # one row per log_every, as python
    assert all(np.isfinite(float(r["loss"])) and float(r["steps_per_s"]) > 0 for r in rows)
    saved = json.loads((run / "config.json").read_text())
    assert saved["loop"] == "xla" and saved["backend"] == "envpool"
    assert any((run / "tb").iterdir())
    kept = finished_checkpoints(run)  # keep_checkpoints=2, taken at the segment boundaries
    assert len(kept) == 2 and kept[-1] == result.env_steps and 400 <= kept[0] < 404
    state, host, step = final_state(run, config)
    assert step == result.env_steps == int(state.env_steps) and host["episodes"] == result.episodes
    assert int(state.replay.size) == min(result.env_steps, config.buffer_size)
    # The same config with the Python loop sees the same envs, cuts the same calls and runs the same jitted
    # learner step: on CPU the whole LearnerState and every metrics row (but timing) are identical.
    python_run = tmp_path / "python"
    train(config.replace(loop="python"), python_run, progress=False, log=quiet)
    python_state, python_host, python_step = final_state(python_run, config)
    assert python_step == step
    assert_same_tree(state, python_state)
    assert python_host["recent_returns"] == host["recent_returns"]
    assert strip_timing(read_rows(python_run)) == strip_timing(rows)


@needs_envpool
def test_xla_equals_python_loop_with_n_step_life_loss_and_bits(tmp_path):
    """The life-loss signal reaches the learner the same way from both loops (envpool XLA env state vs the host
    env's ``life_lost``), and the n-step windows cross segment boundaries identically."""
    config = tiny_xla(n_step=3, life_loss_terminal=True, clip_rewards=True, obs_encoding="bits",
                      max_episode_frames=108_000, total_steps=1_600)
    train(config, tmp_path / "xla", progress=False, log=quiet)
    train(config.replace(loop="python"), tmp_path / "python", progress=False, log=quiet)
    xla_state, _, xla_step = final_state(tmp_path / "xla", config)
    python_state, _, python_step = final_state(tmp_path / "python", config)
    assert xla_step == python_step
    assert_same_tree(xla_state, python_state)
    terminal = np.asarray(xla_state.replay.data.terminated)[: int(xla_state.replay.size)]
    assert terminal.any(), "no life lost in 1,600 steps: the life-loss path was not exercised"


@needs_envpool
def test_xla_equals_python_loop_with_frame_stacking_then_eval_and_play(tmp_path, capsys):
    """Stacked RAM (k = 3) from envpool's XLA env state and from the host wrapper reach the learner identically,
    across episode ends (tiny: episodes of at most 100 steps) and segments; eval and play read such a run."""
    config = tiny_xla(frame_stack=3, total_steps=1_200)
    train(config, tmp_path / "xla", progress=False, log=quiet)
    train(config.replace(loop="python"), tmp_path / "python", progress=False, log=quiet)
    xla_state, xla_host, xla_step = final_state(tmp_path / "xla", config)
    python_state, python_host, python_step = final_state(tmp_path / "python", config)
    assert xla_step == python_step and xla_host["episodes"] == python_host["episodes"] > 0
    assert_same_tree(xla_state, python_state)
    refs = np.asarray(xla_state.replay.data.obs)[: int(xla_state.replay.size)]
    assert refs.shape[1] == 3  # rows store frame-store references; the stacks are rebuilt from them
    obs = np.asarray(frames.gather(xla_state.frames, refs, num_frames=3))
    assert obs.shape[1] == 3 * 128
    assert (obs[:, :128] != obs[:, 256:]).any(), "every stored stack is one snapshot repeated"
    assert main(["dqn", "eval", "--run-dir", str(tmp_path / "xla"), "--episodes", "2"]) == 0
    assert "over 2 episodes" in capsys.readouterr().out
    video = tmp_path / "play.gif"
    assert main(["dqn", "play", "--run-dir", str(tmp_path / "xla"), "--episodes", "1", "--video", str(video)]) == 0
    assert video.stat().st_size > 0


@needs_envpool
def test_xla_equals_python_loop_with_pqn_then_eval(tmp_path, capsys):
    """PQN (the learner with DQN's step) through both loops: rollouts that span the segment boundaries (every 400
    steps, mid-rollout), two stacked snapshots, lives lost; then `jaxrl dqn eval` reads it. (PQN on the planes
    CNN, the default preset, runs end to end in test_dqn_encodings.py.)"""
    config = tiny_xla(algo="pqn", rollout_steps=16, num_minibatches=2, epochs=2, layer_norm=True, optimizer="radam",
                      clip_rewards=True, reward_scale=1.0, life_loss_terminal=True, frame_stack=2,
                      max_episode_frames=108_000)
    train(config, tmp_path / "xla", progress=False, log=quiet)
    train(config.replace(loop="python"), tmp_path / "python", progress=False, log=quiet)
    xla_state, _, xla_step = final_state(tmp_path / "xla", config)
    python_state, _, python_step = final_state(tmp_path / "python", config)
    assert xla_step == python_step >= 800 and int(xla_state.dqn.num_updates) >= 12 * 2 * 2
    assert_same_tree(xla_state, python_state)
    assert strip_timing(read_rows(tmp_path / "xla")) == strip_timing(read_rows(tmp_path / "python"))
    assert main(["dqn", "eval", "--run-dir", str(tmp_path / "xla"), "--episodes", "2"]) == 0
    assert "over 2 episodes" in capsys.readouterr().out


@needs_envpool
def test_xla_resume_is_bit_for_bit(straight_xla, tmp_path):
    straight_run, _ = straight_xla
    config = tiny_xla()
    resumed_run = tmp_path / "resumed"
    train(config.replace(total_steps=400), resumed_run, progress=False, log=quiet)
    train(config.replace(xla_chunk_calls=7), resumed_run, resume=True, progress=False, log=quiet)  # resumable
    straight, straight_host, step_a = final_state(straight_run, config)
    resumed, resumed_host, step_b = final_state(resumed_run, config)
    assert step_a == step_b >= 800
    assert_same_tree(straight, resumed)  # params, target, Adam state, replay buffer, key, counters
    assert straight_host["recent_returns"] == resumed_host["recent_returns"]
    assert strip_timing(read_rows(straight_run)) == strip_timing(read_rows(resumed_run))


@needs_envpool
def test_xla_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny_xla(learning_rate=1e30, checkpoint_every=100)
    with pytest.raises(DivergenceError, match=r"diverged at step \d+") as info:
        train(config, tmp_path / "run", progress=False, log=quiet)
    assert "intact" in str(info.value)
    saved = finished_checkpoints(tmp_path / "run")
    assert saved and saved[-1] < 128  # learning starts at 128 steps; nothing saved after the NaN
    state, _, step = final_state(tmp_path / "run", config)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.dqn.params))
    assert int(str(info.value).split("diverged at step ")[1].split()[0]) > step


@needs_envpool
def test_xla_sigint_saves_a_checkpoint_and_exits_130(tmp_path):
    run = tmp_path / "interrupted"
    # Ctrl-C after the first metrics row, during the first segment: the next compiled call is cut at once
    proc = start_training(["--loop", "xla", "--xla-chunk-calls", "16", "--log-every", "40", "--total-steps", "1000000"],
                  run)
    wait_for(lambda: (run / "metrics.csv").is_file() and (run / "metrics.csv").read_text().count("\n") >= 2, proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "SIGINT at step" in out and "checkpoint saved" in out
    state, _, step = final_state(run, tiny_xla())
    assert [step] == finished_checkpoints(run) and int(state.env_steps) == step >= 40
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.dqn.params))


def test_xla_loop_with_gymnasium_is_refused_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["dqn", "train", "--preset", "tiny", "--loop", "xla", "--backend", "gymnasium", "--run-dir",
                 str(run), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "loop='xla' needs the envpool backend" in err and "Traceback" not in err
    assert not run.exists()
    with pytest.raises(ValueError, match="gymnasium has no XLA interface"):
        DQNConfig(loop="xla", backend="gymnasium")
    with pytest.raises(ValueError, match="loop must be one of auto, python, xla"):
        DQNConfig(loop="jit")
    with pytest.raises(ValueError, match="xla_chunk_calls must be"):
        DQNConfig(xla_chunk_calls=0)


def test_loop_is_resumable_and_auto_without_envpool_falls_back_to_python(tmp_path, monkeypatch):
    # loop and the chunk size change neither state shapes nor results (the equality test above)
    assert config_differences(DQNConfig(), DQNConfig(loop="xla", xla_chunk_calls=9)) == {}
    assert resolve_loop("xla", "envpool") == ("xla", None)
    assert resolve_loop("python", "gymnasium") == ("python", None)
    # --backend auto on a machine without envpool: a warning, then the Python loop on gymnasium
    import jaxrl.dqn.envs.host

    monkeypatch.setattr(jaxrl.dqn.envs.host, "envpool_available", lambda: False)
    lines = []
    config = preset("tiny", backend="auto", loop="xla", total_steps=40, checkpoint_every=40, log_every=20)
    result = train(config, tmp_path / "run", progress=False, log=lines.append)
    assert result.env_steps == 40
    assert any("falling back to --loop python" in line for line in lines), lines
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["loop"] == "python" and saved["backend"] == "gymnasium"


def test_run_until_pauses_and_cuts_like_the_host_loop_on_the_toy_env():
    """The compiled runner's control flow on CPU without envpool: pure-JAX toy env (next-step auto-reset)."""
    from jaxrl.dqn import make_learner
    from jaxrl.dqn.envs.toy import make_toy_env
    from jaxrl.dqn.run.xla_loop import make_xla_loop

    lengths = [3, 4, 5]  # env 0 terminates, env 1 truncates, env 2 terminates
    env = make_toy_env(3, num_actions=4, lengths=lengths)
    learner = make_learner(small_config(3, buffer_size=256, batch_size=8, hidden_sizes=(8,), learning_starts=16), 4)
    loop = make_xla_loop(learner, env, steps_per_call=10, donate=False)
    loop_state = loop.init(jax.random.key(0))
    big = 10**6
    loop_state, metrics, calls = loop.run_until(loop_state, big, big)  # neither pause nor cut: K calls
    assert int(calls) == 10 and not metrics["cut"].any()
    loop_state, metrics, calls = loop.run_until(loop_state, 40, big)  # pause after the call reaching 40 steps
    steps = np.asarray(metrics["env_steps"])[: int(calls)]
    assert steps[-1] >= 40 and (int(calls) == 1 or steps[-2] < 40)
    cut_at = int(steps[-1]) + 7
    loop_state, metrics, calls = loop.run_until(loop_state, big, cut_at)  # cut on the call due to reach cut_at
    cut = np.asarray(metrics["cut"])[: int(calls)]
    assert cut[-1] and not cut[:-1].any()
    assert int(np.asarray(metrics["env_steps"])[int(calls) - 2]) < cut_at <= int(metrics["env_steps"][int(calls) - 1])
    # `forced` marks episodes that ended only because of the cut: a subset of those that ended there
    last = int(calls) - 1
    assert np.array_equal(np.asarray(metrics["forced"][last]) | np.asarray(metrics["episode_done"][last]),
                          np.asarray(metrics["episode_done"][last]))

    # the same steps from the host, with the host loop's boundary rule, give the same state
    env_state, obs = env.reset()
    state, actions = jax.jit(learner.init)(jax.random.key(0), obs)
    step, env_step = jax.jit(learner.step), jax.jit(env.step)
    while True:
        expected = int(state.env_steps) + int(np.sum(~np.asarray(state.done_tm1)))
        env_state, (obs, reward, terminated, truncated, life_lost) = env_step(env_state, actions)
        is_cut = expected >= cut_at
        state, actions, _ = step(state, obs, reward, terminated, truncated | is_cut, life_lost)
        if is_cut:
            break
    assert int(state.env_steps) == int(loop_state.learner.env_steps)
    np.testing.assert_array_equal(state.replay.data.obs, loop_state.learner.replay.data.obs)
    np.testing.assert_array_equal(state.replay.data.terminated, loop_state.learner.replay.data.terminated)
    np.testing.assert_array_equal(state.done_tm1, loop_state.learner.done_tm1)
    with pytest.raises(ValueError, match="one agent"):
        make_xla_loop(make_learner(small_config(3, hidden_sizes=(8,), buffer_size=256), 4, axis_name="seed"),
                      make_toy_env(6, num_actions=4), steps_per_call=5, num_seeds=2).run_until(None, 0, 0)
