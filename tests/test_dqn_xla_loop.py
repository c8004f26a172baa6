"""The compiled training loop: lax.scan over learner.step, on a pure-JAX toy env and on envpool's XLA interface."""
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl.dqn import make_learner
from jaxrl.dqn.envs.toy import make_toy_env
from jaxrl.dqn.run.xla_loop import make_xla_loop, summarize

from conftest import small_config

SMALL = dict(buffer_size=512, batch_size=8, hidden_sizes=(16,), epsilon_decay_steps=100, learning_starts=16)
HAS_ENVPOOL = importlib.util.find_spec("envpool") is not None
needs_envpool = pytest.mark.skipif(
    not HAS_ENVPOOL, reason="envpool not installed (Linux x86_64 only); the same scan path is tested on the toy env"
)


def _check_buffer_has_no_reset_pairs(replay, lengths):
    size = int(replay.size)
    data = jax.device_get(replay.data)
    obs, next_obs = data.obs[:size], data.next_obs[:size]
    np.testing.assert_array_equal(obs[:, 0], next_obs[:, 0])  # same env
    np.testing.assert_array_equal(next_obs[:, 1], obs[:, 1] + 1)  # consecutive steps of one episode
    np.testing.assert_array_equal(obs[:, 2], next_obs[:, 2])
    ends = next_obs[:, 1] == np.asarray(lengths)[next_obs[:, 0]]
    np.testing.assert_array_equal(data.terminated[:size], ends & (next_obs[:, 0] % 2 == 0))


def test_scan_loop_equals_python_loop_on_toy_env():
    lengths = [3, 4, 5]
    env = make_toy_env(3, num_actions=4, lengths=lengths)
    learner = make_learner(small_config(3, update_every=2, **SMALL), 4)
    loop = make_xla_loop(learner, env, steps_per_call=20, donate=False)
    loop_state = loop.init(jax.random.key(0))
    loop_state, metrics = loop.run(loop_state)
    loop_state, metrics_2 = loop.run(loop_state)
    assert metrics["loss"].shape == (20,) and metrics["episode_done"].shape == (20, 3)

    # the same 40 steps in a Python loop over the same (jitted) pieces
    env_state, obs = env.reset()
    state, actions = jax.jit(learner.init)(jax.random.key(0), obs)
    step, env_step = jax.jit(learner.step), jax.jit(env.step)
    for _ in range(40):
        env_state, (obs, reward, terminated, truncated, life_lost) = env_step(env_state, actions)
        state, actions, _ = step(state, obs, reward, terminated, truncated, life_lost)
    assert int(state.dqn.num_updates) == int(loop_state.learner.dqn.num_updates) > 0
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 state.dqn.params, loop_state.learner.dqn.params)
    np.testing.assert_array_equal(state.replay.data.obs, loop_state.learner.replay.data.obs)

    _check_buffer_has_no_reset_pairs(loop_state.learner.replay, lengths)
    summary = summarize(metrics_2)
    assert summary["env_steps"] == int(state.env_steps) == sum(40 - 40 // (n + 1) for n in lengths)
    assert summary["updates"] > 0 and np.isfinite(summary["loss"]) and summary["episodes"] > 0


def test_vmapped_seeds_on_toy_env():
    seeds, num_envs = 2, 3
    env = make_toy_env(seeds * num_envs, num_actions=4, lengths=[3, 4, 5, 6, 7, 8])
    learner = make_learner(small_config(num_envs, **SMALL), 4, axis_name="seed")
    loop = make_xla_loop(learner, env, steps_per_call=30, num_seeds=seeds)
    loop_state, metrics = loop.run(loop.init(jax.random.key(1)))
    assert metrics["episode_done"].shape == (30, seeds, num_envs)
    state = loop_state.learner
    assert state.replay.data.obs.shape == (seeds, 512, 128)
    assert np.all(np.asarray(state.dqn.num_updates) > 0)
    kernel = np.asarray(state.dqn.params["params"]["Dense_0"]["kernel"])
    assert not np.allclose(kernel[0], kernel[1])  # independent agents
    np.testing.assert_array_equal(np.asarray(state.obs_tm1)[:, :, 0], [[0, 1, 2], [3, 4, 5]])  # own envs
    # seed s only ever stores transitions of its own envs 3s .. 3s+2
    for s in range(seeds):
        size = int(state.replay.size[s])
        assert set(np.asarray(state.replay.data.obs[s, :size, 0]).tolist()) == {3 * s, 3 * s + 1, 3 * s + 2}


def test_size_mismatch_is_refused():
    with pytest.raises(ValueError, match="num_envs"):
        make_xla_loop(make_learner(small_config(3, **SMALL), 4), make_toy_env(4, num_actions=4), steps_per_call=5)
    with pytest.raises(ValueError, match="actions"):
        make_xla_loop(make_learner(small_config(3, **SMALL), 4), make_toy_env(3, num_actions=6), steps_per_call=5)
    with pytest.raises(ValueError, match="axis_name"):
        make_xla_loop(make_learner(small_config(3, **SMALL), 4), make_toy_env(6, num_actions=4), 5, num_seeds=2)


@needs_envpool
def test_envpool_xla_step_has_next_step_auto_reset():
    """After truncated (time limit) and after terminated (game over) the next result is a reset: elapsed 0, reward 0."""
    import envpool

    pool = envpool.make("SpaceInvaders-v5", env_type="gymnasium", num_envs=2, batch_size=2, seed=0,
                        max_episode_steps=4000, img_height=8, img_width=8, gray_scale=True, stack_num=1,
                        episodic_life=False, reward_clip=False, repeat_action_probability=0.0)
    handle, _, _, step = pool.xla()
    pool.reset()
    step = jax.jit(step)
    rng = np.random.default_rng(0)
    previous_terminated = None
    for _ in range(4000):
        handle, (_, reward, terminated, truncated, info) = step(handle, jnp.asarray(rng.integers(0, 6, 2), jnp.int32))
        assert info["ram"].shape == (2, 128) and info["ram"].dtype == jnp.uint8
        np.testing.assert_array_equal(info["env_id"], [0, 1])  # sync mode: rows in env order
        if previous_terminated is not None:
            i = previous_terminated
            assert int(info["elapsed_step"][i]) == 0 and float(reward[i]) == 0.0 and not bool(terminated[i])
            assert int(info["lives"][i]) == 3
            break
        if np.asarray(terminated).any():
            previous_terminated = int(np.argmax(np.asarray(terminated)))
            assert int(info["lives"][previous_terminated]) == 0  # full-game episodes: terminal is game over
    assert previous_terminated is not None, "no game over within 4000 random steps"

    pool = envpool.make("SpaceInvaders-v5", env_type="gymnasium", num_envs=1, batch_size=1, seed=0,
                        max_episode_steps=3, img_height=8, img_width=8, gray_scale=True, stack_num=1)
    handle, _, _, step = pool.xla()
    pool.reset()
    elapsed, truncations = [], []
    for _ in range(8):
        handle, (_, reward, terminated, truncated, info) = step(handle, jnp.zeros(1, jnp.int32))
        elapsed.append(int(info["elapsed_step"][0]))
        truncations.append(bool(truncated[0]))
    assert elapsed == [1, 2, 3, 0, 1, 2, 3, 0]
    assert truncations == [False, False, True, False, False, False, True, False]


@needs_envpool
def test_envpool_xla_loop_two_seeds():
    from jaxrl.dqn.envs.xla import make_envpool_xla_env

    env = make_envpool_xla_env(4, seed=0, max_episode_frames=40)  # 10 agent steps, then truncation
    learner = make_learner(small_config(2, **SMALL), env.num_actions, axis_name="seed")
    loop = make_xla_loop(learner, env, steps_per_call=25, num_seeds=2)
    try:
        loop_state, metrics = loop.run(loop.init(jax.random.key(0)))
    finally:
        env.close()
    summary = summarize(metrics)
    # each env: 25 calls, episodes of 10 steps, one ignored reset call after each -> 23 transitions
    assert summary["env_steps"] == 4 * (25 - 2)
    lengths = np.asarray(metrics["episode_length"])[np.asarray(metrics["episode_done"])]
    np.testing.assert_array_equal(lengths, 10)
    assert summary["episodes"] == 8 and np.all(np.asarray(loop_state.learner.dqn.num_updates) > 0)
    assert np.isfinite(summary["loss"])
