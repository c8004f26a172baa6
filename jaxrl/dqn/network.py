"""Q-network from Atari RAM bytes to one Q-value per action: an MLP, or a small CNN on object planes.

The RAM is stored as uint8 everywhere (replay buffer, env loop) and encoded here, at the first layer
(`jaxrl.dqn.encoders`), so the buffer stays small and the encoding is written once: ``"scale"`` (bytes / 255,
the seed's reference), ``"bits"``, ``"objects"`` (decoded Space Invaders objects as a feature vector) feed the
MLP; ``"planes"`` (the decoded objects drawn on a coarse grid) feeds convolutions, then the same dense layers.
"""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrl.dqn.encoders import OBS_ENCODINGS, SPATIAL_ENCODINGS, encode, scale_obs, unpack_bits  # noqa: F401


class PatchConv(nn.Module):
    """A k x k, stride-s, "SAME"-padded convolution as k * k strided slices and one matmul (im2col).

    Same parameters (``kernel`` [k, k, C, F], ``bias`` [F]) and the same result as ``nn.Conv(F, (k, k), s,
    padding="SAME")``, to float rounding. Written out because XLA:CPU runs a convolution's gradient inside a
    loop (``lax.scan`` / ``while_loop``: the compiled training loop, PPO's minibatch epochs) about 15x slower
    than outside one (measured with jax 0.10.2: 16 scanned gradient steps of the planes torso at batch 256,
    1,600 ms with ``nn.Conv``, 103 ms with this); slices and a dot run at the same speed in and out of loops.
    """

    features: int
    kernel_size: int = 3
    strides: int = 2
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[N, H, W, C] -> [N, ceil(H / s), ceil(W / s), F]."""
        k, s = self.kernel_size, self.strides
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        (h, w), out = x.shape[1:3], (-(-x.shape[1] // s), -(-x.shape[2] // s))
        pads = [max((o - 1) * s + k - n, 0) for o, n in zip(out, (h, w))]
        x = jnp.pad(x, ((0, 0), (pads[0] // 2, pads[0] - pads[0] // 2), (pads[1] // 2, pads[1] - pads[1] // 2),
                        (0, 0)))
        columns = [x[:, i:i + s * (out[0] - 1) + 1:s, j:j + s * (out[1] - 1) + 1:s, :]
                   for i in range(k) for j in range(k)]  # (i, j, c) order: the kernel's own
        return jnp.concatenate(columns, axis=-1) @ kernel.reshape(-1, self.features) + bias


def features(obs: jax.Array, obs_encoding: str, conv_channels: Sequence[int], hidden_sizes: Sequence[int], *,
             layer_norm: bool = False, conv_strides: Sequence[int] | None = None, conv_layer_norm: bool = False,
             kernel_init=nn.initializers.lecun_normal(), encoded: bool = False) -> jax.Array:
    """The torso every network here shares: encode the RAM, convolve a spatial encoding, then the hidden layers.

    Called inside a module's ``nn.compact`` method, so its layers are that module's own (``Conv_i``, ``Dense_i``).

    Args:
      obs: [..., D] uint8 RAM, D = K * 128 (or, for ``"scale"``, float already in [0, 1]).
      obs_encoding: one of ``jaxrl.dqn.encoders.OBS_ENCODINGS``.
      conv_channels: output channels of the 3x3 ReLU convolutions applied to a spatial encoding; unused
        otherwise.
      hidden_sizes: widths of the hidden layers, each Dense -> (LayerNorm) -> ReLU.
      layer_norm: LayerNorm after each hidden Dense.
      conv_strides: each convolution's stride, one per ``conv_channels`` entry (None: 2 for all, so
        ``"planes"``' 19 x 20 cells -> 10 x 10 -> 5 x 5 ...).
      conv_layer_norm: LayerNorm (over each cell's channels and the grid) after each convolution, before its
        ReLU.
      kernel_init: the convolutions' and hidden layers' initialiser.
      encoded: ``obs`` is already ``encode(obs, obs_encoding)`` (a learner that reads each row several times
        encodes it once); the layers and their parameters are the same.

    Returns:
      [..., F] float32, F = hidden_sizes[-1] (or the flattened encoding when there are no hidden layers).
    """
    x = obs if encoded else encode(obs, obs_encoding)
    if obs_encoding in SPATIAL_ENCODINGS:  # [..., H, W, C] -> convolutions -> [..., features]
        lead = x.shape[:-3]
        x = x.reshape((-1,) + x.shape[-3:])
        strides = (2,) * len(conv_channels) if conv_strides is None else tuple(conv_strides)
        if len(strides) != len(conv_channels):
            raise ValueError(f"conv_strides {strides} must give one stride per convolution of conv_channels "
                             f"{tuple(conv_channels)}")
        for layer, (channels, stride) in enumerate(zip(conv_channels, strides)):
            # named as nn.Conv's layers were, so checkpoints written with nn.Conv restore
            x = PatchConv(channels, strides=stride, kernel_init=kernel_init, name=f"Conv_{layer}")(x)
            if conv_layer_norm:
                x = nn.LayerNorm(reduction_axes=(-3, -2, -1), feature_axes=(-3, -2, -1),
                                 name=f"ConvLayerNorm_{layer}")(x)
            x = nn.relu(x)
        x = x.reshape(lead + (-1,))
    for width in hidden_sizes:
        x = nn.Dense(width, kernel_init=kernel_init)(x)
        if layer_norm:
            x = nn.LayerNorm()(x)
        x = nn.relu(x)
    return x


class QNetwork(nn.Module):
    """MLP Q-network `obs -> q`: Dense+ReLU for each hidden size, then a linear head (Mnih et al., 2015).

    Attributes:
      num_actions: A, the number of discrete actions (size of the output).
      hidden_sizes: widths of the hidden ReLU layers; the seed preset is (256, 256).
      obs_encoding: one of ``jaxrl.dqn.encoders.OBS_ENCODINGS`` (see the module doc).
      conv_channels: output channels of the 3x3 ReLU convolutions applied to a spatial encoding (``"planes"``)
        before the hidden layers; unused otherwise.
      conv_strides: their strides, one per convolution (default 2 each: 19 x 20 cells -> 10 x 10 -> 5 x 5 ...).
      conv_layer_norm: LayerNorm after each convolution, before its ReLU.
      dueling: split the head into a state value and action advantages, ``q = v + a - mean(a)`` (Wang et al.,
        2016, "Dueling Network Architectures"): the value is learned from every action's target, which helps
        when the actions' values differ by far less than the state's value.
      layer_norm: LayerNorm after each hidden Dense, before the ReLU (Dense -> LayerNorm -> ReLU), which keeps
        the features' scale fixed while the TD targets move (Ba et al., 2016; Gallici et al., 2024, "Simplifying
        Deep Temporal Difference Learning", who find it stabilises Q-learning).
      num_quantiles: 0 for the expected-value head of DQN; N > 0 for QR-DQN's head (Dabney et al., 2018,
        "Distributional Reinforcement Learning with Quantile Regression"): N values per action, the
        quantiles of the return at the midpoints (2i + 1) / 2N, whose mean is the Q-value.
      encoded_input: the input is already ``encoders.encode(obs, obs_encoding)`` (see ``features``).

    ``apply(params, obs)`` gives Q-values in every case (so acting, evaluation and play are the same code);
    ``apply(params, obs, method=QNetwork.quantile_values)`` gives the head's [..., A, N] values. A clone with
    ``encoded_input=True`` takes ``encode(obs, obs_encoding)`` instead of the RAM, with the same parameters.
    """

    num_actions: int
    hidden_sizes: Sequence[int] = (256, 256)
    obs_encoding: str = "scale"
    conv_channels: Sequence[int] = (16, 32)
    conv_strides: Sequence[int] | None = None
    conv_layer_norm: bool = False
    dueling: bool = False
    layer_norm: bool = False
    num_quantiles: int = 0
    encoded_input: bool = False

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
          obs: [..., D] uint8 RAM, D = K * 128 (or, for ``"scale"``, float already in [0, 1]).

        Returns:
          [..., A, max(num_quantiles, 1)] float32.
        """
        if self.obs_encoding not in OBS_ENCODINGS:
            raise ValueError(f"obs_encoding must be one of {OBS_ENCODINGS}, got {self.obs_encoding!r}")
        if self.num_quantiles < 0:
            raise ValueError(f"num_quantiles must be >= 0, got {self.num_quantiles}")
        x = features(obs, self.obs_encoding, self.conv_channels, self.hidden_sizes, layer_norm=self.layer_norm,
                     conv_strides=self.conv_strides, conv_layer_norm=self.conv_layer_norm, encoded=self.encoded_input)
        k = max(self.num_quantiles, 1)
        shape = x.shape[:-1] + (self.num_actions, k)
        if not self.dueling:
            return nn.Dense(self.num_actions * k)(x).reshape(shape)
        value = nn.Dense(k, name="value")(x).reshape(x.shape[:-1] + (1, k))  # [..., 1, K]
        advantage = nn.Dense(self.num_actions * k, name="advantage")(x).reshape(shape)  # [..., A, K]
        return value + advantage - jnp.mean(advantage, axis=-2, keepdims=True)
