"""Deep Q-learning on Atari RAM: pure core (network, replay, loss/update, act) and the training shells.

Importing this package is light: envpool and gymnasium are imported only inside the functions that use them.
"""
from jaxrl.dqn.agent import DQN, DQNState, epsilon_schedule, make_dqn, quantile_td_loss, td_error, td_loss
from jaxrl.dqn.frame_stack import StackedEnvState, stack_vec_env, stack_xla_env
from jaxrl.dqn.learner import Learner, LearnerState, make_learner
from jaxrl.dqn.network import QNetwork
from jaxrl.dqn.prioritized import (
    PrioritizedReplayBuffer,
    PrioritizedReplayState,
    PrioritizedSample,
    make_prioritized_replay_buffer,
)
from jaxrl.dqn.replay import ReplayBuffer, ReplayState, Transition, make_replay_buffer
from jaxrl.dqn.toy_env import make_toy_env
from jaxrl.dqn.xla_env import XlaEnv, make_envpool_xla_env
from jaxrl.dqn.xla_loop import LoopState, XlaLoop, make_xla_loop, summarize

__all__ = [
    "DQN",
    "DQNState",
    "Learner",
    "LearnerState",
    "LoopState",
    "PrioritizedReplayBuffer",
    "PrioritizedReplayState",
    "PrioritizedSample",
    "QNetwork",
    "ReplayBuffer",
    "ReplayState",
    "StackedEnvState",
    "Transition",
    "XlaEnv",
    "XlaLoop",
    "epsilon_schedule",
    "make_dqn",
    "make_envpool_xla_env",
    "make_learner",
    "make_prioritized_replay_buffer",
    "make_replay_buffer",
    "make_toy_env",
    "make_xla_loop",
    "quantile_td_loss",
    "stack_vec_env",
    "stack_xla_env",
    "summarize",
    "td_error",
    "td_loss",
]
