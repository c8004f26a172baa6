"""jaxrl.dqn.pqn: Q(lambda) returns by hand (per quantile too), the masked losses, the learner's rollouts and
updates, learning the toy task, the planes CNN, seeds under vmap, the inactive call, the config's refusals and the
preset.

PQN's runs through `jaxrl dqn train` (both loops, exact resume) are tested with the DQN runs' tests
(test_dqn_train.py, test_dqn_train_xla.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_same_tree, one_hot_step_toy_env
from jaxrl.dqn import pqn
from jaxrl.dqn.config import DEFAULT_PRESET, DQNConfig, preset
from jaxrl.dqn.envs.toy import make_toy_env
from jaxrl.dqn.learner import make_learner
from jaxrl.dqn.on_policy import evaluate


def _rollout(values, rewards, terminal, truncated=None):
    t = len(values)
    column = lambda x, dtype: jnp.asarray(x, dtype)[:, None]  # noqa: E731
    return pqn.Rollout(obs=jnp.zeros((t, 1, 128), jnp.uint8), action=jnp.zeros((t, 1), jnp.int32),
                       value=column(values, jnp.float32), reward=column(rewards, jnp.float32),
                       terminal=column(terminal, bool), truncated=column(truncated or [False] * t, bool),
                       valid=jnp.ones((t, 1), bool))


def test_q_lambda_returns_by_hand():
    gamma, lam = 0.9, 0.5
    # value[t] = max_a Q(s_t); the last value bootstraps step 3; step 1 ends a life / game: no bootstrap past it
    rollout = _rollout([10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 0.0, 1.0], [False, True, False, False])
    last = jnp.asarray([50.0])
    g3 = 1.0 + gamma * 50.0
    g2 = 0.0 + gamma * ((1 - lam) * 40.0 + lam * g3)
    g1 = 2.0  # terminal
    g0 = 1.0 + gamma * ((1 - lam) * 20.0 + lam * g1)
    np.testing.assert_allclose(pqn.q_lambda_returns(rollout, last, gamma, lam)[:, 0], [g0, g1, g2, g3], rtol=1e-6)
    # lambda 0: one-step Q-learning targets; lambda 1: discounted returns to the terminal / the bootstrap
    np.testing.assert_allclose(pqn.q_lambda_returns(rollout, last, gamma, 0.0)[:, 0],
                               [1.0 + gamma * 20.0, 2.0, gamma * 40.0, 1.0 + gamma * 50.0], rtol=1e-6)
    np.testing.assert_allclose(pqn.q_lambda_returns(rollout, last, gamma, 1.0)[:, 0],
                               [1.0 + gamma * 2.0, 2.0, gamma * (1.0 + gamma * 50.0), 1.0 + gamma * 50.0], rtol=1e-6)


def test_truncation_bootstraps_from_the_next_rows_value_only():
    gamma, lam = 0.9, 0.5
    # step 1 is cut by a time limit: its target is r + gamma * value of row 2 (the episode's last observation,
    # recorded on the auto-reset row), and the return of the next episode does not flow into it
    rollout = _rollout([10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 0.0, 1.0], [False] * 4, [False, True, False, False])
    returns = pqn.q_lambda_returns(rollout, jnp.asarray([50.0]), gamma, lam)[:, 0]
    g1 = 2.0 + gamma * 30.0
    np.testing.assert_allclose(returns[1], g1, rtol=1e-6)
    np.testing.assert_allclose(returns[0], 1.0 + gamma * ((1 - lam) * 20.0 + lam * g1), rtol=1e-6)


def test_quantile_returns_run_the_recursion_per_quantile_and_average_to_the_returns_of_the_means():
    gamma, lam = 0.9, 0.5
    rng = np.random.default_rng(0)
    values = np.sort(rng.normal(size=(4, 1, 3)), axis=-1).astype(np.float32)  # [T, N, K]: 3 quantiles per row
    last = np.sort(rng.normal(size=(1, 3)), axis=-1).astype(np.float32)
    rewards, terminal, truncated = [1.0, 2.0, 0.0, 1.0], [False, True, False, False], [False, False, True, False]
    rollout = _rollout(np.zeros(4), rewards, terminal, truncated)._replace(value=jnp.asarray(values))
    returns = pqn.q_lambda_returns(rollout, jnp.asarray(last), gamma, lam)
    assert returns.shape == (4, 1, 3)
    for k in range(3):  # quantile k: the scalar recursion on the k-th values
        scalar = _rollout(values[:, 0, k], rewards, terminal, truncated)
        np.testing.assert_allclose(returns[:, 0, k], pqn.q_lambda_returns(scalar, jnp.asarray(last[:, k]), gamma,
                                                                            lam)[:, 0], rtol=1e-6)
    means = _rollout(values[:, 0].mean(-1), rewards, terminal, truncated)
    np.testing.assert_allclose(returns.mean(-1)[:, 0], pqn.q_lambda_returns(means, jnp.asarray(last.mean(-1)), gamma,
                                                                              lam)[:, 0], rtol=1e-5)
    np.testing.assert_allclose(returns[1, 0], [2.0] * 3)  # a terminal row: the reward, every quantile


def test_quantile_loss_is_the_masked_quantile_huber_loss_of_the_taken_action():
    dqn = make_learner(_config(num_envs=1, num_quantiles=4), 3).dqn
    obs = jax.random.randint(jax.random.key(0), (5, 128), 0, 256).astype(jnp.uint8)
    params = dqn.init(jax.random.key(1)).params
    dist = np.asarray(dqn.quantile_values(params, obs))  # [B, A, K]
    assert dist.shape == (5, 3, 4)
    np.testing.assert_allclose(dqn.q_values(params, obs), dist.mean(-1), rtol=1e-6)
    action = jnp.asarray([0, 1, 2, 1, 0])
    valid = jnp.asarray([True, False, True, True, False])
    returns = jax.random.normal(jax.random.key(2), (5, 4)) * 2
    loss, q_taken = pqn.pqn_quantile_loss(params, dqn.quantile_values, obs, action, returns, valid, huber_delta=1.0)
    taus = (np.arange(4) + 0.5) / 4
    expected = []
    for b in np.flatnonzero(np.asarray(valid)):
        theta = dist[b, int(action[b])]
        u = np.asarray(returns[b])[None, :] - theta[:, None]  # [K, K]
        huber = np.where(np.abs(u) <= 1, 0.5 * u ** 2, np.abs(u) - 0.5)
        expected.append(np.sum(np.mean(np.abs(taus[:, None] - (u < 0)) * huber, axis=1)))
    np.testing.assert_allclose(float(loss), np.mean(expected), rtol=1e-5)
    np.testing.assert_allclose(float(q_taken), np.mean([dist[b, int(action[b])].mean() for b in (0, 2, 3)]), rtol=1e-5)


def test_loss_is_the_masked_squared_error_of_the_taken_action():
    dqn_network = make_learner(_config(num_envs=1), 3).dqn
    obs = jax.random.randint(jax.random.key(0), (5, 128), 0, 256).astype(jnp.uint8)
    params = dqn_network.init(jax.random.key(1)).params
    q = dqn_network.q_values(params, obs)
    action = jnp.asarray([0, 1, 2, 1, 0])
    valid = jnp.asarray([True, False, True, True, False])
    returns = jnp.asarray([1.0, 99.0, -1.0, 0.5, -99.0])
    loss, q_taken = pqn.pqn_loss(params, dqn_network.q_values, obs, action, returns, valid)
    taken = np.asarray(q)[np.arange(5), np.asarray(action)]
    keep = np.asarray(valid)
    np.testing.assert_allclose(float(loss), 0.5 * np.mean((taken[keep] - np.asarray(returns)[keep]) ** 2), rtol=1e-5)
    np.testing.assert_allclose(float(q_taken), taken[keep].mean(), rtol=1e-5)
    assert "LayerNorm_0" in params["params"]  # the DQN agent's QNetwork, with LayerNorm


@pytest.mark.parametrize("overrides", [dict(), dict(obs_encoding="ego-planes", frame_stack=3, conv_channels=(4, 8))])
def test_learner_reads_rows_encoded_once_with_the_same_q_values(overrides):
    """`learn` encodes a rollout's RAM once for its epochs: q_values(encoded=True) on DQN.encode(obs) equals
    q_values on the RAM, with the same parameters."""
    dqn = make_learner(_config(num_envs=1, **overrides), 6).dqn
    obs = jax.random.randint(jax.random.key(0), (5, 128 * overrides.get("frame_stack", 1)), 0, 256).astype(jnp.uint8)
    params = dqn.init(jax.random.key(1)).params
    encoded = jax.jit(dqn.encode)(obs)
    assert encoded.dtype == jnp.float32 and encoded.shape[0] == 5
    np.testing.assert_allclose(jax.jit(lambda p, x: dqn.q_values(p, x, encoded=True))(params, encoded),
                               jax.jit(dqn.q_values)(params, obs), rtol=1e-6, atol=1e-6)


def _config(**overrides):
    settings = dict(algo="pqn", num_envs=8, rollout_steps=16, num_minibatches=4, epochs=2, hidden_sizes=(32,),
                    layer_norm=True, optimizer="radam", clip_rewards=True, reward_scale=1.0, gamma=0.99,
                    learning_rate=2.5e-4, max_grad_norm=10.0)
    return DQNConfig(**{**settings, **overrides})


def _run(learner, env, calls, key=0):
    """``calls`` learner steps on an XlaEnv, compiled as one scan: (state, metrics [calls, ...])."""
    env_state, obs = env.reset()
    state, actions = learner.init(jax.random.key(key), obs)

    def call(carry, _):
        state, env_state, actions = carry
        env_state, (obs, reward, terminated, truncated, life_lost) = env.step(env_state, actions)
        state, actions, metrics = learner.step(state, obs, reward, terminated, truncated, life_lost)
        return (state, env_state, actions), metrics

    (state, _, _), metrics = jax.jit(lambda c: jax.lax.scan(call, c, None, length=calls))((state, env_state,
                                                                                           actions))
    return state, jax.device_get(metrics)


def test_rollouts_record_what_the_agent_acted_on_and_update_every_rollout_steps_calls():
    env = make_toy_env(8, num_actions=4, lengths=[5] * 8)
    config = _config(epsilon_start=1.0, epsilon_end=1.0)
    learner = make_learner(config, 4)
    state, metrics = _run(learner, env, 16)
    assert metrics["did_update"].tolist() == [False] * 15 + [True] and int(state.filled) == 0
    assert int(state.dqn.num_updates) == config.epochs * config.num_minibatches
    assert state.dqn.target_params is None and np.isfinite(metrics["loss"][-1]) and metrics["loss"][-1] > 0
    rollout = state.rollout  # the 16 rows the update regressed on (kept until overwritten)
    counts = np.bincount(np.asarray(rollout.action).ravel(), minlength=4)
    assert counts.min() > 0.15 * counts.sum(), counts  # uniform actions at epsilon 1
    initial_params = learner.init(jax.random.key(0), env.reset()[1])[0].dqn.params  # the params that acted
    q = learner.dqn.q_values(initial_params, rollout.obs)
    np.testing.assert_allclose(rollout.value, q.max(-1), rtol=1e-5, atol=1e-6)  # the bootstrap values
    # episodes of 5 steps: the call after each end is envpool's auto-reset row, left out of the loss
    np.testing.assert_array_equal(np.asarray(rollout.valid)[:, 0], ([True] * 5 + [False]) * 2 + [True] * 4)
    assert int(state.env_steps) == 8 * 14  # valid rows only


def test_a_quantile_head_records_the_greedy_actions_quantiles_and_updates():
    env = make_toy_env(8, num_actions=4, lengths=[5] * 8)
    config = _config(num_quantiles=5, epsilon_start=1.0, epsilon_end=1.0)
    learner = make_learner(config, 4)
    state, metrics = _run(learner, env, 16)
    assert state.rollout.value.shape == (16, 8, 5)
    assert metrics["did_update"][-1] and np.isfinite(metrics["loss"][-1]) and metrics["loss"][-1] > 0
    initial_params = learner.init(jax.random.key(0), env.reset()[1])[0].dqn.params  # the params that acted
    dist = np.asarray(learner.dqn.quantile_values(initial_params, state.rollout.obs))  # [T, N, A, K]
    greedy = dist.mean(-1).argmax(-1)  # [T, N]
    np.testing.assert_allclose(state.rollout.value, np.take_along_axis(dist, greedy[..., None, None], axis=2)[:, :, 0],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_quantiles", [0, 8])
def test_learns_the_optimal_policy_of_the_toy_task_from_random_play(num_quantiles):
    """Reward 1 when action == t in 4-step games with 4 actions: random play gets 1 per game, the best play 4.

    Trained on uniformly random play (epsilon 1 throughout: Q-learning is off-policy) with one-step targets
    (lambda 0), the greedy policy must play 4 / 4 and Q(s_0, a*) come near its true value 1 + gamma + gamma^2 +
    gamma^3 (lambda > 0 mixes in the random play's own returns, so its Q-values stay lower; its greedy policy
    was 4 / 4 too for the seeds tried). With an annealed epsilon the task is solved or not depending on the seed
    (a greedy policy stuck at 2 or 3 of 4).
    """
    env = one_hot_step_toy_env(8, num_actions=4, length=4)
    # every game ends as a terminal (the toy env reports odd envs' ends as time-limit truncations, which PQN
    # bootstraps from the never-trained value of the last observation)
    env_step = env.step

    def step(env_state, actions):
        env_state, (obs, reward, terminated, truncated, life_lost) = env_step(env_state, actions)
        return env_state, (obs, reward, terminated | truncated, jnp.zeros_like(truncated), life_lost)

    env = env._replace(step=step)
    config = _config(learning_rate=3e-3, learning_rate_end=0.0, learning_rate_decay_steps=8 * 16 * 80,
                     epsilon_start=1.0, epsilon_end=1.0, q_lambda=0.0, num_quantiles=num_quantiles)
    learner = make_learner(config, 4)
    state, metrics = _run(learner, env, 16 * 80)
    played = metrics["episode_return"][metrics["episode_done"]]
    assert abs(played.mean() - 1.0) < 0.1, played.mean()  # random play throughout
    greedy = lambda params, obs, key: jnp.argmax(learner.dqn.q_values(params, obs), -1)  # noqa: E731
    np.testing.assert_array_equal(evaluate(greedy, state.dqn.params, env, jax.random.key(1), max_steps=20), 4.0)
    q0 = learner.dqn.q_values(state.dqn.params, env.reset()[1])[:, 0]
    np.testing.assert_allclose(q0, sum(0.99 ** k for k in range(4)), atol=0.9)


def test_seeds_under_vmap_equal_each_seed_alone():
    """Two seeds vmapped with the axis name (the multi-seed runs' learner) learn what each learns alone."""
    config = _config(num_envs=2, rollout_steps=4, num_minibatches=2)
    alone, vmapped = make_learner(config, 3), make_learner(config, 3, axis_name="seed")
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 255, (9, 2, 2, 128), dtype=np.uint8)  # [calls, seeds, envs, D]
    reward = rng.integers(0, 2, (9, 2, 2)).astype(np.float32)
    no = np.zeros((2, 2), bool)
    keys = jnp.stack([jax.random.key_data(jax.random.key(s)) for s in (5, 6)])
    init = jax.vmap(lambda k, o: vmapped.init(jax.random.wrap_key_data(k), o), axis_name="seed")
    states, _ = init(keys, jnp.asarray(obs[0]))
    step = jax.jit(jax.vmap(vmapped.step, axis_name="seed"))
    for t in range(1, 9):
        states, _, metrics = step(states, obs[t], reward[t], no, no, no)
    assert int(states.dqn.num_updates[0]) == 2 * config.epochs * config.num_minibatches
    alone_step = jax.jit(alone.step)
    for s, seed in enumerate((5, 6)):
        state, _ = alone.init(jax.random.key(seed), jnp.asarray(obs[0, s]))
        for t in range(1, 9):
            state, _, _ = alone_step(state, obs[t, s], reward[t, s], no[s], no[s], no[s])
        for a, b in zip(jax.tree.leaves(state.dqn.params), jax.tree.leaves(states.dqn.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b)[s], rtol=0, atol=1e-5)


def test_an_inactive_call_changes_nothing_and_does_not_advance_the_rollout():
    config = _config(num_envs=2, rollout_steps=13, num_minibatches=2)
    learner = make_learner(config, 3)
    step = jax.jit(learner.step)
    state, _ = learner.init(jax.random.PRNGKey(0), jnp.zeros((2, 128), jnp.uint8))
    rng = np.random.default_rng(0)
    for _ in range(12):  # one call short of a full rollout
        state, _, _ = step(state, rng.integers(0, 255, (2, 128), dtype=np.uint8), np.ones(2, np.float32),
                           np.zeros(2, bool), np.zeros(2, bool))
    args = (rng.integers(0, 255, (2, 128), dtype=np.uint8), np.ones(2, np.float32), np.array([True, False]),
            np.zeros(2, bool), np.zeros(2, bool))
    held, held_actions, metrics = step(state, *args, np.bool_(False))
    assert_same_tree(held._replace(rollout=state.rollout), state)  # the row it wrote is overwritten next
    np.testing.assert_array_equal(held_actions, state.action_tm1)
    assert not metrics["did_update"] and not np.any(metrics["episode_done"])
    moved, _, moved_metrics = step(state, *args, np.bool_(True))  # active: the plain call, bit for bit
    plain, _, _ = step(state, *args)
    assert_same_tree(moved, plain)
    assert moved_metrics["did_update"] and int(moved.filled) == 0


@pytest.mark.parametrize("overrides, message", [
    (dict(n_step=3), "--n-step"), (dict(double_dqn=True), "--double-dqn"),
    (dict(munchausen_alpha=0.9), "--munchausen-alpha"), (dict(prioritized_replay=True), "--prioritized-replay"),
    (dict(num_minibatches=3), "divisible by num_minibatches"), (dict(q_lambda=1.5), "q_lambda"),
    (dict(optimizer="sgd"), "optimizer"), (dict(algo="ppo"), "algo"),
])
def test_config_refuses_dqn_options_and_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        _config(**overrides)


def test_pqn_ego_preset_is_pqn_on_egocentric_planes_with_schedules_over_ten_million_frames():
    config = preset("pqn-ego")
    assert config.algo == "pqn"
    assert config == preset("pqn").replace(obs_encoding="ego-planes")  # the bilinear planes' PQN, centred
    assert (preset("pqn").obs_encoding, config.frame_stack) == ("bilinear-planes", 3)
    assert config.total_steps * config.frame_skip == 10_000_000
    # the step size reaches 0 at the end of the run, epsilon its end after the first 10% of it
    assert config.learning_rate_decay_updates == -(-config.total_steps // 64) and config.learning_rate_end == 0.0
    assert config.epsilon_decay_steps == config.total_steps // 10
    assert preset("seed") == DQNConfig() and DQNConfig().algo == "dqn"  # the reference agent is unchanged


def test_pqn_ego_e128_preset_is_the_default_and_pqn_ego_in_many_envs_at_the_same_updates_per_step():
    config, ego = preset("pqn-ego-e128"), preset("pqn-ego")
    assert DEFAULT_PRESET == "pqn-ego-e128"
    assert config == ego.replace(num_envs=128, rollout_steps=32, epochs=2, num_minibatches=32,
                                 checkpoint_every=2_500_000)
    # one segment in its 10M frames: no env's game is cut before the end (19,531 steps per env)
    assert config.checkpoint_every == config.total_steps and config.checkpoint_every // config.num_envs == 19_531
    # the same updates per env step: epochs x minibatches per rollout of num_envs x rollout_steps rows
    updates_per_step = [c.epochs * c.num_minibatches / (c.num_envs * c.rollout_steps) for c in (config, ego)]
    assert updates_per_step == [1 / 64, 1 / 64]
    assert (config.num_envs * config.rollout_steps // config.num_minibatches) == 128  # rows per minibatch
    # the schedules are pqn-ego's: over 10M frames, in env steps (so also in updates)
    assert config.total_steps * config.frame_skip == 10_000_000
    assert (config.learning_rate_decay_updates, config.epsilon_decay_steps) == (ego.learning_rate_decay_updates,
                                                                                ego.epsilon_decay_steps)


def test_pqn_ego_40m_preset_is_pqn_ego_e128_with_schedules_over_forty_million_frames():
    config = preset("pqn-ego-40m")
    assert config == preset("pqn-ego-e128").replace(total_steps=10_000_000, learning_rate_decay_steps=10_000_000,
                                                    epsilon_decay_steps=1_000_000)
    assert config.total_steps * config.frame_skip == 40_000_000
    # four segments: a checkpoint (where every env's game is cut) each 10M frames, 19,531 steps per env between them
    assert config.total_steps // config.checkpoint_every == 4
    # the step size reaches 0 at the end of the run, epsilon its end after the first 10% of it
    assert config.learning_rate_decay_updates == config.total_steps // 64 and config.learning_rate_end == 0.0
    assert config.epsilon_decay_steps == config.total_steps // 10


@pytest.mark.parametrize("rewards, expected", [(dict(clip_rewards=True), np.sign),
                                               (dict(clip_rewards=False, symlog_rewards=True),
                                                lambda r: np.sign(r) * np.log1p(np.abs(r)))])
def test_rollout_rows_hold_the_stored_reward(rewards, expected):
    """The rollout's reward is the learners' shared stored reward (sign or symlog, times reward_scale)."""
    learner = make_learner(_config(reward_scale=0.5, **rewards), 4)
    obs = jnp.zeros((8, 128), jnp.uint8)
    state, _ = learner.init(jax.random.key(0), obs)
    reward = jnp.asarray([0.0, 5.0, 10.0, 30.0, 200.0, -1.0, 1.0, 0.5])
    no = jnp.zeros(8, bool)
    state, _, _ = jax.jit(learner.step)(state, obs, reward, no, no)
    np.testing.assert_allclose(state.rollout.reward[0], 0.5 * expected(np.asarray(reward)), rtol=1e-6)
