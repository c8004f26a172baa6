"""Deep Q-learning on Atari RAM: pure core (network, replay, loss/update, act) and the training shells."""
