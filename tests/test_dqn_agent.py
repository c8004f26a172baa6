"""DQN agent: TD loss by hand, terminal vs truncated targets, target sync, ε-greedy, one update, vmap over seeds."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl.dqn import Transition, epsilon_schedule, make_dqn, td_error, td_loss
from jaxrl.dqn.network import QNetwork
from jaxrl.dqn.losses import munchausen_target, quantile_midpoints, quantile_td_loss

from conftest import small_config


def _huber(x, delta=1.0):
    x = abs(x)
    return 0.5 * x * x if x <= delta else delta * (x - 0.5 * delta)


def test_td_loss_hand_computed():
    q_tm1 = jnp.array([1.0, 2.0, 3.0])
    # target = 0.5 + 0.9 * max(0, 4, 1) = 4.1; td = 4.1 - q_tm1[1] = 2.1 > delta -> 1 * (2.1 - 0.5) = 1.6
    loss = td_loss(q_tm1, 1, 0.5, 0.9, jnp.array([0.0, 4.0, 1.0]))
    np.testing.assert_allclose(loss, 1.6, rtol=1e-6)
    # target = 0.5 + 0.9 * 1 = 1.4; td = 1.4 - 2 = -0.6 -> 0.5 * 0.36 = 0.18
    loss = td_loss(q_tm1, 1, 0.5, 0.9, jnp.array([0.0, 1.0, 0.5]))
    np.testing.assert_allclose(loss, 0.18, rtol=1e-6)
    # huber_delta = 2: td = 2.1 -> 2 * (2.1 - 1) = 2.2
    loss = td_loss(q_tm1, 1, 0.5, 0.9, jnp.array([0.0, 4.0, 1.0]), huber_delta=2.0)
    np.testing.assert_allclose(loss, 2.2, rtol=1e-6)


def test_double_dqn_picks_action_with_online_net():
    q_tm1 = jnp.array([1.0, 2.0, 3.0])
    q_t_target = jnp.array([0.0, 4.0, 1.0])
    q_t_online = jnp.array([0.0, 0.0, 5.0])  # argmax 2 -> bootstrap q_t_target[2] = 1
    loss = td_loss(q_tm1, 1, 0.5, 0.9, q_t_target, q_t_online)
    np.testing.assert_allclose(loss, _huber(0.5 + 0.9 * 1.0 - 2.0), rtol=1e-6)


def test_td_loss_gradient_flows_only_through_q_tm1():
    grads = jax.grad(td_loss, argnums=(0, 4))(
        jnp.array([1.0, 2.0, 3.0]), 1, 0.5, 0.9, jnp.array([0.0, 1.0, 0.5])
    )
    np.testing.assert_allclose(grads[0], [0.0, 0.6, 0.0], rtol=1e-6)  # d/dq huber(1.4 - q) = -(1.4-2)
    np.testing.assert_allclose(grads[1], 0.0)


def _batch_from(obs_rows, actions, rewards, next_rows, terminated):
    obs = jnp.asarray(np.repeat(np.asarray(obs_rows, np.uint8)[:, None], 128, 1))
    next_obs = jnp.asarray(np.repeat(np.asarray(next_rows, np.uint8)[:, None], 128, 1))
    return Transition(obs, jnp.asarray(actions, jnp.int32), jnp.asarray(rewards, jnp.float32), next_obs,
                      jnp.asarray(terminated))


def test_terminated_is_not_bootstrapped_truncated_is():
    """The batch loss equals the hand formula with discount 0 at a terminal and gamma otherwise.

    Truncation has no field in Transition: the learner stores a time-limit step with terminated=False, so it is
    bootstrapped exactly like the second row here (see tests/test_dqn_learner.py).
    """
    gamma = 0.9
    dqn = make_dqn(small_config(hidden_sizes=(8,), gamma=gamma), 3)
    state = dqn.init(jax.random.key(0))
    batch = _batch_from([10, 10], [2, 2], [1.0, 1.0], [200, 200], [True, False])
    q_tm1 = dqn.q_values(state.params, batch.obs)[:, 2]
    v_t = jnp.max(dqn.q_values(state.target_params, batch.next_obs), axis=-1)
    expected = [_huber(1.0 - float(q_tm1[0])), _huber(1.0 + gamma * float(v_t[1]) - float(q_tm1[1]))]
    loss, metrics = dqn.loss(state.params, state.target_params, batch)
    np.testing.assert_allclose(loss, np.mean(expected), rtol=1e-5)
    np.testing.assert_allclose(metrics["q_mean"], np.mean(q_tm1), rtol=1e-5)
    # and the two rows differ only by the bootstrap term
    only_terminal, _ = dqn.loss(state.params, state.target_params, jax.tree.map(lambda x: x[:1], batch))
    np.testing.assert_allclose(only_terminal, expected[0], rtol=1e-5)


def test_weighted_update_scales_each_row_and_returns_its_td_error():
    """update with weights (prioritized replay): loss = mean(w * huber(td)); td errors are the pre-step ones."""
    gamma = 0.9
    dqn = make_dqn(small_config(hidden_sizes=(8,), gamma=gamma, learning_rate=1e-2), 3)
    state = dqn.init(jax.random.key(1))
    batch = _batch_from([10, 20, 30], [0, 1, 2], [1.0, -0.5, 0.25], [40, 50, 60], [True, False, False])
    q_tm1 = dqn.q_values(state.params, batch.obs)
    q_t = dqn.q_values(state.target_params, batch.next_obs)
    expected_td = [float(td_error(q_tm1[i], batch.action[i], batch.reward[i], gamma * (1.0 - float(batch.terminated[i])),
                                  q_t[i])) for i in range(3)]
    np.testing.assert_allclose(expected_td[0], 1.0 - float(q_tm1[0, 0]), rtol=1e-5)  # terminal row by hand
    weights = jnp.array([1.0, 0.5, 0.0])
    new_state, metrics, td = jax.jit(dqn.update)(state, batch, weights)
    np.testing.assert_allclose(td, expected_td, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["loss"], np.mean([w * _huber(e) for w, e in zip([1.0, 0.5, 0.0], expected_td)]),
                               rtol=1e-5)
    # unit weights are the plain update, bit for bit
    plain_state, plain_metrics, plain_td = dqn.update(state, batch)
    np.testing.assert_allclose(plain_td, td, rtol=1e-5, atol=1e-6)  # the TD errors do not depend on the weights
    ones_state, ones_metrics, _ = dqn.update(state, batch, jnp.ones(3))
    jax.tree.map(np.testing.assert_array_equal, plain_state, ones_state)
    # a zero-weight row contributes no gradient: changing its reward leaves the step unchanged
    other = batch._replace(reward=batch.reward.at[2].set(100.0))
    moved, _, _ = dqn.update(state, other, weights)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), moved.params, new_state.params)


def test_munchausen_target_hand_computed_and_its_limits():
    q_tm1_t = np.array([1.0, 1.2, 0.4])
    q_t = np.array([0.5, 2.0, 1.0])
    tau, alpha, r, disc = 0.5, 0.9, 0.3, 0.9

    def softmax(q):
        z = np.exp(q / tau - np.max(q / tau))
        return z / z.sum()

    pi_tm1, pi_t = softmax(q_tm1_t), softmax(q_t)
    soft_v = np.sum(pi_t * (q_t - tau * np.log(pi_t)))
    for action in range(3):
        bonus = alpha * tau * np.clip(np.log(pi_tm1[action]), -1.0, 0.0)
        got = munchausen_target(jnp.asarray(q_tm1_t), action, r, disc, jnp.asarray(q_t), temperature=tau, alpha=alpha)
        np.testing.assert_allclose(got, r + bonus + disc * soft_v, rtol=1e-5)
    assert np.log(pi_tm1[2]) < -1.0  # action 2's bonus is the clipped one
    # alpha 0 and a tiny temperature: the DQN target r + disc * max q
    got = munchausen_target(jnp.asarray(q_tm1_t), 0, r, disc, jnp.asarray(q_t), temperature=1e-4, alpha=0.0)
    np.testing.assert_allclose(got, r + disc * 2.0, rtol=1e-5)
    # terminal: no bootstrap, the bonus stays
    got = munchausen_target(jnp.asarray(q_tm1_t), 1, r, 0.0, jnp.asarray(q_t), temperature=tau, alpha=alpha)
    np.testing.assert_allclose(got, r + alpha * tau * np.log(pi_tm1[1]), rtol=1e-5)


def test_munchausen_loss_uses_the_target_network_and_updates():
    dqn = make_dqn(small_config(hidden_sizes=(8,), gamma=0.9, munchausen_alpha=0.9, munchausen_temperature=0.1,
                                learning_rate=1e-2), 3)
    state = dqn.init(jax.random.key(2))
    state = state._replace(target_params=jax.tree.map(lambda x: 1.5 * x, state.params))  # target != online
    batch = _batch_from([10, 20], [0, 2], [1.0, 0.5], [30, 40], [False, True])
    q_tm1 = dqn.q_values(state.params, batch.obs)
    q_tm1_t = dqn.q_values(state.target_params, batch.obs)
    q_t = dqn.q_values(state.target_params, batch.next_obs)
    targets = [float(munchausen_target(q_tm1_t[i], batch.action[i], batch.reward[i], 0.9 * (1 - float(batch.terminated[i])),
                                       q_t[i], temperature=0.1, alpha=0.9)) for i in range(2)]
    loss, _ = dqn.loss(state.params, state.target_params, batch)
    np.testing.assert_allclose(loss, np.mean([_huber(t - float(q_tm1[i, int(batch.action[i])]))
                                              for i, t in enumerate(targets)]), rtol=1e-5)
    new_state, _, _ = jax.jit(dqn.update)(state, batch)
    assert float(dqn.loss(new_state.params, state.target_params, batch)[0]) < float(loss)
    with pytest.raises(ValueError, match="double_dqn cannot be combined with munchausen"):
        make_dqn(small_config(double_dqn=True, munchausen_alpha=0.9), 3)
    with pytest.raises(ValueError, match="munchausen_temperature"):
        make_dqn(small_config(munchausen_alpha=0.9, munchausen_temperature=0.0), 3)


def _quantile_loss_by_hand(theta, target, delta):
    n = len(theta)
    total = 0.0
    for i in range(n):
        tau = (2 * i + 1) / (2 * n)
        total += np.mean([abs(tau - (target[j] - theta[i] < 0)) * _huber(target[j] - theta[i], delta)
                          for j in range(len(target))])
    return total


def test_quantile_td_loss_hand_computed():
    dist_tm1 = np.array([[0.0, 0.5, 1.0], [2.0, 2.5, 3.5]])  # [A=2, N=3]
    dist_t = np.array([[1.0, 1.0, 1.0], [-1.0, 0.0, 4.0]])  # means 1.0 and 1.0 -> ties
    selector = np.array([0.0, 1.0])  # picks action 1 at o_t
    r, disc = 0.5, 0.9
    target = r + disc * dist_t[1]  # [-0.4, 0.5, 4.1]
    for delta in (1.0, 0.1):
        loss, err = quantile_td_loss(jnp.asarray(dist_tm1), 0, r, disc, jnp.asarray(dist_t), jnp.asarray(selector),
                                     huber_delta=delta)
        np.testing.assert_allclose(loss, _quantile_loss_by_hand(dist_tm1[0], target, delta), rtol=1e-5)
        np.testing.assert_allclose(err, target.mean() - dist_tm1[0].mean(), rtol=1e-5)
    # a terminal (discount 0) targets the reward alone
    loss, _ = quantile_td_loss(jnp.asarray(dist_tm1), 1, r, 0.0, jnp.asarray(dist_t), jnp.asarray(selector))
    np.testing.assert_allclose(loss, _quantile_loss_by_hand(dist_tm1[1], [r] * 3, 1.0), rtol=1e-5)
    np.testing.assert_allclose(quantile_midpoints(4), [0.125, 0.375, 0.625, 0.875])


def test_one_quantile_is_half_the_dqn_loss():
    """N = 1 (level 1/2): the weight is 1/2 on both sides, so the loss is td_loss / 2 and the error td_error."""
    rng = np.random.default_rng(3)
    for _ in range(5):
        q_tm1, q_t = rng.normal(size=4), rng.normal(size=4)
        a, r = int(rng.integers(4)), float(rng.normal())
        loss, err = quantile_td_loss(jnp.asarray(q_tm1)[:, None], a, r, 0.9, jnp.asarray(q_t)[:, None],
                                     jnp.asarray(q_t))
        np.testing.assert_allclose(loss, 0.5 * td_loss(jnp.asarray(q_tm1), a, r, 0.9, jnp.asarray(q_t)), rtol=1e-5)
        np.testing.assert_allclose(err, td_error(jnp.asarray(q_tm1), a, r, 0.9, jnp.asarray(q_t)), rtol=1e-5)


def test_quantile_regression_moves_each_value_to_its_quantile():
    """Gradient descent on the loss against a fixed target sample lands theta_i on its tau_i-quantile."""
    samples = jnp.asarray(np.random.default_rng(0).exponential(size=400).astype(np.float32))
    n = 4

    def loss(theta):  # one action; the "next state" distribution is the sample itself (r = 0, discount = 1)
        return quantile_td_loss(theta[None, :], 0, 0.0, 1.0, samples[None, :], jnp.zeros(1), huber_delta=1e-3)[0]

    theta = jnp.zeros(n)
    step = jax.jit(lambda t: t - 10.0 * jax.grad(loss)(t))  # gradients are O(huber_delta): moves <= 0.01
    for _ in range(3_000):
        theta = step(theta)
    expected = np.quantile(np.asarray(samples), np.asarray(quantile_midpoints(n)))
    np.testing.assert_allclose(theta, expected, atol=0.03)
    assert np.all(np.diff(np.asarray(theta)) > 0)


def test_qr_dqn_loss_update_and_acting():
    gamma = 0.9
    for double in (False, True):
        dqn = make_dqn(small_config(hidden_sizes=(16,), gamma=gamma, num_quantiles=5, learning_rate=1e-2,
                                    double_dqn=double), 3)
        state = dqn.init(jax.random.key(2))
        batch = _batch_from([10, 20, 30], [0, 1, 2], [1.0, -0.5, 0.25], [40, 50, 60], [True, False, False])
        net = QNetwork(num_actions=3, hidden_sizes=(16,), num_quantiles=5)
        dist = lambda p, o: net.apply(p, o, method=QNetwork.quantile_values)  # noqa: E731
        selector = dqn.q_values(state.params if double else state.target_params, batch.next_obs)
        expected = [quantile_td_loss(dist(state.params, batch.obs)[i], batch.action[i], batch.reward[i],
                                     gamma * (1.0 - float(batch.terminated[i])),
                                     dist(state.target_params, batch.next_obs)[i], selector[i]) for i in range(3)]
        loss, aux = dqn.loss(state.params, state.target_params, batch)
        np.testing.assert_allclose(loss, np.mean([float(e[0]) for e in expected]), rtol=1e-5)
        np.testing.assert_allclose(aux["td_error"], [float(e[1]) for e in expected], rtol=1e-5, atol=1e-6)
        new_state, metrics, _ = jax.jit(dqn.update)(state, batch)
        after, _ = dqn.loss(new_state.params, new_state.target_params, batch)
        assert float(after) < float(loss)
        assert dqn.q_values(state.params, batch.obs).shape == (3, 3)
        assert dqn.act(state.params, batch.obs, jax.random.key(0), 0.0).shape == (3,)
    with pytest.raises(ValueError, match="num_quantiles > 0 cannot be combined with munchausen"):
        make_dqn(small_config(num_quantiles=5, munchausen_alpha=0.9), 3)
    with pytest.raises(ValueError, match="num_quantiles"):
        make_dqn(small_config(num_quantiles=-2), 3)


def test_epsilon_schedule_values():
    schedule = epsilon_schedule(0.08, 0.01, decay_steps=1000)
    np.testing.assert_allclose(
        [schedule(0), schedule(500), schedule(1000), schedule(10**6)], [0.08, 0.045, 0.01, 0.01], rtol=1e-6
    )
    with pytest.raises(ValueError, match="start"):
        epsilon_schedule(1.5, 0.01, 10)


def test_one_jitted_update_decreases_loss_on_fixed_batch():
    dqn = make_dqn(small_config(hidden_sizes=(32, 32), learning_rate=1e-2), 6)
    state = dqn.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    batch = _batch_from(rng.integers(0, 256, 16), rng.integers(0, 6, 16), rng.normal(size=16),
                        rng.integers(0, 256, 16), rng.random(16) < 0.3)
    before, _ = dqn.loss(state.params, state.target_params, batch)
    new_state, metrics, _ = jax.jit(dqn.update)(state, batch)
    after, _ = dqn.loss(new_state.params, new_state.target_params, batch)
    np.testing.assert_allclose(metrics["loss"], before, rtol=1e-5)  # metrics are from before the step
    assert float(after) < float(before)
    assert int(new_state.num_updates) == 1


def test_learning_rate_decays_linearly_to_its_end_value():
    # Adam's step is lr * (normalised gradient): with lr going 1e-2 -> 0 over 4 updates, updates 1-4 move the
    # parameters by shrinking amounts and later ones not at all
    # one update per env step, so the 4 decay steps are 4 updates
    dqn = make_dqn(small_config(hidden_sizes=(8,), learning_rate=1e-2, learning_rate_end=0.0,
                                learning_rate_decay_steps=4, update_every=1), 3)
    constant = make_dqn(small_config(hidden_sizes=(8,), learning_rate=1e-2), 3)
    state = constant_state = dqn.init(jax.random.key(0))
    batch = _batch_from([1, 2], [0, 1], [1.0, -1.0], [3, 4], [False, True])
    update, constant_update = jax.jit(dqn.update), jax.jit(constant.update)
    first, _, _ = update(state, batch)
    constant_first, _, _ = constant_update(constant_state, batch)
    jax.tree.map(np.testing.assert_array_equal, first.params, constant_first.params)  # update 1 at lr 1e-2
    moves, state = [], first
    for _ in range(5):
        new_state, _, _ = update(state, batch)
        moves.append(max(float(jnp.max(jnp.abs(a - b))) for a, b in
                         zip(jax.tree.leaves(new_state.params), jax.tree.leaves(state.params))))
        state = new_state
    assert moves[0] > moves[1] > moves[2] > 0.0  # lr 7.5e-3, 5e-3, 2.5e-3
    assert moves[3] == moves[4] == 0.0  # lr 0 from the 5th update on


def test_adam_eps_sets_the_first_step():
    """Adam's first step is -lr * g / (|g| + eps) per parameter (bias-corrected moments are g and g ** 2)."""
    batch = _batch_from([1, 2], [0, 1], [1.0, -1.0], [3, 4], [False, True])
    for eps in (1e-8, 1e-3):
        dqn = make_dqn(small_config(hidden_sizes=(8,), learning_rate=1e-2, adam_eps=eps), 3)
        state = dqn.init(jax.random.key(0))
        grads, _ = jax.grad(dqn.loss, has_aux=True)(state.params, state.target_params, batch)
        new_state, _, _ = dqn.update(state, batch)
        expected = jax.tree.map(lambda p, g: p - 1e-2 * g / (jnp.abs(g) + eps), state.params, grads)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), new_state.params, expected)


def test_hard_target_sync_every_period():
    dqn = make_dqn(small_config(hidden_sizes=(8,), target_update_period=3), 3)
    state = dqn.init(jax.random.key(0))
    batch = _batch_from([1, 2], [0, 1], [1.0, -1.0], [3, 4], [False, True])
    update = jax.jit(dqn.update)
    initial_target = state.target_params
    for _ in range(2):
        state, _, _ = update(state, batch)
        jax.tree.map(np.testing.assert_array_equal, state.target_params, initial_target)
    state, _, _ = update(state, batch)
    jax.tree.map(np.testing.assert_array_equal, state.target_params, state.params)


def test_polyak_target_with_tau():
    dqn = make_dqn(small_config(hidden_sizes=(8,), tau=0.25), 3)
    state = dqn.init(jax.random.key(0))
    batch = _batch_from([1, 2], [0, 1], [1.0, -1.0], [3, 4], [False, True])
    new_state, _, _ = dqn.update(state, batch)
    expected = jax.tree.map(lambda p, t: 0.25 * p + 0.75 * t, new_state.params, state.target_params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                 new_state.target_params, expected)


def test_double_dqn_and_clipping_update_runs():
    dqn = make_dqn(small_config(hidden_sizes=(8,), double_dqn=True, max_grad_norm=0.1), 3)
    state = dqn.init(jax.random.key(0))
    batch = _batch_from([1, 2], [0, 1], [100.0, -100.0], [3, 4], [False, True])
    new_state, metrics, _ = jax.jit(dqn.update)(state, batch)
    assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0.1  # norm before clipping
    assert int(new_state.num_updates) == 1


def test_random_actions_cover_all_actions_and_are_per_env():
    dqn = make_dqn(small_config(hidden_sizes=(8,)), 6)
    params = dqn.init(jax.random.key(0)).params
    obs = jnp.zeros((600, 128), jnp.uint8)  # identical obs: only per-env randomness can make them differ
    actions = jax.jit(dqn.act)(params, obs, jax.random.key(1), 1.0)
    assert actions.shape == (600,) and actions.dtype == jnp.int32
    assert set(np.asarray(actions).tolist()) == set(range(6))
    greedy = dqn.act(params, obs, jax.random.key(1), 0.0)
    np.testing.assert_array_equal(greedy, jnp.argmax(dqn.q_values(params, obs), -1))


def test_vmap_init_and_update_over_two_seeds():
    dqn = make_dqn(small_config(hidden_sizes=(16,)), 6)
    states = jax.vmap(dqn.init)(jax.random.split(jax.random.key(0), 2))
    batch = _batch_from([1, 2, 3], [0, 5, 2], [1.0, 0.0, -1.0], [2, 3, 4], [False, False, True])
    new_states, metrics, _ = jax.jit(jax.vmap(dqn.update, in_axes=(0, None)))(states, batch)
    assert metrics["loss"].shape == (2,)
    kernel = new_states.params["params"]["Dense_0"]["kernel"]
    assert kernel.shape == (2, 128, 16) and not np.allclose(kernel[0], kernel[1])
    single, _, _ = dqn.update(jax.tree.map(lambda x: x[1], states), batch)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[1], b, rtol=1e-5, atol=1e-6), new_states, single)


def test_bad_hyper_parameters():
    with pytest.raises(ValueError, match="gamma"):
        make_dqn(small_config(gamma=1.5), 6)
    with pytest.raises(ValueError, match="num_actions"):
        make_dqn(small_config(), 0)
    with pytest.raises(ValueError, match="tau"):
        make_dqn(small_config(tau=0.0), 6)
    with pytest.raises(ValueError, match="target_update_period"):
        make_dqn(small_config(target_update_period=0), 6)
    with pytest.raises(ValueError, match="learning_rate_end"):
        make_dqn(small_config(learning_rate_end=-1e-3), 6)
    with pytest.raises(ValueError, match="learning_rate_decay_steps"):
        make_dqn(small_config(learning_rate_end=0.0, learning_rate_decay_steps=0), 6)
