"""The fused learner step on a tiny fake vectorised env with next-step auto-reset (envpool / gymnasium style)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl.dqn import make_learner

from conftest import SMALL_AGENT, FakeVecEnv, run_learner, small_config


def test_reset_transitions_never_enter_the_buffer():
    lengths = [3, 4, 5, 2]
    learner = make_learner(small_config(4, learning_starts=16, reward_scale=0.5, **SMALL_AGENT), 3)
    state, history = run_learner(learner, FakeVecEnv(lengths), calls=30)
    size = int(state.replay.size)
    data = jax.device_get(state.replay.data)
    obs, next_obs = data.obs[:size], data.next_obs[:size]
    # every stored pair is one step inside one episode of one env
    np.testing.assert_array_equal(obs[:, 0], next_obs[:, 0])
    np.testing.assert_array_equal(next_obs[:, 1], obs[:, 1] + 1)
    np.testing.assert_array_equal(obs[:, 2], next_obs[:, 2])
    # all valid transitions are there: per env, 30 calls minus one reset call after each ended episode
    expected = sum(30 - 30 // (length + 1) for length in lengths)
    assert size == expected == int(state.env_steps)
    # terminated only at the last step of a terminating env; truncation is stored as non-terminal
    ends = next_obs[:, 1] == np.asarray(lengths)[next_obs[:, 0]]
    np.testing.assert_array_equal(data.terminated[:size], ends & (next_obs[:, 0] % 2 == 0))
    assert ends[next_obs[:, 0] % 2 == 1].any()  # there are truncated ends, and they are not terminal
    # reward_scale applied in the buffer, with reward = 1 + action
    np.testing.assert_allclose(data.reward[:size], 0.5 * (1.0 + data.action[:size]))
    # episode bookkeeping reports unscaled returns of full episodes
    done = np.stack([m["episode_done"] for m in history])
    returns = np.stack([m["episode_return"] for m in history])
    lengths_seen = np.stack([m["episode_length"] for m in history])
    for env_id, length in enumerate(lengths):
        assert done[:, env_id].sum() == 30 // (length + 1) + (30 % (length + 1) == length)
        np.testing.assert_array_equal(lengths_seen[done[:, env_id], env_id], length)
        assert np.all(returns[done[:, env_id], env_id] >= length)  # rewards are 1 + action >= 1


def test_updates_start_after_learning_starts_and_respect_update_every():
    learner = make_learner(small_config(2, learning_starts=20, update_every=2, updates_per_call=3, **SMALL_AGENT), 3)
    state, history = run_learner(learner, FakeVecEnv([50, 50]), calls=20)
    env_steps = np.array([m["env_steps"] for m in history])
    did_update = np.array([m["did_update"] for m in history])
    num_updates = np.array([m["num_updates"] for m in history])
    calls = np.arange(20)
    np.testing.assert_array_equal(did_update, (env_steps >= 20) & (calls % 2 == 0))
    assert did_update.any() and not did_update[env_steps < 20].any()
    np.testing.assert_array_equal(num_updates, 3 * np.cumsum(did_update))
    losses = np.array([m["loss"] for m in history])
    assert np.all(losses[did_update] > 0) and np.all(losses[~did_update] == 0)
    np.testing.assert_allclose(history[0]["epsilon"], 0.08 - 0.07 * 2 / 100, rtol=1e-5)


@pytest.mark.parametrize("prioritized_replay", [False, True], ids=["uniform", "prioritized"])
def test_vmapped_seeds_match_separate_runs(prioritized_replay):
    """axis_name path: seeds that become ready at different calls keep exact per-seed semantics."""
    kwargs = dict(learning_starts=12, update_every=1, prioritized_replay=prioritized_replay, **SMALL_AGENT)
    learner = make_learner(small_config(2, **kwargs), 3)
    vlearner = make_learner(small_config(2, **kwargs), 3, axis_name="seed")
    envs = [FakeVecEnv([2, 3]), FakeVecEnv([5, 6])]  # different reset counts -> different env_steps
    keys = jax.random.split(jax.random.key(7), 2)
    obs0 = jnp.stack([jnp.asarray(e.reset()) for e in envs])
    vstate, vactions = jax.jit(jax.vmap(vlearner.init))(keys, obs0)
    vstep = jax.jit(jax.vmap(vlearner.step, axis_name="seed"))
    ready_differs = False
    for _ in range(12):
        results = [e.step(np.asarray(a)) for e, a in zip(envs, vactions)]
        obs, reward, terminated, truncated = (np.stack(x) for x in zip(*results))
        vstate, vactions, metrics = vstep(vstate, obs, reward, terminated, truncated)
        ready_differs |= bool(metrics["did_update"][0] != metrics["did_update"][1])
    assert ready_differs
    step, init = jax.jit(learner.step), jax.jit(learner.init)
    for seed, lengths in enumerate([[2, 3], [5, 6]]):
        state, actions = init(keys[seed], obs0[seed])
        env = FakeVecEnv(lengths)
        env.reset()
        for _ in range(12):
            state, actions, _ = step(state, *env.step(np.asarray(actions)))
        assert int(state.dqn.num_updates) == int(vstate.dqn.num_updates[seed])
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[seed], b, rtol=1e-4, atol=1e-5),
                     (vstate.dqn.params, vstate.replay), (state.dqn.params, state.replay))


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_envs"):
        make_learner(small_config(0), 6)
    with pytest.raises(ValueError, match="update_every"):
        make_learner(small_config(4, update_every=0), 6)
    with pytest.raises(ValueError, match="reward_scale"):
        make_learner(small_config(4, reward_scale=0.0), 6)


@pytest.mark.parametrize("life_loss_terminal", [False, True])
def test_life_loss_terminal_and_clipped_rewards_in_the_buffer(life_loss_terminal):
    """A lost life is stored terminal only with life_loss_terminal (the episode goes on: no reset, the next
    transition is stored); clip_rewards stores sign(reward) * reward_scale, episode returns stay raw."""
    config = small_config(2, buffer_size=32, batch_size=4, learning_starts=1_000, hidden_sizes=(8,), reward_scale=0.5,
                          clip_rewards=True, life_loss_terminal=life_loss_terminal)
    learner = make_learner(config, 3)
    obs = lambda t: jnp.full((2, 128), t, jnp.uint8)  # noqa: E731
    state, _ = learner.init(jax.random.key(0), obs(0))
    step = jax.jit(learner.step)
    no = jnp.zeros(2, bool)
    state, _, _ = step(state, obs(1), jnp.array([30.0, -2.0]), no, no, jnp.array([True, False]))
    state, _, metrics = step(state, obs(2), jnp.array([0.0, 5.0]), no, no, no)
    data = jax.device_get(state.replay.data)
    assert int(state.replay.size) == 4  # the life loss did not mask the following transition
    np.testing.assert_allclose(data.reward[:4], [0.5, -0.5, 0.0, 0.5])
    assert data.terminated[:4].tolist() == [life_loss_terminal, False, False, False]
    np.testing.assert_allclose(state.episode_return, [30.0, 3.0])
    assert not np.asarray(metrics["episode_done"]).any()


def test_symlog_rewards_compress_the_score_in_the_buffer():
    """symlog_rewards stores sign(r) * log(1 + |r|) * reward_scale (larger scores still count more, unlike the
    sign); it cannot be combined with clip_rewards."""
    config = small_config(2, buffer_size=32, batch_size=4, learning_starts=1_000, hidden_sizes=(8,), reward_scale=0.5,
                          symlog_rewards=True)
    learner = make_learner(config, 3)
    obs = lambda t: jnp.full((2, 128), t, jnp.uint8)  # noqa: E731
    state, _ = learner.init(jax.random.key(0), obs(0))
    step = jax.jit(learner.step)
    no = jnp.zeros(2, bool)
    state, _, _ = step(state, obs(1), jnp.array([30.0, -2.0]), no, no)
    state, _, _ = step(state, obs(2), jnp.array([0.0, 300.0]), no, no)
    data = jax.device_get(state.replay.data)
    np.testing.assert_allclose(data.reward[:4], 0.5 * np.array([np.log(31.0), -np.log(3.0), 0.0, np.log(301.0)]),
                               rtol=1e-6)
    np.testing.assert_allclose(state.episode_return, [30.0, 298.0])  # episode returns stay the raw score
    with pytest.raises(ValueError, match="choose one"):
        small_config(2, clip_rewards=True, symlog_rewards=True)
