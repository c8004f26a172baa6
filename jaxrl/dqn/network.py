"""Q-network: an MLP from Atari RAM bytes to one Q-value per action.

The RAM is stored as uint8 everywhere (replay buffer, env loop) and encoded here, at the first layer, so the
buffer stays 4x smaller than a float buffer and the encoding is written once: ``"scale"`` maps each byte to
[0, 1] (the seed's reference); ``"bits"`` unpacks each byte into its 8 bits (128 -> 1,024 inputs in {0, 1}).
Atari RAM holds many bit fields (which invaders are alive, flags) and small counters, which a byte / 255
squeezes into values an MLP can barely tell apart; their bits are directly usable features.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


OBS_ENCODINGS = ("scale", "bits")


def unpack_bits(obs: jax.Array) -> jax.Array:
    """uint8 [..., D] -> float32 [..., 8 * D] of the bits of each byte (most significant first)."""
    if not jnp.issubdtype(obs.dtype, jnp.integer):
        raise TypeError(f"obs_encoding='bits' needs integer RAM bytes, got {obs.dtype}")
    shifts = jnp.arange(7, -1, -1, dtype=jnp.uint8)
    bits = (obs.astype(jnp.uint8)[..., None] >> shifts) & jnp.uint8(1)  # [..., D, 8]
    return bits.reshape(obs.shape[:-1] + (obs.shape[-1] * 8,)).astype(jnp.float32)


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
      obs_encoding: ``"scale"`` (bytes / 255) or ``"bits"`` (8 binary inputs per byte), see the module doc.
      dueling: split the head into a state value and action advantages, ``q = v + a - mean(a)`` (Wang et al.,
        2016, "Dueling Network Architectures"): the value is learned from every action's target, which helps
        when the actions' values differ by far less than the state's value.
      layer_norm: LayerNorm after each hidden Dense, before the ReLU (Dense -> LayerNorm -> ReLU), which keeps
        the features' scale fixed while the TD targets move (Ba et al., 2016; Gallici et al., 2024, "Simplifying
        Deep Temporal Difference Learning", who find it stabilises Q-learning).
      num_quantiles: 0 for the expected-value head of DQN; N > 0 for QR-DQN's head (Dabney et al., 2018,
        "Distributional Reinforcement Learning with Quantile Regression"): N values per action, the
        quantiles of the return at the midpoints (2i + 1) / 2N, whose mean is the Q-value.

    ``apply(params, obs)`` gives Q-values in every case (so acting, evaluation and play are the same code);
    ``apply(params, obs, method=QNetwork.quantile_values)`` gives the head's [..., A, N] values.
    """

    num_actions: int
    hidden_sizes: Sequence[int] = (256, 256)
    obs_encoding: str = "scale"
    dueling: bool = False
    layer_norm: bool = False
    num_quantiles: int = 0

    def __call__(self, obs: jax.Array) -> jax.Array:
        """Q-values for every action.

        Args:
          obs: [..., 128] uint8 RAM (or float already in [0, 1]).

        Returns:
          q: [..., A] float32 (with quantiles: the mean of each action's N quantile values).
        """
        return jnp.mean(self.quantile_values(obs), axis=-1)

    @nn.compact
    def quantile_values(self, obs: jax.Array) -> jax.Array:
        """The head's values per action: N quantiles of the return, or (num_quantiles == 0) the Q-value alone.

        Args:
          obs: [..., 128] uint8 RAM (or float already in [0, 1]).

        Returns:
          [..., A, max(num_quantiles, 1)] float32.
        """
        if self.obs_encoding not in OBS_ENCODINGS:
            raise ValueError(f"obs_encoding must be one of {OBS_ENCODINGS}, got {self.obs_encoding!r}")
        if self.num_quantiles < 0:
            raise ValueError(f"num_quantiles must be >= 0, got {self.num_quantiles}")
        x = unpack_bits(obs) if self.obs_encoding == "bits" else scale_obs(obs)
        for width in self.hidden_sizes:
            x = nn.Dense(width)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = nn.relu(x)
        k = max(self.num_quantiles, 1)
        shape = x.shape[:-1] + (self.num_actions, k)
        if not self.dueling:
            return nn.Dense(self.num_actions * k)(x).reshape(shape)
        value = nn.Dense(k, name="value")(x).reshape(x.shape[:-1] + (1, k))  # [..., 1, K]
        advantage = nn.Dense(self.num_actions * k, name="advantage")(x).reshape(shape)  # [..., A, K]
        return value + advantage - jnp.mean(advantage, axis=-2, keepdims=True)
