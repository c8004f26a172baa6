"""Deep Q-learning on Atari RAM: pure core (network, replay, loss/update, act) and the training shells.

Importing this package is light: envpool and gymnasium are imported only inside the functions that use them.
"""
from jaxrl.dqn.agent import DQN, DQNState, epsilon_schedule, make_dqn, td_loss
from jaxrl.dqn.learner import Learner, LearnerState, make_learner
from jaxrl.dqn.network import QNetwork
from jaxrl.dqn.replay import ReplayBuffer, ReplayState, Transition, make_replay_buffer

__all__ = [
    "DQN",
    "DQNState",
    "Learner",
    "LearnerState",
    "QNetwork",
    "ReplayBuffer",
    "ReplayState",
    "Transition",
    "epsilon_schedule",
    "make_dqn",
    "make_learner",
    "make_replay_buffer",
    "td_loss",
]
