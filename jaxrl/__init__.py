"""jaxrl: scikit-learn's multi-layer perceptrons and a classic DQN agent as pure, jitted JAX functions."""

__version__ = "0.1.0"
