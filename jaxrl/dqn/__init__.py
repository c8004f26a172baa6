"""Deep Q-learning on Atari RAM: pure core (encoders, network, replay, loss/update, act) and the training shells.

Importing this package is light: the public names below are resolved on first access (PEP 562 module
``__getattr__``), so building ``jaxrl dqn``'s command-line parser imports neither JAX nor envpool.
"""
from __future__ import annotations

from jaxrl._lazy import lazy_names

# public name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(("DQN", "DQNState", "epsilon_schedule", "make_dqn"), "jaxrl.dqn.agent"),
    **dict.fromkeys(("quantile_td_loss", "td_error", "td_loss"), "jaxrl.dqn.losses"),
    **dict.fromkeys(("StackedEnvState", "stack_vec_env", "stack_xla_env"), "jaxrl.dqn.envs.frame_stack"),
    **dict.fromkeys(("LearnerState", "make_learner"), "jaxrl.dqn.learner"),
    "Learner": "jaxrl.dqn.learner_base",
    "QNetwork": "jaxrl.dqn.network",
    **dict.fromkeys(("PPOConfig", "make_ppo"), "jaxrl.dqn.ppo"),
    **dict.fromkeys(("PQNState", "make_pqn_learner", "q_lambda_returns"), "jaxrl.dqn.pqn"),
    **dict.fromkeys(("OnPolicy", "OnPolicyConfig", "Rollout", "make_on_policy"), "jaxrl.dqn.on_policy"),
    "encode": "jaxrl.dqn.encoders",
    **dict.fromkeys(("PrioritizedReplayBuffer", "PrioritizedReplayState", "PrioritizedSample",
                     "make_prioritized_replay_buffer"), "jaxrl.dqn.buffers.prioritized"),
    **dict.fromkeys(("ReplayBuffer", "ReplayState", "Transition", "make_replay_buffer"), "jaxrl.dqn.buffers.replay"),
    **dict.fromkeys(("FrameStore", "FrameStoreState", "make_frame_store"), "jaxrl.dqn.buffers.frames"),
    "make_toy_env": "jaxrl.dqn.envs.toy",
    "XlaEnv": "jaxrl.dqn.envs.atari",
    "make_envpool_xla_env": "jaxrl.dqn.envs.xla",
    **dict.fromkeys(("LoopState", "XlaLoop", "make_xla_loop", "summarize"), "jaxrl.dqn.run.xla_loop"),
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)
