"""End-to-end DQN training runs on tiny settings: both backends, exact resume, SIGKILL/SIGINT, NaN guard."""
import signal
import subprocess

import jax
import numpy as np
import pytest

from jaxrl.dqn.config import preset
from jaxrl.dqn.learner import abstract_learner_state, make_learner
from jaxrl.dqn.run.run_dir import RunDirError
from jaxrl.dqn.run.train import METRIC_COLUMNS, DivergenceError, train

from conftest import (FAST_BACKEND, HAS_ENVPOOL, assert_same_tree, final_state, finished_checkpoints, read_rows,
                      start_training, train_command, wait_for)

BACKENDS = [
    "gymnasium",
    pytest.param("envpool", marks=pytest.mark.skipif(not HAS_ENVPOOL, reason="envpool is not installed")),
]


def tiny(**overrides):
    return preset("tiny", **{"backend": FAST_BACKEND, **overrides})


@pytest.mark.parametrize("backend", BACKENDS)
def test_short_training_run_writes_everything(tmp_path, backend):
    config = tiny(backend=backend)
    result = train(config, tmp_path / "run", progress=False, log=lambda *_: None)
    run = tmp_path / "run"
    assert result.env_steps >= config.total_steps and not result.interrupted
    assert result.frames == result.env_steps * config.frame_skip
    assert result.episodes > 0 and np.isfinite(result.mean_return)
    rows = read_rows(run)
    assert tuple(rows[0]) == METRIC_COLUMNS
    assert [int(r["step"]) for r in rows] == list(range(200, 1201, 200))
    assert len(rows) == config.total_steps // config.log_every
    assert all(np.isfinite(float(r["loss"])) for r in rows)  # updates start after learning_starts=128
    assert float(rows[-1]["epsilon"]) == pytest.approx(config.epsilon_end)
    assert (run / "config.json").is_file()
    assert any((run / "tb").iterdir())  # TensorBoard event file
    state, host, step = final_state(run, config)
    assert step == result.env_steps == int(state.env_steps)
    assert host["episodes"] == result.episodes
    assert int(state.replay.size) == min(result.env_steps, config.buffer_size)
    assert state.replay.data.obs.dtype == np.uint8
    # a second run into the same directory is refused and leaves it as it was
    before = sorted(p.name for p in run.rglob("*"))
    with pytest.raises(RunDirError, match="already exists"):
        train(config, run, progress=False)
    assert sorted(p.name for p in run.rglob("*")) == before
    # --overwrite only ever deletes a run directory, never some other folder
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not a jaxrl dqn run directory"):
        train(config, tmp_path / "notes", overwrite=True, progress=False)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


# The default one-step agent's resume is checked by test_sigkill_then_resume_matches_uninterrupted_run.
@pytest.mark.parametrize("extra", [dict(n_step=3, life_loss_terminal=True, clip_rewards=True,
                                        obs_encoding="bits", dueling=True, layer_norm=True,
                                        prioritized_replay=True, munchausen_alpha=0.9),
                                   dict(n_step=3, num_quantiles=5, double_dqn=True, dueling=True,
                                        prioritized_replay=True),
                                   dict(frame_stack=3, n_step=2, learning_rate_end=0.0, learning_rate_decay_steps=1_000),
                                   # rollouts of 12 calls: the checkpoint (after 50 calls) falls mid-rollout
                                   dict(algo="pqn", rollout_steps=12, num_minibatches=2, epochs=2, layer_norm=True,
                                        optimizer="radam", clip_rewards=True, reward_scale=1.0,
                                        life_loss_terminal=True, learning_rate_end=0.0),
                                   dict(algo="pqn", rollout_steps=12, num_minibatches=2, epochs=2, layer_norm=True,
                                        num_quantiles=4, dueling=True, clip_rewards=True, reward_scale=1.0)],
                         ids=["n-step-life-bits-dueling-layernorm-prioritized-munchausen",
                              "quantile-double-dueling-prioritized", "frame-stack-3-lr-decay", "pqn",
                              "pqn-quantile-dueling"])
def test_resume_is_bit_for_bit_and_metrics_deterministic(tmp_path, extra):
    # 400 steps, checkpoints every 200, updates from step 128 (n-step windows are part of the state)
    config = tiny(total_steps=400, checkpoint_every=200, log_every=100, **extra)
    train(config, tmp_path / "straight", progress=False, log=lambda *_: None)
    # same run, stopped at 200 steps (its final checkpoint, after updates began) then resumed to 400
    train(config.replace(total_steps=200), tmp_path / "resumed", progress=False, log=lambda *_: None)
    train(config, tmp_path / "resumed", resume=True, progress=False, log=lambda *_: None)
    straight, straight_host, step_a = final_state(tmp_path / "straight", config)
    resumed, resumed_host, step_b = final_state(tmp_path / "resumed", config)
    assert step_a == step_b >= 400 and int(straight.dqn.num_updates) > 0
    assert_same_tree(straight, resumed)  # params, target, Adam state, replay buffer (PQN: rollout), key, counters
    assert straight_host["recent_returns"] == resumed_host["recent_returns"]
    timing = {"steps_per_s", "wall_s"}
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert strip(read_rows(tmp_path / "straight")) == strip(read_rows(tmp_path / "resumed"))


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    run = tmp_path / "killed"
    proc = start_training(["--total-steps", "1000000"], run)
    wait_for(lambda: len(finished_checkpoints(run)) >= 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    kept = finished_checkpoints(run)
    assert 2 <= len(kept) and kept[-1] < 1_200, kept  # killed between the 2nd and 3rd checkpoint
    resumed = subprocess.run(train_command("--run-dir", str(run), "--resume", "--total-steps", "1200"),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"from checkpoint {kept[-1]}" in resumed.stdout
    config = tiny()
    train(config, tmp_path / "straight", progress=False, log=lambda *_: None)
    state_killed, _, step_killed = final_state(run, config)
    state_straight, _, step_straight = final_state(tmp_path / "straight", config)
    assert step_killed == step_straight
    assert_same_tree(state_killed.dqn, state_straight.dqn)  # params, target params, optimizer state
    assert_same_tree(state_killed, state_straight)  # and everything else


def test_sigint_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    run = tmp_path / "interrupted"
    proc = start_training(["--total-steps", "1000000"], run)
    wait_for(lambda: len(finished_checkpoints(run)) >= 1 and (run / "metrics.csv").stat().st_size > 200, proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "Traceback" not in out
    assert "SIGINT at step" in out and "checkpoint saved" in out
    saved = finished_checkpoints(run)
    state, _, step = final_state(run, tiny())
    assert step == saved[-1] == int(state.env_steps) > 400
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.dqn.params))


def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    # An absurd Adam step size: the first update moves weights to ~1e30, the next Q-values overflow to
    # inf and the loss becomes non-finite. The checkpoint at ~100 steps (before learning starts) is good.
    config = tiny(learning_rate=1e30, checkpoint_every=100)
    with pytest.raises(DivergenceError, match=r"diverged at step \d+") as info:
        train(config, tmp_path / "run", progress=False, log=lambda *_: None)
    assert "intact" in str(info.value)
    saved = finished_checkpoints(tmp_path / "run")
    assert saved and saved[-1] < 128
    state, _, step = final_state(tmp_path / "run", config)
    assert step == saved[-1]
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.dqn.params))
    diverged_at = int(str(info.value).split("diverged at step ")[1].split()[0])
    assert diverged_at > step


def test_seed_preset_replay_buffer_is_small_uint8():
    config = preset("seed")
    learner = make_learner(config, 6)
    state = abstract_learner_state(learner, config)
    assert state.replay.data.obs.dtype == np.uint8 and state.replay.data.next_obs.dtype == np.uint8
    nbytes = sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(state.replay))
    assert 25.6e6 <= nbytes <= 27e6  # 100k x (2 x 128 B RAM + 4 B action + 4 B reward + 1 B flag) = 26.1 MB
