"""Orbax checkpoints of a LearnerState: exact round trip, last N + best kept, half-written saves ignored,
checkpoints from another config refused."""
import jax
import numpy as np
import pytest

from jaxrl.dqn.config import preset
from jaxrl.dqn.learner import make_learner
from jaxrl.dqn.run import checkpoint as ckpt
from jaxrl.dqn.run.train import train

CONFIG = preset("tiny", backend="gymnasium")


def stepped_state(config, calls: int = 5, seed: int = 0):
    """A learner state after a few steps, so that the buffer, counters and per-env arrays are not all zeros."""
    learner = make_learner(config, 6)
    obs = np.random.default_rng(seed).integers(0, 256, size=(config.num_envs, 128), dtype=np.uint8)
    state, _ = jax.jit(learner.init)(jax.random.PRNGKey(3), obs)
    step = jax.jit(learner.step)
    for t in range(calls):
        obs = np.roll(obs, 1, axis=1)
        state, _, _ = step(state, obs, np.full(config.num_envs, t, np.float32),
                           np.zeros(config.num_envs, bool), np.array([False, True, False, False]))
    return state


@pytest.fixture(scope="module")
def learner_state():
    return stepped_state(CONFIG)


def test_round_trip_is_exact(tmp_path, learner_state):
    manager = ckpt.open_manager(tmp_path, keep_last=2)
    host = {"episodes": 3, "recent_returns": [1.5, 2.0], "segment": 4}
    ckpt.save_checkpoint(manager, 123, learner_state, host, CONFIG, eval_return=7.0)
    abstract = jax.eval_shape(lambda: learner_state)
    state, restored_host, config, step = ckpt.restore_checkpoint(manager, abstract, CONFIG)
    manager.close()
    assert step == 123 and restored_host == host and config == CONFIG.replace()
    assert jax.tree.structure(state) == jax.tree.structure(learner_state)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(learner_state)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(learner_state.replay.size) > 0  # the buffer that round-tripped was not empty


def test_checkpoint_without_the_optional_fields_of_newer_versions_still_restores(tmp_path, learner_state):
    """A checkpoint written before LearnerState.nstep / Transition.discount existed (its tree lacks those keys)
    restores into today's structure (None there); a missing real leaf is refused naming it (orbax's message)."""
    assert learner_state.nstep is None and learner_state.replay.data.discount is None
    as_dict = lambda nt: {k: v for k, v in nt._asdict().items() if v is not None}  # noqa: E731
    legacy = dict(as_dict(learner_state), replay=dict(as_dict(learner_state.replay),
                                                       data=as_dict(learner_state.replay.data)))
    legacy["dqn"] = as_dict(learner_state.dqn)
    manager = ckpt.open_manager(tmp_path, keep_last=2)
    ckpt.save_checkpoint(manager, 5, legacy, {"segment": 0}, CONFIG)
    abstract = jax.eval_shape(lambda: learner_state)
    state, _, _, _ = ckpt.restore_checkpoint(manager, abstract, CONFIG)
    assert jax.tree.structure(state) == jax.tree.structure(learner_state)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(learner_state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    del legacy["episode_length"]
    ckpt.save_checkpoint(manager, 6, legacy, {"segment": 0}, CONFIG)
    with pytest.raises(ValueError, match="episode_length"):
        ckpt.restore_checkpoint(manager, abstract, CONFIG, step=6)
    manager.close()


def test_keeps_last_n_plus_best(tmp_path, learner_state):
    manager = ckpt.open_manager(tmp_path, keep_last=2)
    for step, score in zip(range(1, 7), [5.0, 50.0, 1.0, 2.0, 3.0, 4.0]):
        ckpt.save_checkpoint(manager, step, learner_state, {}, CONFIG, eval_return=score)
    ckpt.save_checkpoint(manager, 7, learner_state, {}, CONFIG, eval_return=None)  # e.g. a Ctrl-C save
    assert sorted(manager.all_steps()) == [2, 6, 7]  # best (step 2) + the last two
    assert ckpt.best_step(manager) == 2 and manager.latest_step() == 7
    manager.close()
    saved = sorted(int(p.name) for p in ckpt.checkpoint_dir(tmp_path).iterdir() if p.name.isdigit())
    assert saved == [2, 6, 7]
    # a resumed run reopens the directory: the best is still known, and still kept by later saves
    manager = ckpt.open_manager(tmp_path, keep_last=2)
    assert ckpt.best_step(manager) == 2
    for step in (8, 9):
        ckpt.save_checkpoint(manager, step, learner_state, {}, CONFIG, eval_return=0.0)
    assert sorted(manager.all_steps()) == [2, 8, 9]
    _, _, _, step = ckpt.restore_checkpoint(manager, jax.eval_shape(lambda: learner_state), CONFIG, step="best")
    assert step == 2
    manager.close()


def test_half_written_save_is_ignored(tmp_path, learner_state):
    manager = ckpt.open_manager(tmp_path, keep_last=3)
    ckpt.save_checkpoint(manager, 10, learner_state, {"segment": 1}, CONFIG, eval_return=1.0)
    manager.close()
    # what a save killed mid-way leaves behind: orbax's temporary directory, never renamed into place
    partial = ckpt.checkpoint_dir(tmp_path) / "20.orbax-checkpoint-tmp-1234567"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "garbage").write_bytes(b"\x00" * 100)
    manager = ckpt.open_manager(tmp_path, keep_last=3)
    assert manager.latest_step() == 10
    _, host, _, step = ckpt.restore_checkpoint(manager, jax.eval_shape(lambda: learner_state), CONFIG)
    manager.close()
    assert step == 10 and host == {"segment": 1}


def test_checkpoint_from_another_config_is_refused(tmp_path, learner_state):
    manager = ckpt.open_manager(tmp_path, keep_last=2)
    ckpt.save_checkpoint(manager, 1, learner_state, {}, CONFIG, eval_return=0.0)
    other = CONFIG.replace(hidden_sizes=(64, 64), env_id="Breakout-v5")
    with pytest.raises(ckpt.ConfigMismatchError, match=r"env_id='SpaceInvaders-v5' there.*hidden_sizes=\(32,\)"):
        ckpt.restore_checkpoint(manager, jax.eval_shape(lambda: learner_state), other)
    # resumable fields (total steps, logging, eval) may change
    ckpt.restore_checkpoint(manager, jax.eval_shape(lambda: learner_state),
                            CONFIG.replace(total_steps=10**6, log_every=7, eval_episodes=3))
    manager.close()


def test_resume_with_another_config_writes_nothing(tmp_path):
    run = tmp_path / "run"
    train(CONFIG.replace(total_steps=400), run, progress=False, log=lambda *_: None)
    snapshot = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    with pytest.raises(ValueError, match="different config.*learning_rate"):
        train(CONFIG.replace(total_steps=800, learning_rate=1e-4), run, resume=True, progress=False)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == snapshot
    with pytest.raises(ValueError, match="cannot resume"):
        train(CONFIG, tmp_path / "missing", resume=True, progress=False)
    assert not (tmp_path / "missing").exists()
    # --overwrite replaces a run directory: new config, checkpoints and metrics only
    (run / "checkpoints" / "stale-marker").write_text("old run")
    result = train(CONFIG.replace(total_steps=200, learning_rate=1e-4), run, overwrite=True, progress=False,
                   log=lambda *_: None)
    assert result.env_steps >= 200 and not (run / "checkpoints" / "stale-marker").exists()
    assert '"learning_rate": 0.0001' in (run / "config.json").read_text()


def test_prioritized_checkpoint_written_before_the_sum_tree_restores_with_the_tree_rebuilt(tmp_path):
    """A prioritized-replay checkpoint whose state has no ``sum_tree`` (written when drawing used a cumsum)
    restores, with the tree rebuilt from the saved priorities: the state equals the one saved with it."""
    config = CONFIG.replace(prioritized_replay=True)
    state = stepped_state(config, calls=6, seed=1)
    as_dict = lambda nt: {k: v for k, v in nt._asdict().items() if v is not None}  # noqa: E731
    replay = as_dict(state.replay)
    del replay["sum_tree"]
    legacy = dict(as_dict(state), dqn=as_dict(state.dqn),
                  replay=dict(replay, replay=dict(as_dict(state.replay.replay), data=as_dict(state.replay.replay.data))))
    manager = ckpt.open_manager(tmp_path, keep_last=2)
    ckpt.save_checkpoint(manager, 5, legacy, {"segment": 0}, config)
    restored, _, _, _ = ckpt.restore_checkpoint(manager, jax.eval_shape(lambda: state), config)
    manager.close()
    assert float(np.sum(state.replay.priorities)) > 0
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
