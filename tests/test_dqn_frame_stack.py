"""RAM frame stacking (`jaxrl.dqn.envs.frame_stack`): the pure pair, the XLA-env and host-env wrappers, the config."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl.dqn.config import preset
from jaxrl.dqn.envs import frame_stack
from jaxrl.dqn.envs.host import make_env_from_config
from jaxrl.dqn.envs.toy import make_toy_env
from jaxrl.dqn.learner import make_learner


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_init_update_flatten_by_hand(xp):
    obs = xp.array([[1, 2], [3, 4]], xp.uint8)  # N = 2 envs, D = 2 bytes
    history = frame_stack.init(obs, 3)
    assert history.shape == (2, 3, 2) and isinstance(history, type(obs))  # host arrays stay NumPy
    np.testing.assert_array_equal(frame_stack.flatten(history), [[1, 2, 1, 2, 1, 2], [3, 4, 3, 4, 3, 4]])
    history = frame_stack.update(history, xp.array([[5, 6], [7, 8]], xp.uint8), xp.array([False, True]))
    # env 0 appends (oldest dropped); env 1 was reset: every slot is its new observation
    np.testing.assert_array_equal(frame_stack.flatten(history), [[1, 2, 1, 2, 5, 6], [7, 8, 7, 8, 7, 8]])
    history = frame_stack.update(history, xp.array([[9, 9], [0, 1]], xp.uint8), xp.array([False, False]))
    np.testing.assert_array_equal(frame_stack.flatten(history), [[1, 2, 5, 6, 9, 9], [7, 8, 7, 8, 0, 1]])
    assert isinstance(history, type(obs)) and history.dtype == np.uint8


def _reference_stacks(raw_obs, ended, k):
    """Brute force: per env, the last k observations of the current episode, the first one repeated."""
    out = []
    for t in range(len(raw_obs)):
        rows = []
        for i in range(raw_obs.shape[1]):
            start = t
            while start > 0 and not ended[start - 1, i] and t - start < k - 1:
                start -= 1
            window = [raw_obs[start, i]] * (k - 1 - (t - start)) + [raw_obs[s, i] for s in range(start, t + 1)]
            rows.append(np.concatenate(window))
        out.append(np.stack(rows))
    return np.stack(out)


def _roll(env, actions):
    state, obs = env.reset()
    observations, ended = [np.asarray(obs)], [np.zeros(env.num_envs, bool)]
    step = jax.jit(env.step)
    for a in actions:
        state, (obs, _, terminated, truncated, _) = step(state, a)
        observations.append(np.asarray(obs))
        ended.append(np.asarray(terminated | truncated))
    return np.stack(observations), np.stack(ended)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_xla_env_stacks_within_episodes_and_refills_after_auto_reset(k):
    # toy env episodes of 3..7 steps, terminated (even envs) or truncated (odd envs); the step after the end
    # returns the reset observation, whose stack must hold only that observation
    actions = jax.random.randint(jax.random.PRNGKey(0), (30, 5), 0, 6)
    raw, ended = _roll(make_toy_env(5), actions)
    stacked_env = frame_stack.stack_xla_env(make_toy_env(5), k)
    stacked, stacked_ended = _roll(stacked_env, actions)
    np.testing.assert_array_equal(stacked_ended, ended)
    assert stacked.shape == (31, 5, 128 * k) and stacked.dtype == np.uint8
    # "ended" at step t means step t + 1 returns a reset observation: shift it by one for the reference
    np.testing.assert_array_equal(stacked, _reference_stacks(raw, ended, k))
    if k == 1:
        np.testing.assert_array_equal(stacked, raw)


def test_one_frame_is_the_env_itself():
    env = make_toy_env(2)
    assert frame_stack.stack_xla_env(env, 1) is env


class _HostToyEnv:
    """The toy XLA env stepped from the host, with RamVecEnv's interface (reset / step / life_lost / close)."""

    backend = "toy"

    def __init__(self, num_envs):
        self._env = make_toy_env(num_envs)
        self.num_envs, self.num_actions = num_envs, self._env.num_actions
        self.life_lost = np.zeros(num_envs, bool)
        self.closed = False

    def reset(self):
        self._state, obs = self._env.reset()
        return np.asarray(obs)

    def step(self, actions):
        self._state, (obs, reward, terminated, truncated, _) = self._env.step(self._state, jnp.asarray(actions))
        return np.asarray(obs), np.asarray(reward), np.asarray(terminated), np.asarray(truncated)

    def close(self):
        self.closed = True


def test_host_wrapper_matches_the_xla_wrapper():
    actions = np.asarray(jax.random.randint(jax.random.PRNGKey(1), (25, 4), 0, 6))
    xla_obs, _ = _roll(frame_stack.stack_xla_env(make_toy_env(4), 3), jnp.asarray(actions))
    with frame_stack.stack_vec_env(_HostToyEnv(4), 3) as env:
        assert env.num_envs == 4 and env.num_actions == 6 and env.backend == "toy"  # delegated
        host_obs = [env.reset()] + [env.step(a)[0] for a in actions]
        assert env.life_lost.shape == (4,)
        inner = env.env
    assert inner.closed
    np.testing.assert_array_equal(np.stack(host_obs), xla_obs)
    plain = _HostToyEnv(4)
    assert frame_stack.stack_vec_env(plain, 1) is plain


def test_host_wrapper_needs_a_reset_first():
    with pytest.raises(RuntimeError, match="reset"):
        frame_stack.stack_vec_env(_HostToyEnv(2), 2).step(np.zeros(2, int))


@pytest.mark.parametrize("bad", [0, -1, 17, True, 2.0, "2"])
def test_config_rejects_bad_frame_stack(bad):
    with pytest.raises(ValueError, match="frame_stack"):
        preset("tiny", frame_stack=bad)


def test_config_obs_size_and_learner_input():
    config = preset("tiny", frame_stack=4)
    assert config.obs_size == 512
    # the env built from the config stacks its last 4 RAM snapshots, the newest last
    with make_env_from_config(config, num_envs=2) as env, \
            make_env_from_config(config.replace(frame_stack=1), num_envs=2) as plain:
        first, plain_first = env.reset(), plain.reset()
        assert first.shape == (2, 512) and plain_first.shape == (2, 128)
        np.testing.assert_array_equal(first, np.tile(plain_first, 4))  # after a reset: its snapshot 4 times
        actions = np.array([1, 2])
        obs, plain_obs = env.step(actions)[0], plain.step(actions)[0]
        np.testing.assert_array_equal(obs, np.concatenate([first[:, 128:], plain_obs], axis=1))

    learner = make_learner(config, 6)
    state, actions = learner.init(jax.random.PRNGKey(0), jnp.zeros((config.num_envs, 512), jnp.uint8))
    assert actions.shape == (config.num_envs,)
    # rows hold frame-store references (the snapshots, 128 bytes each, are stored once per env) ...
    assert state.replay.data.obs.shape[1:] == (3,) and state.frames.frames.shape[1:] == (config.num_envs, 128)
    # ... or, with replay_frames off, the stacks themselves
    stacked, _ = make_learner(config.replace(replay_frames=False), 6).init(
        jax.random.PRNGKey(0), jnp.zeros((config.num_envs, 512), jnp.uint8))
    assert stacked.replay.data.obs.shape[1:] == (512,) and stacked.frames is None
    first_kernel = jax.tree.leaves(state.dqn.params)
    assert any(leaf.shape[0] == 512 for leaf in first_kernel if leaf.ndim == 2)
    with pytest.raises(AssertionError):  # RAM of the wrong width is refused at trace time
        learner.init(jax.random.PRNGKey(0), jnp.zeros((config.num_envs, 128), jnp.uint8))
