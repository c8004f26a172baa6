"""RAM vector envs: shapes and dtypes, next-step auto-reset, seeding, and envpool == gymnasium."""
import importlib.util

import numpy as np
import pytest

from jaxrl.dqn.envs.host import gymnasium_env_id, make_vec_env, resolve_backend

HAS_ENVPOOL = importlib.util.find_spec("envpool") is not None
BACKENDS = [
    "gymnasium",
    pytest.param("envpool", marks=pytest.mark.skipif(not HAS_ENVPOOL, reason="envpool is not installed")),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_shapes_dtypes_and_actions(backend):
    with make_vec_env(3, seed=0, backend=backend) as env:
        assert env.backend == backend and env.num_envs == 3
        assert env.num_actions == 6  # SpaceInvaders' minimal action set
        obs = env.reset()
        assert obs.shape == (3, 128) and obs.dtype == np.uint8
        obs, reward, terminated, truncated = env.step(np.array([0, 1, 5]))
        assert obs.shape == (3, 128) and obs.dtype == np.uint8
        assert reward.shape == (3,) and reward.dtype == np.float32
        assert terminated.dtype == bool and truncated.dtype == bool


@pytest.mark.parametrize("backend", BACKENDS)
def test_next_step_auto_reset_after_truncation(backend):
    # 40 frames = 10 agent steps: every env is truncated (not terminated) at step 10, the result of step 11
    # is the reset (reward 0, no flags), and the new episode is truncated 10 steps later, at step 21.
    rng = np.random.default_rng(0)
    with make_vec_env(2, seed=1, backend=backend, max_episode_frames=40) as env:
        env.reset()
        flags = []
        for _ in range(21):
            _, reward, terminated, truncated = env.step(rng.integers(0, 6, size=2))
            flags.append((reward.copy(), terminated.copy(), truncated.copy()))
    for t, (reward, terminated, truncated) in enumerate(flags, start=1):
        assert not terminated.any()
        assert truncated.all() == (t in (10, 21)), t
        assert truncated.any() == (t in (10, 21)), t
        if t == 11:
            assert (reward == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_trajectory(backend):
    actions = np.random.default_rng(2).integers(0, 6, size=(60, 2))

    def run(seed):
        with make_vec_env(2, seed=seed, backend=backend) as env:  # sticky actions and no-op starts on
            return np.stack([env.reset()] + [env.step(a)[0] for a in actions])

    first, again, other = run(5), run(5), run(6)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.skipif(not HAS_ENVPOOL, reason="envpool is not installed")
def test_envpool_and_gymnasium_give_identical_ram():
    # Same emulator, same frame skip, no sticky actions, one fixed no-op frame: the two backends agree
    # byte for byte on RAM and reward.
    actions = np.random.default_rng(0).integers(0, 6, size=(150, 2))
    runs = {}
    for backend in ("envpool", "gymnasium"):
        with make_vec_env(2, seed=0, backend=backend, repeat_action_probability=0.0, noop_max=1) as env:
            obs, rewards = [env.reset()], []
            for a in actions:
                o, r, _, _ = env.step(a)
                obs.append(o)
                rewards.append(r)
        runs[backend] = (np.stack(obs), np.stack(rewards))
    np.testing.assert_array_equal(runs["envpool"][0], runs["gymnasium"][0])
    np.testing.assert_array_equal(runs["envpool"][1], runs["gymnasium"][1])
    assert runs["envpool"][1].sum() > 0  # the random agent scored, so the comparison covers rewards


@pytest.mark.parametrize("backend", BACKENDS)
def test_render_frames(backend):
    with make_vec_env(1, seed=0, backend=backend, render=True) as env:
        env.reset()
        env.step(np.array([1]))
        frames = env.render()
    assert frames.shape == (1, 210, 160, 3) and frames.dtype == np.uint8
    assert frames.max() > 0
    with make_vec_env(1, seed=0, backend="gymnasium") as env, pytest.raises(ValueError, match="render=True"):
        env.render()


def test_backend_choice_and_bad_input():
    assert resolve_backend("gymnasium") == "gymnasium"
    assert resolve_backend("auto") == ("envpool" if HAS_ENVPOOL else "gymnasium")
    assert gymnasium_env_id("SpaceInvaders-v5") == "ALE/SpaceInvaders-v5"
    with pytest.raises(ValueError, match="backend"):
        resolve_backend("torch")
    with pytest.raises(ValueError, match="num_envs"):
        make_vec_env(0, seed=0, backend="gymnasium")


@pytest.mark.parametrize("backend", BACKENDS)
def test_life_lost_marks_each_lost_life(backend):
    """`life_lost` is True exactly on the steps where `lives` went down: 3 per finished game (the last one with
    the game over), never on the auto-reset row after it."""
    env = make_vec_env(2, 0, backend=backend, repeat_action_probability=0.0)
    env.reset()
    assert not env.life_lost.any()
    rng = np.random.default_rng(0)
    losses, games, after_end = np.zeros(2, int), np.zeros(2, int), np.zeros(2, bool)
    for _ in range(3000):
        _, _, terminated, truncated = env.step(rng.integers(0, env.num_actions, 2))
        assert not (env.life_lost & after_end).any()
        games += terminated
        losses += env.life_lost
        after_end = terminated | truncated
        if (games >= 1).all():
            break
    env.close()
    assert (games >= 1).all(), "no game over within 3000 random steps"
    assert (losses >= 3 * games).all() and (losses <= 3 * games + 2).all(), (losses, games)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ram_frame_phase_is_fixed_at_frame_skip_4_and_alternates_at_3(backend):
    """Space Invaders' RAM byte 1 is 7 on one frame parity and 128 on the other (the kernel multiplexes some
    bytes by frame). An even frame skip keeps an episode's observations on one parity, so half of the per-frame
    RAM is never seen; frame skip 3 alternates (docs/notes/dqn-learning.md)."""
    for frame_skip, expect_alternating in ((4, False), (3, True)):
        with make_vec_env(2, 0, backend=backend, frame_skip=frame_skip) as env:
            previous = env.reset()[:, 1]
            rng = np.random.default_rng(0)
            flips = pairs = 0
            for _ in range(300):
                current = env.step(rng.integers(0, env.num_actions, 2))[0][:, 1]
                both = np.isin(previous, (7, 128)) & np.isin(current, (7, 128))
                pairs += int(both.sum())
                flips += int((both & (previous != current)).sum())
                previous = current
        assert pairs > 400, pairs
        fraction = flips / pairs
        assert (fraction > 0.98) if expect_alternating else (fraction < 0.02), (frame_skip, flips, pairs)
