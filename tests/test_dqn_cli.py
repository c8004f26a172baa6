"""``jaxrl dqn train|eval|play|plot`` and DQNConfig validation: flags, one-line errors, eval/play/plot outputs."""
import csv
import dataclasses
import json
import re

import imageio.v2 as imageio
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl.cli import build_parser, main
from jaxrl.dqn import make_learner
from jaxrl.dqn.config import DQNConfig, config_differences, preset
from jaxrl.dqn.run.cli import config_overrides


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    code = main(["dqn", "train", "--preset", "tiny", "--backend", "gymnasium", "--total-steps", "400",
                 "--eval-episodes", "1", "--run-dir", str(run), "--no-progress"])
    assert code == 0
    return run


def test_train_wrote_the_config_it_was_given(run_dir):
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["total_steps"] == 400 and saved["backend"] == "gymnasium" and saved["hidden_sizes"] == [32]


def test_eval_prints_mean_and_std(run_dir, capsys):
    assert main(["dqn", "eval", "--run-dir", str(run_dir), "--episodes", "2", "--epsilon", "0"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"checkpoint \d+ \(ε=0, gymnasium backend\): return -?\d+\.\d ± \d+\.\d over 2 episodes", out)
    assert main(["dqn", "eval", "--run-dir", str(run_dir), "--random", "--episodes", "2"]) == 0
    assert re.search(r"random agent \(uniform random actions.*\): return \d+\.\d ± \d+\.\d over 2 episodes",
                     capsys.readouterr().out)


@pytest.mark.parametrize("suffix", ["mp4", "gif"])
def test_play_writes_a_video_imageio_reads_back(run_dir, tmp_path, suffix, capsys):
    video = tmp_path / f"agent.{suffix}"
    code = main(["dqn", "play", "--run-dir", str(run_dir), "--video", str(video), "--max-steps", "20"])
    assert code == 0, capsys.readouterr().err
    frames = imageio.mimread(video) if suffix == "gif" else [frame for frame in imageio.get_reader(video)]
    # the first observation and one frame per step (Pillow's GIF writer merges identical consecutive frames)
    assert len(frames) == 21 if suffix == "mp4" else 2 <= len(frames) <= 21
    assert frames[0].shape[:2] == ((210 + 12) * 2, 160 * 2)  # 2x upscale with a score bar on top
    assert np.asarray(frames[5]).std() > 0
    assert not list(tmp_path.glob("*.partial.*"))


def test_checkpoint_evals_are_written_to_evals_csv(run_dir):
    rows = list(csv.DictReader((run_dir / "evals.csv").open()))
    assert [(int(r["step"]), int(r["frames"])) for r in rows] == [(400, 1600)]  # one checkpoint, frame skip 4
    assert float(rows[0]["eval_return"]) >= 0


def test_plot_writes_a_png(run_dir, tmp_path):
    out = tmp_path / "curve.png"
    assert main(["dqn", "plot", "--run-dir", str(run_dir), "--out", str(out)]) == 0
    image = imageio.imread(out)
    assert image.ndim == 3 and image.shape[0] > 100


def test_every_config_field_is_a_flag():
    parser = build_parser()
    values = dict(backend="gymnasium", double_dqn=True, hidden_sizes=(64, 32), max_grad_norm=10.0)
    argv = ["dqn", "train"]
    for field in dataclasses.fields(DQNConfig):
        default = getattr(DQNConfig(), field.name)
        value = values.get(field.name, default + 1 if isinstance(default, int) and not isinstance(default, bool)
                           else default / 2 if isinstance(default, float) else default)
        values[field.name] = value
        flag = "--" + field.name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, tuple):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    overrides = config_overrides(parser.parse_args(argv))
    assert set(overrides) == {f.name for f in dataclasses.fields(DQNConfig)}
    assert DQNConfig().replace(**overrides) == DQNConfig(**values)
    assert config_overrides(parser.parse_args(["dqn", "train", "--max-grad-norm", "none"])) == {"max_grad_norm": None}
    assert config_overrides(parser.parse_args(["dqn", "train"])) == {}  # absent flags leave the preset alone


@pytest.mark.parametrize("argv, message", [
    (["--num-envs", "-1"], r"num_envs must be in \[1, 4096\], got -1"),
    (["--batch-size", "0"], "batch_size must be >= 1"),
    (["--gamma", "1.5"], r"gamma must be in \[0.0, 1.0\]"),
    (["--hidden-sizes", "0"], "hidden_sizes must be a non-empty sequence of positive integers"),
    (["--resume"], "--resume needs --run-dir"),
])
def test_bad_train_flags_give_one_line_and_write_nothing(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(["dqn", "train", "--preset", "tiny", *argv]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and err.count("\n") == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # no run directory, no checkpoints/ folder


def test_other_bad_input(tmp_path, run_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["dqn", "train", "--preset", "nope"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    cases = [
        (["dqn", "train", "--resume", "--run-dir", str(tmp_path / "missing")], "cannot resume"),
        (["dqn", "train", "--run-dir", str(run_dir), "--preset", "tiny"], "already exists"),
        (["dqn", "eval", "--episodes", "3"], "--run-dir is required"),
        (["dqn", "eval", "--run-dir", str(tmp_path / "missing")], "config.json not found"),
        (["dqn", "eval", "--run-dir", str(run_dir), "--episodes", "0"], "--episodes must be >= 1"),
        (["dqn", "eval", "--run-dir", str(run_dir), "--checkpoint", "soon"], "--checkpoint must be latest, best"),
        (["dqn", "eval", "--run-dir", str(run_dir), "--checkpoint", "5"], "no checkpoint at step 5"),
        (["dqn", "play", "--run-dir", str(run_dir), "--video", str(tmp_path / "a.avi")], "must end in .mp4 or .gif"),
        (["dqn", "plot", "--run-dir", str(tmp_path)], "metrics.csv not found"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "missing").exists() and not (tmp_path / "a.avi").exists()


@pytest.mark.parametrize("changes, field", [
    (dict(env_id=""), "env_id"),
    (dict(backend="cuda"), "backend"),
    (dict(num_envs=0), "num_envs"),
    (dict(num_envs=2.5), "num_envs must be an integer"),
    (dict(frame_skip=0), "frame_skip"),
    (dict(repeat_action_probability=1.0), "repeat_action_probability"),
    (dict(noop_max=0), "noop_max"),
    (dict(max_episode_frames=2), "max_episode_frames"),
    (dict(hidden_sizes=()), "hidden_sizes"),
    (dict(buffer_size=64, batch_size=128), r"batch_size \(128\) must be <= buffer_size \(64\)"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(learning_rate=float("nan")), "learning_rate"),
    (dict(max_grad_norm=-1.0), "max_grad_norm"),
    (dict(learning_rate_end=1.0), "learning_rate_end"),  # above learning_rate (2e-3)
    (dict(learning_rate_end=-1e-4), "learning_rate_end"),
    (dict(learning_rate_decay_steps=0), "learning_rate_decay_steps"),
    (dict(double_dqn="yes"), "double_dqn"),
    (dict(tau=0.0), "tau"),
    (dict(num_quantiles=-1), "num_quantiles"),
    (dict(num_quantiles=8, munchausen_alpha=0.9), "num_quantiles > 0 cannot be combined with munchausen"),
    (dict(epsilon_start=1.5), "epsilon_start"),
    (dict(learning_starts=-1), "learning_starts"),
    (dict(updates_per_call=0), "updates_per_call"),
    (dict(seed=-3), "seed"),
    (dict(total_steps=True), "total_steps must be an integer"),
    (dict(eval_epsilon=2.0), "eval_epsilon"),
])
def test_config_validation_names_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        DQNConfig(**changes)


def test_presets_and_serialisation():
    seed = preset("seed")
    assert seed == DQNConfig()
    assert (seed.hidden_sizes, seed.buffer_size, seed.batch_size, seed.gamma, seed.learning_rate) == \
        ((256, 256), 100_000, 128, 0.98, 2e-3)
    assert (seed.epsilon_start, seed.epsilon_end, seed.reward_scale, seed.learning_starts) == (0.08, 0.01, 0.01, 2_000)
    assert seed.steps_per_update == 8.0 and preset("cleanrl-ratio").steps_per_update == 4.0
    tuned = preset("tuned")
    assert config_differences(seed, tuned) == {"n_step": (1, 3), "life_loss_terminal": (False, True),
                                               "gamma": (0.98, 0.99), "update_every": (1, 2),
                                               "learning_rate": (2e-3, 2.5e-4)}
    assert not (seed.n_step > 1 or seed.life_loss_terminal or seed.clip_rewards or seed.dueling)
    assert seed.obs_encoding == "scale"
    assert DQNConfig.from_json(seed.to_json()) == seed
    assert seed.learning_rate_decay_updates == 0  # constant learning rate
    assert seed.replace(learning_rate_end=0.0).learning_rate_decay_updates == 2_500_000 // 8
    assert seed.replace(learning_rate_end=0.0, learning_rate_decay_steps=12).learning_rate_decay_updates == 2
    assert config_differences(seed, seed.replace(total_steps=5, learning_rate=1e-4)) == {
        "learning_rate": (2e-3, 1e-4)}
    with pytest.raises(ValueError, match="unknown preset 'big'"):
        preset("big")
    with pytest.raises(ValueError, match="unknown DQNConfig field"):
        DQNConfig.from_dict({"num_env": 4})


def test_the_learner_built_from_the_seed_preset_uses_its_values():
    """hidden_sizes (256, 256) are the network's widths, update_every 1 updates on every call, reward_scale 0.01
    scales the stored rewards (with a small buffer, so that updates start at the first call)."""
    seed = preset("seed")
    assert (seed.hidden_sizes, seed.update_every, seed.updates_per_call, seed.reward_scale) == ((256, 256), 1, 1, 0.01)
    learner = make_learner(seed.replace(buffer_size=64, batch_size=4, learning_starts=seed.num_envs), 6)
    obs = jnp.asarray(np.arange(seed.num_envs * 128).reshape(seed.num_envs, 128) % 256, jnp.uint8)
    state, _ = learner.init(jax.random.key(0), obs)
    assert [leaf.shape for leaf in jax.tree.leaves(state.dqn.params) if leaf.ndim == 2] == [
        (128, 256), (256, 256), (256, 6)]
    step = jax.jit(learner.step)
    reward, no = jnp.arange(1.0, seed.num_envs + 1), jnp.zeros(seed.num_envs, bool)
    for call in range(3):
        state, _, metrics = step(state, obs, reward, no, no)
        assert bool(metrics["did_update"]) and int(metrics["num_updates"]) == call + 1
    np.testing.assert_allclose(state.replay.data.reward[:3 * seed.num_envs], 0.01 * np.tile(reward, 3), rtol=1e-6)
