"""Q-network: an MLP from Atari RAM bytes to one Q-value per action.

The RAM is stored as uint8 everywhere (replay buffer, env loop) and scaled to [0, 1] here, at the first layer, so
the buffer stays 4x smaller than a float buffer and the scaling is written once.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def scale_obs(obs: jax.Array) -> jax.Array:
    """Map RAM bytes to float32 in [0, 1].

    Args:
      obs: [..., D] uint8 RAM bytes, or a float array already in [0, 1] (returned as float32, unscaled).

    Returns:
      [..., D] float32.
    """
    if jnp.issubdtype(obs.dtype, jnp.integer):
        return obs.astype(jnp.float32) / 255.0
    return obs.astype(jnp.float32)


class QNetwork(nn.Module):
    """MLP Q-network `obs -> q`: Dense+ReLU for each hidden size, then a linear head (Mnih et al., 2015).

    Attributes:
      num_actions: A, the number of discrete actions (size of the output).
      hidden_sizes: widths of the hidden ReLU layers; the seed preset is (256, 256).
    """

    num_actions: int
    hidden_sizes: Sequence[int] = (256, 256)

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        """Q-values for every action.

        Args:
          obs: [..., 128] uint8 RAM (or float already in [0, 1]).

        Returns:
          q: [..., A] float32.
        """
        x = scale_obs(obs)
        for width in self.hidden_sizes:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_actions)(x)
