"""Observation encodings (scale, bits, objects, planes), the CNN torso, --total-frames, --loop auto, and a
Q-learning agent that solves the toy env."""
import json

import jax
import numpy as np
import pytest

from jaxrl.cli import main
from jaxrl.dqn import encoders
from jaxrl.dqn import make_learner
from jaxrl.dqn.config import DQNConfig, GAME_ENCODINGS, OBS_ENCODINGS, preset
from jaxrl.dqn.envs.toy import make_toy_env
from jaxrl.dqn.games import space_invaders
from jaxrl.dqn.encoders import SPATIAL_ENCODINGS
from jaxrl.dqn.network import QNetwork
from jaxrl.dqn.run.train import resolve_loop, train
from jaxrl.dqn.run.xla_loop import make_xla_loop, summarize

from conftest import HAS_ENVPOOL, assert_same_tree, final_state, small_config

needs_envpool = pytest.mark.skipif(not HAS_ENVPOOL, reason="envpool is not installed (the XLA loop needs it); "
                                                           "the same encodings run with --loop python here")
RNG = np.random.default_rng(0)


def quiet(*_):
    pass


def test_config_and_encoders_list_the_same_encodings():
    assert OBS_ENCODINGS == encoders.OBS_ENCODINGS and GAME_ENCODINGS == encoders.GAME_ENCODINGS


@pytest.mark.parametrize("encoding, frames, shape", [
    ("scale", 1, (128,)), ("bits", 1, (1024,)), ("scale", 3, (384,)),
    ("objects", 2, (space_invaders.OBJECT_FEATURES,)), ("objects", 4, (space_invaders.OBJECT_FEATURES,)),
    ("planes", 2, space_invaders.PLANE_SHAPE + (6,)), ("planes", 4, space_invaders.PLANE_SHAPE + (18,)),
    ("bilinear-planes", 3, space_invaders.PLANE_SHAPE + (12,)), ("box-planes", 3, space_invaders.BOX_SHAPE + (12,)),
    ("ego-planes", 3, space_invaders.EGO_SHAPE + (14,)),
])
def test_encode_shapes_dtypes_under_jit_and_vmap(encoding, frames, shape):
    obs = RNG.integers(0, 256, (5, 128 * frames), dtype=np.uint8)
    batched = jax.jit(encoders.encode, static_argnames="encoding")(obs, encoding=encoding)
    vmapped = jax.jit(jax.vmap(lambda o: encoders.encode(o, encoding)))(obs)
    outs = [batched, vmapped]
    # Op by op, a game decoder costs ~5 s of per-primitive compiles: eagerly only the byte encodings and the default.
    if encoding in ("scale", "bits", "ego-planes"):
        outs.append(encoders.encode(obs, encoding))
    for out in outs:
        assert out.shape == (5,) + shape and out.dtype == np.float32
        assert np.isfinite(np.asarray(out)).all()
    # to float rounding (the bilinear weights' products are fused differently under jit)
    for out in outs[1:]:
        np.testing.assert_allclose(batched, out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("encoding", GAME_ENCODINGS)
def test_game_encodings_need_two_snapshots_of_integer_ram(encoding):
    with pytest.raises(ValueError, match="K >= 2"):
        encoders.encode(np.zeros((2, 128), np.uint8), encoding)
    with pytest.raises(TypeError, match="integer RAM"):
        encoders.encode(np.zeros((2, 256), np.float32), encoding)


def test_planes_draw_each_object_in_its_cell():
    ram = np.zeros(128, np.uint8)
    ram[28] = 81  # player x 80 -> centre 83.5 -> column 10; y 185 + 5 -> row 18
    ram[18 + 5] = 0b000001  # top row, leftmost column alive
    ram[26], ram[16] = 17, 0  # column 0 at x 16 (+4 centre: column 2); top row at y 31 (+5: row 2)
    before = ram.copy()
    ram[85], before[85] = 40, 41  # player bullet y 83 (+5 centre: row 7), moving: visible
    ram[87] = 62  # x 60: column 7
    planes = np.asarray(encoders.encode(np.concatenate([before, ram])[None], "planes"))[0]
    assert planes.shape == space_invaders.PLANE_SHAPE + (6,)
    player, aliens, bullet = planes[..., 0], planes[..., 1], planes[..., 2]
    assert player[18, 10] == 1 and player.sum() == 1
    assert aliens[2, 2] == 1 and aliens.sum() == 1
    assert bullet[7, 7] == 1 and bullet.sum() == 1
    assert planes[..., 3].sum() == 0 and planes[..., 5].sum() == 0  # no enemy bullet moved, no ship moved


def test_bilinear_planes_keep_positions_within_a_cell():
    """Each object's weights sum to 1 and their mean cell centre is the object's centre, so moving it within a
    cell changes the bilinear planes (the cell planes cannot tell); at the border they clip to the edge cells."""
    ram = np.zeros(128, np.uint8)
    ram[18 + 5] = 0b000001  # one alien: top row, leftmost column
    ram[26], ram[16] = 17, 0  # its centre (20, 36)
    before = ram.copy()
    ram[85], before[85] = 40, 41  # player bullet, moving: visible, centre (60.5, 88)
    ram[87] = 62
    centres_x = (np.arange(space_invaders.PLANE_SHAPE[1]) + 0.5) * space_invaders.PLANE_CELL[0]
    centres_y = space_invaders.PLANE_TOP + (np.arange(space_invaders.PLANE_SHAPE[0]) + 0.5) * \
        space_invaders.PLANE_CELL[1]

    def encode(player_byte):
        ram[28] = before[28] = player_byte
        stack = np.concatenate([before, ram])[None]
        return (np.asarray(encoders.encode(stack, "bilinear-planes"))[0],
                np.asarray(encoders.encode(stack, "planes"))[0])

    planes, cells = encode(81)  # player x 80: centre (83.5, 190)
    for channel, (x, y) in {0: (83.5, 190.0), 1: (20.0, 36.0), 2: (60.5, 88.0)}.items():
        plane = planes[..., channel]
        assert plane.sum() == pytest.approx(1.0) and (plane > 0).sum() <= 4
        assert (plane.sum(0) * centres_x).sum() == pytest.approx(x)
        assert (plane.sum(1) * centres_y).sum() == pytest.approx(y)
    assert planes[..., 3:].sum() == 0 == planes[..., 5].sum()
    moved, moved_cells = encode(82)  # one pixel right, same cell
    np.testing.assert_array_equal(moved_cells, cells)
    assert (moved[..., 0].sum(0) * centres_x).sum() == pytest.approx(84.5)
    edge, _ = encode(1)  # player x 0: centre 3.5 lies left of the first cell's centre, clipped onto it
    assert edge[..., 0].sum() == pytest.approx(1.0) and edge[:, 0, 0].sum() == pytest.approx(1.0)


@pytest.mark.parametrize("encoding, frames, kwargs", [
    ("objects", 2, {}), ("planes", 2, {}), ("planes", 3, dict(dueling=True)), ("planes", 2, dict(num_quantiles=4)),
    ("bilinear-planes", 2, {}),
])
def test_qnetwork_on_decoded_objects(encoding, frames, kwargs):
    network = QNetwork(num_actions=6, hidden_sizes=(32,), obs_encoding=encoding, conv_channels=(4, 8), **kwargs)
    obs = RNG.integers(0, 256, (7, 128 * frames), dtype=np.uint8)
    # everything compiled: the decoder run op by op (eagerly) costs seconds per call on a CPU
    params = jax.jit(network.init)(jax.random.key(0), obs[:1])
    q = jax.jit(network.apply)(params, obs)
    assert q.shape == (7, 6) and q.dtype == np.float32
    np.testing.assert_allclose(jax.jit(jax.vmap(lambda o: network.apply(params, o)))(obs), q, rtol=1e-5, atol=1e-6)
    values = jax.jit(lambda p, o: network.apply(p, o, method=QNetwork.quantile_values))(params, obs)
    assert values.shape == (7, 6, max(kwargs.get("num_quantiles", 0), 1))
    kernels = {tuple(leaf.shape) for leaf in jax.tree.leaves(params)}
    if encoding in SPATIAL_ENCODINGS:  # stride-2 3x3 convolutions: 19 x 20 x 6 (K - 1) -> 10 x 10 x 4 -> 5 x 5 x 8
        assert (3, 3, 6 * (frames - 1), 4) in kernels and (3, 3, 4, 8) in kernels
        assert (5 * 5 * 8, 32) in kernels
    else:
        assert (space_invaders.OBJECT_FEATURES, 32) in kernels


def test_box_planes_draw_each_box_over_the_cells_it_covers():
    """The player (7 x 10 px) at x 81: 3 px of cell 20, 4 px of cell 21, rows 35 and 36 in full; one alien (8 x 10
    px) at (16, 31): cells 4, 5 of rows 4 (4 of its 5 px), 5 and 6 (1 px); a 1 px wide bullet, a quarter of
    each cell's width down one column."""
    ram = np.zeros(128, np.uint8)
    ram[28] = 82
    ram[18 + 5] = 0b000001
    ram[26], ram[16] = 17, 0
    before = ram.copy()
    ram[85], before[85] = 40, 41  # player bullet (60, 83), moving: visible
    ram[87] = 62
    planes = np.asarray(encoders.encode(np.concatenate([before, ram])[None], "box-planes"))[0]
    assert planes.shape == space_invaders.BOX_SHAPE + (6,)
    player, aliens, bullet = planes[..., 0], planes[..., 1], planes[..., 2]
    np.testing.assert_allclose(player[35:37, 20:22], [[0.75, 1.0], [0.75, 1.0]])
    assert player.sum() == pytest.approx(7 * 10 / 20)
    np.testing.assert_allclose(aliens[4:7, 4:6], [[0.8, 0.8], [1.0, 1.0], [0.2, 0.2]], rtol=1e-6)
    assert aliens.sum() == pytest.approx(8 * 10 / 20)
    np.testing.assert_allclose(bullet[14:17, 15], [0.1, 0.25, 0.15], rtol=1e-6)  # y 83-93, x 60: 1 px of 4
    assert bullet.sum() == pytest.approx(10 / 20) and planes[..., 3].sum() == 0 == planes[..., 5].sum()


def test_ego_planes_centre_the_newest_player():
    """Wherever the cannon is, the newest snapshot draws it at the middle column and an alien 16.5 px right of it
    16.5 / 8 columns right of it; the older snapshot's cannon shows the move; the field channel is the screen's
    160 px (20 cells) shifted with the cannon."""
    ram = np.zeros(128, np.uint8)
    ram[18 + 5] = 0b000001  # one alien, its left edge at x = ram[26] - 1
    middle = space_invaders.EGO_SHAPE[1] // 2
    encode = jax.jit(encoders.encode, static_argnames="encoding")  # one compile, not seconds per eager call
    for player_x in (4, 60, 140):
        before = ram.copy()
        before[28] = player_x - 3 + 1  # the cannon moved 3 px right since the older snapshot
        ram[28] = player_x + 1
        ram[26] = player_x + 17  # alien x = player x + 16: its centre 16.5 px right of the cannon's
        planes = np.asarray(encode(np.concatenate([before, before, ram])[None], encoding="ego-planes"))[0]
        assert planes.shape == space_invaders.EGO_SHAPE + (14,)
        older, newest = planes[..., :7], planes[..., 7:]
        assert newest[..., 0].sum(axis=0)[middle] == pytest.approx(1.0)  # the cannon, in the middle column
        alien_columns = newest[..., 1].sum(axis=0)
        centre = (alien_columns * np.arange(len(alien_columns))).sum()
        assert centre == pytest.approx(middle + (16 + 0.5) / space_invaders.PLANE_CELL[0])
        cannon = older[..., 0].sum(axis=0)
        assert (cannon * np.arange(len(cannon))).sum() == pytest.approx(middle - 3 / space_invaders.PLANE_CELL[0])
        field = newest[..., 6]
        np.testing.assert_allclose(field.sum(axis=1), 20.0, rtol=1e-6)
        np.testing.assert_array_equal(field, np.broadcast_to(field[:1], field.shape))  # the same in every row
    with pytest.raises(ValueError, match="bilinear=True"):
        space_invaders.object_planes(space_invaders.decode_stack(np.zeros((1, 256), np.uint8)),
                                     centre_x=np.zeros((1, 1), np.float32))


def test_qnetwork_on_box_planes():
    """Three stride-2 convolutions take the 38 x 40 grid to 5 x 5, as two take the 19 x 20 one."""
    network = QNetwork(num_actions=6, hidden_sizes=(32,), obs_encoding="box-planes", conv_channels=(4, 8, 8),
                       conv_strides=(2, 2, 2))
    obs = RNG.integers(0, 256, (7, 128 * 3), dtype=np.uint8)
    params = jax.jit(network.init)(jax.random.key(0), obs[:1])
    q = jax.jit(network.apply)(params, obs)
    assert q.shape == (7, 6) and q.dtype == np.float32 and np.isfinite(np.asarray(q)).all()
    kernels = {tuple(leaf.shape) for leaf in jax.tree.leaves(params)}
    assert {(3, 3, 12, 4), (3, 3, 4, 8), (3, 3, 8, 8), (5 * 5 * 8, 32)} <= kernels


def test_config_refuses_game_encodings_without_a_stack_or_on_another_game():
    with pytest.raises(ValueError, match="needs frame_stack >= 2"):
        DQNConfig(obs_encoding="objects")
    with pytest.raises(ValueError, match="is not a SpaceInvaders task"):
        DQNConfig(obs_encoding="planes", frame_stack=2, env_id="Breakout-v5")
    with pytest.raises(ValueError, match="conv_channels must be"):
        DQNConfig(conv_channels=(8, 0))
    config = DQNConfig(obs_encoding="planes", frame_stack=2, conv_channels=[8, 16])
    assert config.conv_channels == (8, 16)
    assert DQNConfig.from_json(config.to_json()) == config
    old = json.loads(config.to_json())
    del old["conv_channels"], old["replay_frames"]  # a config.json written before the fields existed still loads
    assert DQNConfig.from_dict(old).conv_channels == DQNConfig().conv_channels
    # a saved config without replay_frames is from a run whose replay rows hold stacks: it keeps that layout
    assert config.replay_frames and not DQNConfig.from_dict(old).replay_frames


def tiny_game(encoding, **overrides):
    # 480 steps of 4 envs, checkpoints every 240 (two segments of 60 calls), episodes cut at 40 steps
    return preset("tiny", obs_encoding=encoding, conv_channels=(4, 8), total_steps=480,
                  checkpoint_every=240, log_every=120, max_episode_frames=160,
                  **{"frame_stack": 2, "backend": "envpool" if HAS_ENVPOOL else "gymnasium", "loop": "python",
                     **overrides})


@pytest.mark.parametrize("encoding", GAME_ENCODINGS)
def test_train_with_game_encodings_on_the_python_loop_then_eval(encoding, tmp_path, capsys):
    config = tiny_game(encoding)
    result = train(config, tmp_path / "run", progress=False, log=quiet)
    assert result.env_steps >= 480 and np.isfinite(result.mean_return)
    assert main(["dqn", "eval", "--run-dir", str(tmp_path / "run"), "--episodes", "1"]) == 0
    assert "over 1 episodes" in capsys.readouterr().out


@needs_envpool
@pytest.mark.parametrize("encoding, frame_stack", [("objects", 2), ("bilinear-planes", 3)])
def test_game_encodings_equal_on_both_loops_and_resume_bit_for_bit(encoding, frame_stack, tmp_path):
    """A straight compiled-loop run equals one whose first segment ran compiled and whose second, resumed from
    the checkpoint, ran on the host loop: both loops and the resume are exact with the decoded encodings.
    (``planes`` and ``box-planes`` run the same network and loops as ``bilinear-planes``; only their drawing
    differs, tested above.)"""
    config = tiny_game(encoding, loop="xla", xla_chunk_calls=16, frame_stack=frame_stack)
    train(config, tmp_path / "xla", progress=False, log=quiet)
    train(config.replace(total_steps=240), tmp_path / "resumed", progress=False, log=quiet)
    train(config.replace(loop="python"), tmp_path / "resumed", resume=True, progress=False, log=quiet)
    xla_state, xla_host, xla_step = final_state(tmp_path / "xla", config)
    resumed_state, resumed_host, resumed_step = final_state(tmp_path / "resumed", config)
    assert xla_step == resumed_step >= 480 and xla_host["episodes"] == resumed_host["episodes"] > 0
    assert int(xla_state.dqn.num_updates) > 0
    assert_same_tree(xla_state, resumed_state)


def test_loop_auto_chooses_by_backend():
    assert resolve_loop("auto", "envpool")[0] == "xla"
    assert resolve_loop("auto", "gymnasium")[0] == "python"
    assert "compiled loop" in resolve_loop("auto", "envpool")[1]
    assert DQNConfig().loop == "auto"


def test_total_frames_sets_total_steps(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["dqn", "train", "--preset", "tiny", "--backend", "gymnasium", "--total-frames", "401", "--run-dir",
            str(run), "--no-progress"]
    assert main(args) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["total_steps"] == 101 and saved["frame_skip"] == 4 and saved["loop"] == "python"
    assert main(args[:-3] + ["--total-steps", "10", "--run-dir", str(tmp_path / "b")]) == 2
    assert "not both" in capsys.readouterr().err


def test_q_learning_solves_the_toy_env():
    """Reward 1 when the action equals t % 4: the greedy policy must pick it at every step of an episode."""
    env = make_toy_env(4, num_actions=4, lengths=[8, 8, 8, 8])
    config = small_config(4, buffer_size=4096, batch_size=64, hidden_sizes=(64,), learning_rate=1e-3, epsilon_start=1.0,
                          epsilon_end=0.05, epsilon_decay_steps=2000, learning_starts=256, target_update_period=50,
                          gamma=0.9, reward_scale=1.0, obs_encoding="bits")
    learner = make_learner(config, 4)
    loop = make_xla_loop(learner, env, steps_per_call=1500, donate=False)
    state, _ = loop.run(loop.init(jax.random.key(0)))
    state, metrics = loop.run(state)
    obs = np.zeros((3, 8, 128), np.uint8)
    obs[..., 0] = np.arange(3)[:, None]  # env id
    obs[..., 1] = np.arange(8)  # step in the episode
    obs[..., 2] = np.array([5, 77, 200])[:, None]  # episode counters never seen together with these steps
    greedy = np.argmax(np.asarray(learner.dqn.q_values(state.learner.dqn.params, obs)), axis=-1)
    np.testing.assert_array_equal(greedy, np.broadcast_to(np.arange(8) % 4, (3, 8)))
    assert summarize(metrics)["mean_return"] > 6.5  # of 8; uniform random actions score 2


def test_train_defaults_to_the_pqn_ego_e128_preset_and_seed_stays_the_reference(tmp_path):
    assert preset("seed") == DQNConfig()  # the reference agent: every default of the config
    objects = preset("objects")
    assert (objects.obs_encoding, objects.frame_stack) == ("objects", 2)
    assert objects.replace(obs_encoding="scale", frame_stack=1) == preset("tuned")
    assert preset("planes") == objects.replace(obs_encoding="planes", update_every=4)  # the measured CNN runs
    run = tmp_path / "run"
    assert main(["dqn", "train", "--backend", "gymnasium", "--num-envs", "2", "--total-steps", "16",
                 "--rollout-steps", "4", "--num-minibatches", "2", "--checkpoint-every", "16",
                 "--eval-episodes", "0", "--max-episode-frames", "64", "--run-dir", str(run), "--no-progress"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["algo"] == "pqn" and saved["obs_encoding"] == "ego-planes" and saved["frame_stack"] == 3
    assert saved["epochs"] == 2  # pqn-ego-e128's (pqn-ego: 4); the other shape fields were overridden above
