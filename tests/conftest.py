"""Settings for the whole test session.

The persistent XLA compilation cache stays off unless asked for: tests that call `jaxrl.cli.main` in-process
or run the `jaxrl` command in a subprocess (which inherits this environment) then change no JAX setting and
write nothing under ~/.cache. tests/test_compilation_cache.py turns it on explicitly, into tmp folders.
Run the suite with JAXRL_COMPILATION_CACHE=1 to use the cache anyway.
"""
import os

os.environ.setdefault("JAXRL_COMPILATION_CACHE", "0")


def small_config(num_envs: int = 1, **overrides):
    """A DQNConfig for unit tests of the agent and the learner: ``num_envs`` envs, one update phase every 4th
    learner call and a hard target sync every 2,000 updates unless ``overrides`` say otherwise."""
    from jaxrl.dqn.config import DQNConfig

    return DQNConfig(**{"num_envs": num_envs, "update_every": 4, "target_update_period": 2_000, **overrides})
