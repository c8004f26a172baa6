"""The frame store (jaxrl.dqn.buffers.frames): stacks rebuilt from references equal the stacks the env gave, on
random streams with resets, through the replay buffer and n-step windows at the ring's tightest size, and in the
learner's buffer."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl.dqn.buffers import frames_per_env_for, make_frame_store, make_nstep, make_replay_buffer
from jaxrl.dqn.buffers.replay import Transition
from jaxrl.dqn.envs import frame_stack
from jaxrl.dqn.learner import as_observed, make_learner

from conftest import SMALL_AGENT, FakeVecEnv, small_config


def stacked_stream(rng, num_envs, num_frames, frame_size, calls, reset_probability):
    """(stacked obs [N, K * D], reset [N]) per call, from the env wrappers' own stacking
    (`jaxrl.dqn.envs.frame_stack`); call 0 is every env's first reset. Resets never come twice in a row."""
    raw = rng.integers(0, 256, (num_envs, frame_size), dtype=np.uint8)
    history = frame_stack.init(raw, num_frames)
    out = [(frame_stack.flatten(history), np.ones(num_envs, bool))]
    reset = np.zeros(num_envs, bool)
    for _ in range(calls):
        reset = ~reset & (rng.random(num_envs) < reset_probability)
        raw = rng.integers(0, 256, (num_envs, frame_size), dtype=np.uint8)
        history = frame_stack.update(history, raw, reset)
        out.append((frame_stack.flatten(history), reset.copy()))
    return out


@pytest.mark.parametrize("num_frames", [2, 3, 5])
def test_gather_rebuilds_the_envs_stacks(num_frames):
    stream = stacked_stream(np.random.default_rng(num_frames), 3, num_frames, 4, calls=60, reset_probability=0.2)
    store = make_frame_store(3, num_frames, frames_per_env=num_frames + 1, frame_size=4)
    push, gather = jax.jit(store.push), jax.jit(store.gather)
    state, refs = store.init(jnp.asarray(stream[0][0]))
    np.testing.assert_array_equal(gather(state, refs), stream[0][0])
    for obs, reset in stream[1:]:  # a ring of K + 1 frames wraps many times: the newest stacks stay readable
        state, refs = push(state, jnp.asarray(obs), jnp.asarray(reset))
        np.testing.assert_array_equal(gather(state, refs), obs)
        assert refs.dtype == jnp.int32 and refs.shape == (3, 3)


@pytest.mark.parametrize("n_step", [1, 3])
def test_every_row_in_the_buffer_stays_readable(n_step):
    """Two pipelines fed the same stream (rows of stacks, rows of references) at the ring length of
    `frames_per_env_for`, with episodes as short as one step (the bound's worst case): the buffers hold the same
    rows, row for row, at every call."""
    num_envs, num_frames, capacity = 3, 3, 20
    stream = stacked_stream(np.random.default_rng(n_step), num_envs, num_frames, 4, calls=120, reset_probability=0.6)
    store = make_frame_store(num_envs, num_frames, frames_per_env_for(capacity, num_envs, num_frames, n_step), 4)
    buffer = make_replay_buffer(capacity, batch_size=4)
    nstep = make_nstep(num_envs, n_step, gamma=0.9)

    def example(obs):
        return Transition(obs, jnp.zeros((), jnp.int32), jnp.zeros(()), obs, jnp.zeros((), bool),
                          jnp.zeros(()) if n_step > 1 else None)

    def add(replay, windows, obs_tm1, obs_t, action, reward, terminal, end, valid):
        if n_step == 1:
            return buffer.add(replay, Transition(obs_tm1, action, reward, obs_t, terminal), valid), windows
        windows, rows, mask = nstep.update(windows, obs_tm1, action, reward, obs_t, terminal, end, valid)
        return buffer.add(replay, rows, mask), windows

    add, push, gather = jax.jit(add), jax.jit(store.push), jax.jit(store.gather)
    stacks, refs = jnp.asarray(stream[0][0]), None
    frames, refs = store.init(stacks)
    plain = buffer.init(example(stacks[0])), nstep.init(stacks[0])
    referenced = buffer.init(example(refs[0])), nstep.init(refs[0])
    rng = np.random.default_rng(0)
    for call, (obs, reset) in enumerate(stream[1:], 1):
        obs = jnp.asarray(obs)
        following_reset = np.asarray(stream[call + 1][1]) if call + 1 < len(stream) else np.zeros(num_envs, bool)
        valid = jnp.asarray(~reset)  # the reset obs is not a transition's next obs
        end = jnp.asarray(following_reset)  # the episode ends where the next call resets
        terminal = end & jnp.asarray(rng.random(num_envs) < 0.5)
        action, reward = jnp.asarray(rng.integers(0, 4, num_envs)), jnp.asarray(rng.random(num_envs), jnp.float32)
        frames, refs_t = push(frames, obs, jnp.asarray(reset))
        plain = add(*plain, stacks, obs, action, reward, terminal, end, valid)
        referenced = add(*referenced, refs, refs_t, action, reward, terminal, end, valid)
        stacks, refs = obs, refs_t
        assert int(plain[0].size) == int(referenced[0].size)
        size = int(plain[0].size)
        rows = jax.tree.map(lambda x: x[:size], referenced[0].data)
        np.testing.assert_array_equal(gather(frames, rows.obs), plain[0].data.obs[:size])
        np.testing.assert_array_equal(gather(frames, rows.next_obs), plain[0].data.next_obs[:size])
    assert int(plain[0].size) == capacity  # the ring of rows wrapped


def run_stacked(learner, env, num_frames, calls):
    """``calls`` jitted learner steps on ``env`` (a FakeVecEnv) observed through frame stacking: the final state,
    the last call's metrics, and the (obs_tm1, obs_t) stacks of every valid transition, in call order."""
    history = frame_stack.init(env.reset(), num_frames)
    state, actions = jax.jit(learner.init)(jax.random.key(0), jnp.asarray(frame_stack.flatten(history)))
    step, ended, pairs = jax.jit(learner.step), np.zeros(env.n, bool), []
    for _ in range(calls):
        raw, reward, terminated, truncated = env.step(np.asarray(actions))
        obs_tm1 = frame_stack.flatten(history)
        history = frame_stack.update(history, raw, ended)
        obs_t = frame_stack.flatten(history)
        pairs += [(obs_tm1[i], obs_t[i]) for i in range(env.n) if not ended[i]]
        ended = terminated | truncated
        state, actions, metrics = step(state, jnp.asarray(obs_t), reward, terminated, truncated)
    return state, metrics, pairs


def test_learner_rows_rebuild_to_the_observed_transitions():
    """The DQN learner with frame_stack 3 stores references; rebuilt, its rows are exactly the (obs_tm1, obs_t)
    pairs of the valid calls, in order, and the buffer takes 2 * 3 int32 a row instead of 2 * 384 bytes."""
    learner = make_learner(small_config(3, frame_stack=3, learning_starts=8, **SMALL_AGENT), 3)
    state, metrics, pairs = run_stacked(learner, FakeVecEnv([2, 1, 4]), 3, calls=40)
    assert state.replay.data.obs.shape == (SMALL_AGENT["buffer_size"], 3)
    assert state.replay.data.obs.dtype == jnp.int32
    size = int(state.replay.size)
    assert size == len(pairs) and int(metrics["num_updates"]) > 0
    rows = as_observed(jax.tree.map(lambda x: x[:size], state.replay.data), state.frames,
                       bound=learner.step.keywords["bound"])
    np.testing.assert_array_equal(rows.obs, np.stack([p[0] for p in pairs]))
    np.testing.assert_array_equal(rows.next_obs, np.stack([p[1] for p in pairs]))


@pytest.mark.parametrize("extra", [dict(n_step=1), dict(n_step=3, prioritized_replay=True)], ids=["1-step", "3-step-per"])
def test_references_and_stacks_train_the_same_agent(extra):
    """``replay_frames`` changes how rows are stored, not what is learned: the same updates, bit for bit."""
    config = small_config(3, frame_stack=2, learning_starts=8, update_every=1, **extra, **SMALL_AGENT)
    states = [run_stacked(make_learner(config.replace(replay_frames=on), 3), FakeVecEnv([2, 1, 4]), 2, calls=30)[0]
              for on in (True, False)]
    rows = [state.replay.replay.data if extra.get("prioritized_replay") else state.replay.data for state in states]
    assert rows[0].obs.shape == (SMALL_AGENT["buffer_size"], 3)
    assert rows[1].obs.shape == (SMALL_AGENT["buffer_size"], 2 * 128) and states[1].frames is None
    assert int(states[0].dqn.num_updates) == int(states[1].dqn.num_updates) > 0
    jax.tree.map(np.testing.assert_array_equal, states[0].dqn, states[1].dqn)


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="frames_per_env"):
        make_frame_store(2, 4, frames_per_env=3)
    with pytest.raises(ValueError, match="num_frames"):
        make_frame_store(2, 0, frames_per_env=3)
