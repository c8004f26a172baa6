"""jaxrl.dqn.pqn: Q(lambda) returns by hand, the masked loss, epsilon-greedy rollouts, learning on the toy env, the
planes CNN, evaluation checkpoints of a run, and experiments/train_on_policy.py pqn on envpool's SpaceInvaders."""
import json
import runpy
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import one_hot_step_toy_env
from jaxrl.dqn import on_policy, pqn
from jaxrl.dqn.envs.toy import make_toy_env
from jaxrl.dqn.run.on_policy import train

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "train_on_policy.py"


def _rollout(values, rewards, dones):
    t = len(values)
    return on_policy.Rollout(
        obs=jnp.zeros((t, 1, 128), jnp.uint8), action=jnp.zeros((t, 1), jnp.int32), log_prob=jnp.zeros((t, 1)),
        value=jnp.asarray(values, jnp.float32)[:, None], reward=jnp.asarray(rewards, jnp.float32)[:, None],
        done=jnp.asarray(dones)[:, None], valid=jnp.ones((t, 1), bool))


def test_q_lambda_returns_by_hand():
    gamma, lam = 0.9, 0.5
    # value[t] = max_a Q(s_t); the last value bootstraps step 3; step 1 ends a life / game: no bootstrap past it
    rollout = _rollout([10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 0.0, 1.0], [False, True, False, False])
    last = jnp.asarray([50.0])
    g3 = 1.0 + gamma * 50.0
    g2 = 0.0 + gamma * ((1 - lam) * 40.0 + lam * g3)
    g1 = 2.0  # done
    g0 = 1.0 + gamma * ((1 - lam) * 20.0 + lam * g1)
    np.testing.assert_allclose(pqn.q_lambda_returns(rollout, last, gamma, lam)[:, 0], [g0, g1, g2, g3], rtol=1e-6)
    # lambda 0: one-step Q-learning targets; lambda 1: discounted returns to the done / the bootstrap
    np.testing.assert_allclose(pqn.q_lambda_returns(rollout, last, gamma, 0.0)[:, 0],
                               [1.0 + gamma * 20.0, 2.0, gamma * 40.0, 1.0 + gamma * 50.0], rtol=1e-6)
    np.testing.assert_allclose(pqn.q_lambda_returns(rollout, last, gamma, 1.0)[:, 0],
                               [1.0 + gamma * 2.0, 2.0, gamma * (1.0 + gamma * 50.0), 1.0 + gamma * 50.0], rtol=1e-6)


def test_loss_is_the_masked_squared_error_of_the_taken_action():
    network = pqn.q_network(pqn.PQNConfig(hidden_sizes=(8,)), 3)
    obs = jax.random.randint(jax.random.key(0), (5, 128), 0, 256).astype(jnp.uint8)
    params = network.init(jax.random.key(1), obs)
    q = network.apply(params, obs)
    action = jnp.asarray([0, 1, 2, 1, 0])
    valid = jnp.asarray([True, False, True, True, False])
    batch = on_policy.Rollout(obs, action, jnp.zeros(5), jnp.zeros(5), jnp.zeros(5), jnp.zeros(5, bool), valid)
    returns = jnp.asarray([1.0, 99.0, -1.0, 0.5, -99.0])
    loss, (q_taken,) = pqn.pqn_loss(params, network.apply, batch, returns)
    taken = np.asarray(q)[np.arange(5), np.asarray(action)]
    keep = np.asarray(valid)
    np.testing.assert_allclose(float(loss), 0.5 * np.mean((taken[keep] - np.asarray(returns)[keep]) ** 2), rtol=1e-5)
    np.testing.assert_allclose(float(q_taken), taken[keep].mean(), rtol=1e-5)
    # the network is the DQN agent's QNetwork with LayerNorm: its parameters act and evaluate as a DQN agent's
    assert "LayerNorm_0" in params["params"]


def _config(**overrides):
    settings = dict(num_envs=8, num_steps=16, num_minibatches=4, epochs=2, hidden_sizes=(32,), log_every=1)
    return pqn.PQNConfig(**{**settings, **overrides})


def test_rollout_explores_at_epsilon_one_and_counts_env_steps():
    env = make_toy_env(8, num_actions=4, lengths=[5] * 8)
    algo = pqn.make_pqn(env, _config(total_steps=8 * 16 * 100, epsilon_start=1.0, exploration_fraction=1.0))
    state, rollout, finished = algo.collect(algo.init(jax.random.key(0)))
    assert int(state.env_steps) == 8 * 16
    counts = np.bincount(np.asarray(rollout.action).ravel(), minlength=4)
    assert counts.min() > 0.15 * counts.sum(), counts  # uniform actions at epsilon ~1
    q = algo.network.apply(state.params, rollout.obs)
    np.testing.assert_allclose(rollout.value, q.max(-1), rtol=1e-5, atol=1e-6)  # the bootstrap values
    assert rollout.obs.shape == (16, 8, 128) and not bool(jnp.all(rollout.valid))


def test_learns_the_toy_task():
    """Reward 1 when action == t in 4-step games with 4 actions: random play gets 1 per game, PQN must get 4."""
    env = one_hot_step_toy_env(8, num_actions=4, length=4)
    config = _config(total_steps=8 * 16 * 80, learning_rate=3e-3, exploration_fraction=0.3, epsilon_end=0.0)
    algo = pqn.make_pqn(env, config)
    params, rows = train(algo, env, jax.random.key(0), num_steps=config.num_steps, log_every=1,
                         loss_names=("loss", "q_taken"), log=lambda _: None)
    assert rows[0]["mean_return_100"] < 2.0, rows[0]
    returns = on_policy.evaluate(pqn.act(algo.network, epsilon=0.0), params, env, jax.random.key(1), max_steps=20)
    np.testing.assert_array_equal(returns, 4.0)
    # the Q-values have learned the discounted reward-to-go of the optimal play: 1 + gamma + ... at t = 0
    q0 = algo.network.apply(params, env.reset()[1])[:, 0]
    np.testing.assert_allclose(q0, sum(0.99 ** k for k in range(4)), atol=0.4)


def test_milestones_evaluate_the_parameters_once_each():
    env = make_toy_env(4, num_actions=3)
    config = _config(num_envs=4, num_steps=8, total_steps=4 * 8 * 5, log_every=2)
    algo = pqn.make_pqn(env, config)
    seen = []
    _, rows = train(algo, env, jax.random.key(0), num_steps=8, log_every=2, loss_names=("loss", "q_taken"),
                    milestones=(40, 64, 65, 70), at_milestone=lambda steps, params: seen.append(steps),
                    log=lambda _: None)
    assert seen == [64, 96]  # 40 and 64 reached together after iteration 2; 65 and 70 after iteration 3
    assert [row["iteration"] for row in rows] == [2, 4, 5]


def test_planes_cnn_shapes_and_an_iteration():
    from jaxrl.dqn.envs.frame_stack import stack_xla_env

    env = stack_xla_env(make_toy_env(4, num_actions=6), 2)
    algo = pqn.make_pqn(env, _config(num_envs=4, num_steps=8, total_steps=64, obs_encoding="planes", frame_stack=2,
                                     conv_channels=(4, 8)))
    state = algo.init(jax.random.key(0))
    assert state.params["params"]["Conv_0"]["kernel"].shape == (3, 3, 6, 4)
    state, finished, (loss, q_taken) = algo.iteration(state)
    assert np.isfinite(float(loss)) and np.isfinite(float(q_taken))


@pytest.mark.parametrize("argv, flag", [
    (["--q-lambda", "1.5"], "--q-lambda"), (["--epsilon-end", "-0.1"], "--epsilon-end"),
    (["--exploration-fraction", "0"], "--exploration-fraction"), (["--eval-epsilon", "2"], "--eval-epsilon"),
    (["--total-frames", "2"], "--total-frames"), (["--total-frames", "400", "--total-steps", "100"], "--total-steps"),
    (["--eval-at-frames", "0"], "--eval-at-frames"), (["--obs-encoding", "planes"], "--frame-stack"),
])
def test_bad_arguments(argv, flag, capsys):
    parse_args = runpy.run_path(str(SCRIPT))["parse_args"]
    with pytest.raises(SystemExit):
        parse_args(["pqn", *argv])
    assert flag in capsys.readouterr().err


def test_existing_out_is_refused_untouched(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "evals.csv").write_text("kept")
    parse_args = runpy.run_path(str(SCRIPT))["parse_args"]
    with pytest.raises(SystemExit):
        parse_args(["pqn", "--out", str(out)])
    assert "exists" in capsys.readouterr().err and (out / "evals.csv").read_text() == "kept"


def test_script_trains_evaluates_and_saves_on_space_invaders(tmp_path, capsys, monkeypatch):
    pytest.importorskip("envpool", reason="the script steps envpool's SpaceInvaders (tested without it above)")
    import orbax.checkpoint as ocp

    monkeypatch.chdir(tmp_path)
    out = Path("run")  # relative, as typed on a command line
    # the MLP on RAM / 255 (the planes CNN is tested on the toy env above): the command line's plumbing at the
    # least compile time
    runpy.run_path(str(SCRIPT))["main"](["pqn", "--num-envs", "4", "--num-steps", "16", "--total-frames", "1024",
                                         "--eval-at-frames", "512", "--eval-episodes", "2", "--hidden-sizes", "16",
                                         "--out", str(out)])
    printed = capsys.readouterr().out
    assert "eval at 512 frames (epsilon 0.05, 2 games)" in printed and "eval at 1,024 frames" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["algo"] == "pqn" and config["total_steps"] == 256
    evals = (out / "evals.csv").read_text().splitlines()
    assert evals[0] == "frames,policy,episodes,mean,std,min,max" and len(evals) == 3
    network = pqn.q_network(pqn.PQNConfig(**{k: v for k, v in config.items() if k != "algo"}), 6)
    abstract = jax.eval_shape(network.init, jax.random.key(0), jnp.zeros((1, 128), jnp.uint8))
    params = ocp.StandardCheckpointer().restore((out / "params-1024").resolve(), abstract)
    assert network.apply(params, jnp.zeros((2, 128), jnp.uint8)).shape == (2, 6)
    # the saved agent plays (rendered by the DQN agent's player); a point that was not saved is refused by name
    main = runpy.run_path(str(SCRIPT))["main"]
    main(["play", str(out), "--video", "pqn.gif", "--max-steps", "5"])
    assert "pqn agent at 1,024 frames" in capsys.readouterr().out and (tmp_path / "pqn.gif").stat().st_size > 0
    with pytest.raises(SystemExit, match=r"saved: \[512, 1024\]"):
        main(["play", str(out), "--video", str(tmp_path / "x.gif"), "--frames", "700"])
