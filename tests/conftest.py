"""Settings for the whole test session.

The persistent XLA compilation cache (jaxrl.compilation_cache) is on for the session, in a fresh temporary
folder made by the first pytest process (the xdist workers and the `jaxrl` subprocesses of the tests inherit
it through JAXRL_COMPILATION_CACHE_DIR) and removed when that process exits: the many tests that compile the
same learner again (a run, then its resume; each loop of a comparison) load the executable instead. Nothing is
written under ~/.cache and no run of the suite reads another's cache. JAXRL_COMPILATION_CACHE=0 turns it off.
tests/test_compilation_cache.py sets its own folders.

Also the helpers several test files share (import them with ``from conftest import ...``): small configs, a
fake vectorised env with next-step auto-reset, replay rows that encode their id, and the run-directory
helpers of the end-to-end training tests.
"""
import atexit
import csv
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl import compilation_cache
from jaxrl.dqn.buffers.replay import Transition


def _session_compilation_cache():
    """Point JAXRL_COMPILATION_CACHE_DIR at a fresh folder (first process only) and turn the cache on."""
    if compilation_cache.is_enabled() and "PYTEST_XDIST_WORKER" not in os.environ:
        folder = tempfile.mkdtemp(prefix="jaxrl-test-xla-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ[compilation_cache.DIR_VARIABLE] = folder
    if compilation_cache.DIR_VARIABLE in os.environ:
        compilation_cache.enable()


_session_compilation_cache()

HAS_ENVPOOL = importlib.util.find_spec("envpool") is not None
FAST_BACKEND = "envpool" if HAS_ENVPOOL else "gymnasium"
SMALL_AGENT = dict(buffer_size=256, batch_size=8, hidden_sizes=(16,), epsilon_decay_steps=100)


# -- agent and learner --------------------------------------------------------------------------------------
def small_config(num_envs: int = 1, **overrides):
    """A DQNConfig for unit tests of the agent and the learner: ``num_envs`` envs, one update phase every 4th
    learner call and a hard target sync every 2,000 updates unless ``overrides`` say otherwise."""
    from jaxrl.dqn.config import DQNConfig

    return DQNConfig(**{"num_envs": num_envs, "update_every": 4, "target_update_period": 2_000, **overrides})



def transition_example():
    """One all-zero transition of 128-byte observations (the buffers' ``init`` example)."""
    return Transition(
        obs=jnp.zeros((128,), jnp.uint8),
        action=jnp.zeros((), jnp.int32),
        reward=jnp.zeros((), jnp.float32),
        next_obs=jnp.zeros((128,), jnp.uint8),
        terminated=jnp.zeros((), bool),
    )


def transition_batch(ids):
    """Transitions whose every field encodes an integer id, so rows can be identified after a round trip."""
    ids = np.asarray(ids)
    return Transition(
        obs=jnp.asarray(np.repeat((ids % 256)[:, None], 128, axis=1).astype(np.uint8)),
        action=jnp.asarray(ids, jnp.int32),
        reward=jnp.asarray(ids, jnp.float32),
        next_obs=jnp.asarray(np.repeat(((ids + 1) % 256)[:, None], 128, axis=1).astype(np.uint8)),
        terminated=jnp.asarray(ids % 2 == 0),
    )


class FakeVecEnv:
    """N envs; env i's episodes last `lengths[i]` steps, then end terminated (even i) or truncated (odd i).

    RAM byte 0 = env id, byte 1 = step within episode, byte 2 = episode count (mod 256). Reward = 1 + action.
    Next-step auto-reset: the call after an episode ends returns the reset obs, reward 0, and ignores the action.
    """

    def __init__(self, lengths):
        self.lengths = np.asarray(lengths)
        self.n = len(lengths)
        self.t = np.zeros(self.n, int)
        self.episode = np.zeros(self.n, int)
        self.needs_reset = np.zeros(self.n, bool)

    def obs(self):
        ram = np.zeros((self.n, 128), np.uint8)
        ram[:, 0] = np.arange(self.n)
        ram[:, 1] = self.t
        ram[:, 2] = self.episode % 256
        return ram

    def reset(self):
        return self.obs()

    def step(self, actions):
        actions = np.asarray(actions)
        reward = np.where(self.needs_reset, 0.0, 1.0 + actions).astype(np.float32)
        self.t = np.where(self.needs_reset, 0, self.t + 1)
        self.episode = self.episode + self.needs_reset
        ended = ~self.needs_reset & (self.t >= self.lengths)
        terminated = ended & (np.arange(self.n) % 2 == 0)
        truncated = ended & (np.arange(self.n) % 2 == 1)
        self.needs_reset = ended
        return self.obs(), reward, terminated, truncated


def run_learner(learner, env, calls, key=0):
    """``calls`` jitted learner steps on ``env`` (a FakeVecEnv): (final state, host metrics of each call)."""
    state, actions = jax.jit(learner.init)(jax.random.key(key), jnp.asarray(env.reset()))
    step = jax.jit(learner.step, donate_argnums=0)
    history = []
    for _ in range(calls):
        obs, reward, terminated, truncated = env.step(np.asarray(actions))
        state, actions, metrics = step(state, obs, reward, terminated, truncated)
        history.append(jax.device_get(metrics))
    return state, history


# -- training runs ------------------------------------------------------------------------------------------
def read_rows(run_dir):
    """The rows of a run's metrics.csv, as dicts."""
    with (Path(run_dir) / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def final_state(run_dir, config, step="latest"):
    """The full LearnerState (params, target, Adam, replay, key, counters) of a run's checkpoint."""
    from jaxrl.dqn.learner import abstract_learner_state, make_learner
    from jaxrl.dqn.run import checkpoint as ckpt  # orbax: only for the tests that read checkpoints

    learner = make_learner(config, 6)
    abstract = abstract_learner_state(learner, config)
    manager = ckpt.open_manager(run_dir, read_only=True)
    try:
        state, host, _, step = ckpt.restore_checkpoint(manager, abstract, step=step)
    finally:
        manager.close()
    return state, host, step


def assert_same_tree(a, b):
    """Two pytrees with the same structure and bit-identical leaves."""
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b) and len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def train_command(*args):
    """``jaxrl dqn train --preset tiny`` on the fastest installed backend, as a subprocess argv."""
    return [sys.executable, "-m", "jaxrl", "dqn", "train", "--preset", "tiny", "--backend", FAST_BACKEND,
            "--no-progress", *args]


def finished_checkpoints(run_dir):
    """Steps of the checkpoints a run has finished writing (orbax renames a step's folder when done)."""
    directory = Path(run_dir) / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def start_training(args, run_dir):
    """Start ``train_command`` into ``run_dir`` in the background (stdout and stderr piped together)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(train_command("--run-dir", str(run_dir), *args), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def wait_for(predicate, proc, timeout=120):
    """Poll ``predicate`` until true; fail if ``proc`` exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"training exited early:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the training run")
        time.sleep(0.02)


def one_hot_step_toy_env(num_envs: int, num_actions: int, length: int):
    """The toy env (episodes of ``length`` steps, reward 1 when action == t % num_actions) with its step t also
    written one-hot as 255 in RAM bytes 3 + t: a task an MLP on RAM / 255 learns in a few hundred updates
    (t / 255 alone is a hard input). Random play scores length / num_actions per game, the best play length."""
    from jaxrl.dqn.envs.toy import make_toy_env

    env = make_toy_env(num_envs, num_actions=num_actions, lengths=[length] * num_envs)

    def spread(obs):
        t = obs[:, 1].astype(jnp.int32)
        one_hot = jnp.where(jnp.arange(length)[None] == t[:, None], 255, 0).astype(jnp.uint8)
        return obs.at[:, 3:3 + length].set(one_hot)

    def reset():
        state, obs = env.reset()
        return state, spread(obs)

    def step(state, actions):
        state, (obs, *rest) = env.step(state, actions)
        return state, (spread(obs), *rest)

    return env._replace(reset=reset, step=step)
