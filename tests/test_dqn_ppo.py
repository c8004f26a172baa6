"""jaxrl.dqn.ppo and its on-policy machinery (jaxrl.dqn.on_policy): GAE, the masked PPO loss, rollout bookkeeping,
learning on the toy env; the command line of experiments/train_on_policy.py (errors, evaluation milestones, saved
parameters, play)."""
import json
import runpy
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import one_hot_step_toy_env
from jaxrl.dqn import on_policy, ppo
from jaxrl.dqn.envs.toy import make_toy_env
from jaxrl.dqn.run.on_policy import train

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "train_on_policy.py"


def _rollout(values, rewards, dones, valid=None):
    values = jnp.asarray(values, jnp.float32)[:, None]
    t = values.shape[0]
    return on_policy.Rollout(
        obs=jnp.zeros((t, 1, 128), jnp.uint8), action=jnp.zeros((t, 1), jnp.int32),
        log_prob=jnp.zeros((t, 1)), value=values, reward=jnp.asarray(rewards, jnp.float32)[:, None],
        done=jnp.asarray(dones)[:, None],
        valid=jnp.ones((t, 1), bool) if valid is None else jnp.asarray(valid)[:, None])


def test_gae_by_hand_stops_at_done():
    gamma, lam = 0.9, 0.5
    rollout = _rollout([1.0, 2.0, 3.0], [1.0, 0.0, 2.0], [False, True, False])
    advantages, returns = ppo.gae(rollout, jnp.asarray([4.0]), gamma, lam)
    d2 = 2.0 + gamma * 4.0 - 3.0  # bootstraps from the last value
    d1 = 0.0 - 2.0  # done: no bootstrap
    d0 = 1.0 + gamma * 2.0 - 1.0
    a2, a1 = d2, d1  # the done step does not see step 2's advantage
    a0 = d0 + gamma * lam * a1
    np.testing.assert_allclose(advantages[:, 0], [a0, a1, a2], rtol=1e-6)
    np.testing.assert_allclose(returns[:, 0], [a0 + 1.0, a1 + 2.0, a2 + 3.0], rtol=1e-6)


def test_loss_ignores_invalid_rows_and_is_entropy_only_at_the_start():
    network = ppo.ActorCritic(4, (8,))
    obs = jax.random.randint(jax.random.key(0), (6, 128), 0, 256).astype(jnp.uint8)
    params = network.init(jax.random.key(1), obs)
    logits, value = network.apply(params, obs)
    action = jnp.arange(6) % 4
    log_prob = jax.nn.log_softmax(logits)[jnp.arange(6), action]
    valid = jnp.asarray([True, True, False, True, True, False])
    batch = on_policy.Rollout(obs, action, log_prob, value, jnp.zeros(6), jnp.zeros(6, bool), valid)
    advantages = jnp.asarray([1.0, -1.0, 50.0, 2.0, -2.0, -70.0])
    kwargs = dict(clip=0.1, ent_coef=0.01, vf_coef=0.5)
    loss, (policy_loss, value_loss, entropy) = ppo.ppo_loss(params, network.apply, batch, advantages, value,
                                                            **kwargs)
    # ratio 1 and normalised advantages (mean 0 over valid rows): no policy term; value == returns: no value term
    assert abs(float(policy_loss)) < 1e-6 and abs(float(value_loss)) < 1e-12
    np.testing.assert_allclose(float(loss), -0.01 * float(entropy), rtol=1e-5)
    changed = advantages.at[2].set(-3.0).at[5].set(9.0)
    other = ppo.ppo_loss(params, network.apply, batch, changed, value + jnp.where(valid, 0.0, 5.0), **kwargs)[0]
    np.testing.assert_allclose(float(other), float(loss), rtol=1e-6)


def _args(**overrides):
    settings = dict(num_envs=4, num_steps=16, num_minibatches=2, hidden_sizes=(32,), log_every=1)
    return ppo.PPOConfig(**{**settings, **overrides})


def test_rollout_masks_auto_reset_rows_and_counts_games():
    lengths = [2, 3, 4, 5]  # even env ids end terminated, odd truncated
    env = make_toy_env(4, num_actions=3, lengths=lengths)
    agent = ppo.make_ppo(env, _args(total_steps=64))
    _, rollout, finished = agent.collect(agent.init(jax.random.key(0)))
    finished = np.asarray(finished)  # [16, 4]
    assert rollout.obs.shape == (16, 4, 128) and rollout.valid.shape == (16, 4)
    for i, length in enumerate(lengths):
        # an episode of L steps, then one auto-reset row: games end at steps L-1, 2L, 3L+1, ...
        ends = np.arange(length - 1, 16, length + 1)
        np.testing.assert_array_equal(np.flatnonzero(~np.isnan(finished[:, i])), ends)
        np.testing.assert_array_equal(np.flatnonzero(rollout.done[:, i]), ends)
        resets = ends + 1
        np.testing.assert_array_equal(np.flatnonzero(~rollout.valid[:, i]), resets[resets < 16])
        # a game's return is the sum of its rows' rewards (toy rewards are 0 / 1: clipping keeps them)
        starts = np.concatenate([[0], resets[:-1]])
        for start, end in zip(starts, ends):
            np.testing.assert_allclose(finished[end, i], np.sum(rollout.reward[start:end + 1, i]))


def test_learns_the_toy_task():
    """Reward 1 when action == t in 4-step games with 4 actions: random gets 1 per game, PPO should get 4."""
    env = one_hot_step_toy_env(8, num_actions=4, length=4)
    args = _args(total_steps=8 * 16 * 60, learning_rate=3e-3, log_every=1, num_envs=8)
    algo = ppo.make_ppo(env, args)
    params, rows = train(algo, env, jax.random.key(0), num_steps=args.num_steps, log_every=1,
                         loss_names=("loss", "policy_loss", "value_loss", "entropy"), log=lambda _: None)
    assert rows[0]["mean_return_100"] < 2.0, rows[0]  # the first rollout: the initial, near-uniform policy
    assert rows[-1]["mean_return_100"] >= 3.8, rows[-1]
    assert set(rows[-1]) >= {"policy_loss", "value_loss", "entropy", "steps_per_s"}
    returns = on_policy.evaluate(ppo.act(algo.network, greedy=True), params, env, jax.random.key(0), max_steps=20)
    np.testing.assert_array_equal(returns, 4.0)


def test_epsilon_greedy_policy_explores_uniformly_at_epsilon():
    """act(greedy, epsilon) is the DQN evaluation's policy: argmax, else a uniform action with probability epsilon."""
    network = ppo.ActorCritic(4, (8,), "scale", ())
    obs = jnp.zeros((4000, 128), jnp.uint8)
    params = network.init(jax.random.key(0), obs[:1])
    greedy = ppo.act(network, greedy=True)(params, obs, jax.random.key(1))
    for epsilon in (0.05, 1.0):
        actions = np.asarray(ppo.act(network, greedy=True, epsilon=epsilon)(params, obs, jax.random.key(1)))
        changed = np.mean(actions != np.asarray(greedy))  # a random pick equals the greedy one 1 time in 4
        np.testing.assert_allclose(changed, 0.75 * epsilon, atol=0.02)
    assert np.all(np.bincount(actions, minlength=4) > 900)  # epsilon 1: every action about a quarter of the time
    with pytest.raises(ValueError, match="greedy=True"):
        ppo.act(network, greedy=False, epsilon=0.05)


@pytest.mark.parametrize("argv", [
    ["--num-envs", "3", "--num-steps", "5", "--num-minibatches", "4"], ["--total-steps", "0"], ["--gamma", "1.5"],
    ["--gae-lambda", "-0.1"], ["--learning-rate", "0"], ["--clip", "-1"], ["--ent-coef", "-0.01"],
    ["--hidden-sizes", "64", "0"], ["--conv-strides", "2"], ["--conv-strides", "0", "2"],
])
def test_bad_arguments(argv, capsys):
    parse_args = runpy.run_path(str(SCRIPT))["parse_args"]  # the script's globals; its main() does not run
    with pytest.raises(SystemExit):
        parse_args(["ppo", *argv])
    flag = next(a for a in argv if a.startswith("--") and a != "--num-steps" and a != "--num-envs")
    assert flag in capsys.readouterr().err


@pytest.mark.parametrize("overrides, field", [
    (dict(num_envs=3, num_steps=5, num_minibatches=4), "num_minibatches"), (dict(gamma=1.5), "gamma"),
    (dict(hidden_sizes=(64, 0)), "hidden_sizes"), (dict(obs_encoding="objects"), "frame_stack"),
    (dict(obs_encoding="pixels"), "obs_encoding"), (dict(conv_channels=(16, 32, 32)), "conv_strides"),
])
def test_config_names_the_bad_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        ppo.PPOConfig(**overrides)
    assert ppo.as_flags(f"{field} is bad") == f"--{field.replace('_', '-')} is bad"


def test_obs_encoding_bits_reads_eight_inputs_per_byte():
    env = make_toy_env(4, num_actions=3, lengths=[2, 3, 4, 5])
    agent = ppo.make_ppo(env, _args(total_steps=64, obs_encoding="bits"))
    state = agent.init(jax.random.key(0))
    assert state.params["params"]["Dense_0"]["kernel"].shape == (8 * 128, 32)
    state, finished, losses = agent.iteration(state)
    assert all(np.isfinite(float(loss)) for loss in losses)


def test_spatial_encoding_takes_the_conv_flags_and_encodes_each_rollout_once():
    """PPO on ego-planes with the Q-network's conv settings (strides, LayerNorm): the layers they describe, and the
    updates' loss on the rollout encoded once equals the loss on the RAM (what the network reads when acting)."""
    from jaxrl.dqn.encoders import encode
    from jaxrl.dqn.envs.frame_stack import stack_xla_env

    env = stack_xla_env(make_toy_env(4, num_actions=3, lengths=[2, 3, 4, 5]), 3)
    config = _args(total_steps=64, obs_encoding="ego-planes", frame_stack=3, conv_channels=(8, 4),
                   conv_strides=(2, 1), conv_layer_norm=True)
    agent = ppo.make_ppo(env, config)
    state = agent.init(jax.random.key(0))
    layers = state.params["params"]
    assert layers["Conv_0"]["kernel"].shape == (3, 3, 14, 8) and layers["Conv_1"]["kernel"].shape == (3, 3, 8, 4)
    assert "ConvLayerNorm_0" in layers and "ConvLayerNorm_1" in layers
    assert layers["Dense_0"]["kernel"].shape == (10 * 20 * 4, 32)  # 19 x 39 -> 10 x 20 (stride 2) -> 10 x 20
    obs = jax.random.randint(jax.random.key(1), (16, 3 * 128), 0, 256).astype(jnp.uint8)
    batch = on_policy.Rollout(obs, jnp.arange(16) % 3, jnp.full(16, -1.1), jnp.zeros(16), jnp.zeros(16),
                              jnp.zeros(16, bool), jnp.arange(16) % 5 > 0)
    advantages = jax.random.normal(jax.random.key(2), (16,))
    kwargs = dict(clip=0.1, ent_coef=0.01, vf_coef=0.5)
    returns = batch.value + 1.0
    # compiled: the game decoder run op by op costs seconds
    on_ram = jax.jit(lambda b: ppo.ppo_loss(state.params, agent.network.apply, b, advantages, returns,
                                            **kwargs))(batch)
    encoded_apply = agent.network.clone(encoded_input=True).apply
    on_encoded = jax.jit(lambda b: ppo.ppo_loss(state.params, encoded_apply,
                                                b._replace(obs=encode(b.obs, "ego-planes")), advantages, returns,
                                                **kwargs))(batch)
    np.testing.assert_allclose(np.asarray(jax.tree.leaves(on_encoded)), np.asarray(jax.tree.leaves(on_ram)),
                               rtol=1e-5, atol=1e-6)
    state, finished, losses = agent.iteration(state)
    assert all(np.isfinite(float(loss)) for loss in losses)


def test_milestones_evaluate_the_parameters_once_each():
    env = make_toy_env(4, num_actions=3)
    algo = ppo.make_ppo(env, ppo.PPOConfig(num_envs=4, num_steps=8, num_minibatches=2, epochs=1, hidden_sizes=(8,),
                                           total_steps=4 * 8 * 5))
    seen = []
    _, rows = train(algo, env, jax.random.key(0), num_steps=8, log_every=2,
                    loss_names=("loss", "policy_loss", "value_loss", "entropy"), milestones=(40, 64, 65, 70),
                    at_milestone=lambda steps, params: seen.append(steps), log=lambda _: None)
    assert seen == [64, 96]  # 40 and 64 reached together after iteration 2; 65 and 70 after iteration 3
    assert [row["iteration"] for row in rows] == [2, 4, 5]


@pytest.mark.parametrize("argv, flag", [
    (["--total-frames", "2"], "--total-frames"), (["--total-frames", "400", "--total-steps", "100"], "--total-steps"),
    (["--eval-at-frames", "0"], "--eval-at-frames"), (["--eval-episodes", "0"], "--eval-episodes"),
])
def test_bad_run_arguments(argv, flag, capsys):
    parse_args = runpy.run_path(str(SCRIPT))["parse_args"]
    with pytest.raises(SystemExit):
        parse_args(["ppo", *argv])
    assert flag in capsys.readouterr().err


def test_eval_needs_episodes(capsys):
    parse_args = runpy.run_path(str(SCRIPT))["parse_args"]
    with pytest.raises(SystemExit):
        parse_args(["eval", "some-run", "--episodes", "0"])
    assert "--episodes must be >= 1" in capsys.readouterr().err


def test_existing_out_is_refused_untouched(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "evals.csv").write_text("kept")
    parse_args = runpy.run_path(str(SCRIPT))["parse_args"]
    with pytest.raises(SystemExit):
        parse_args(["ppo", "--out", str(out)])
    assert "exists" in capsys.readouterr().err and (out / "evals.csv").read_text() == "kept"


def test_script_trains_evaluates_saves_and_plays_on_space_invaders(tmp_path, capsys, monkeypatch):
    pytest.importorskip("envpool", reason="the script steps envpool's SpaceInvaders (its pieces are tested on the "
                                          "toy env above)")
    monkeypatch.chdir(tmp_path)
    out = Path("run")  # relative, as typed on a command line
    main = runpy.run_path(str(SCRIPT))["main"]
    main(["ppo", "--num-envs", "4", "--num-steps", "16", "--total-frames", "1024", "--eval-at-frames", "512",
          "--eval-episodes", "2", "--hidden-sizes", "16", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "eval at 512 frames (sampled, 2 games)" in printed and "eval at 1,024 frames (greedy" in printed
    assert "eval at 1,024 frames (greedy-eps0.05, 2 games)" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["algo"] == "ppo" and config["total_steps"] == 256
    evals = (out / "evals.csv").read_text().splitlines()
    assert evals[0] == "frames,policy,episodes,mean,std,min,max" and len(evals) == 1 + 2 * 3
    # a saved point is scored again on envs of another seed
    main(["eval", str(out), "--frames", "512", "--episodes", "2", "--seed", "7"])
    printed = capsys.readouterr().out
    assert "ppo agent at 512 frames, envs seeded 7" in printed and "(greedy-eps0.05, 2 games)" in printed
    # the saved agent plays (rendered by the DQN agent's player); a point that was not saved is refused by name
    main(["play", str(out), "--video", "ppo.gif", "--max-steps", "5"])
    assert "ppo agent at 1,024 frames" in capsys.readouterr().out and (tmp_path / "ppo.gif").stat().st_size > 0
    with pytest.raises(SystemExit, match=r"saved: \[512, 1024\]"):
        main(["play", str(out), "--video", str(tmp_path / "x.gif"), "--frames", "700"])
