"""Observation encodings: how the Q-network reads the uint8 RAM it is given (pure, applied inside jit).

The replay buffer and the env loops keep uint8 RAM (``[..., K * 128]`` with ``--frame-stack K``); the encoding
turns it into the network's input at its first layer, so the buffer stays small and every path (learning,
acting, eval, play) encodes the same way:

* ``"scale"``: each byte / 255 -> ``[..., D]`` (the seed agent's input);
* ``"bits"``: each byte's 8 bits -> ``[..., 8 D]`` in {0, 1} (Atari RAM holds many bit fields);
* ``"objects"``: Space Invaders' RAM decoded into game objects (`jaxrl.dqn.games.space_invaders`), as an
  egocentric feature vector -> ``[..., 82]``; needs K >= 2 (bullets are seen as changes between snapshots);
* ``"planes"``: the decoded objects drawn on a coarse 19 x 20 grid, one channel per object class and decoded
  snapshot -> ``[..., 19, 20, 6 (K - 1)]`` for a convolutional torso; needs K >= 2. Each object marks the
  8 x 10 px cell of its centre;
* ``"bilinear-planes"``: the same grid, each object spread over the 4 cells around its centre with bilinear
  weights, so where it lies within a cell (the aim of a shot, a bullet's distance to the player) is kept;
* ``"box-planes"``: the decoded objects' bounding boxes on a grid twice as fine (38 x 40 cells of 4 x 5 px),
  each cell holding the share of it a class covers -> ``[..., 38, 40, 6 (K - 1)]``: the object masks of the
  screen averaged over the cells, so objects keep their extent (a shield's holes, an alien's width);
* ``"ego-planes"``: ``bilinear-planes`` centred on the player: 19 x 39 cells (the grid twice as wide less a
  column, so every object stays on it), the newest snapshot's player at the middle column, plus a ``field``
  channel (the share of each cell inside the screen) -> ``[..., 19, 39, 7 (K - 1)]``. What matters for a dodge
  or a shot (a bullet or an alien over the cannon) then has one place on the grid wherever the cannon is.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrl.dqn.games import space_invaders

OBS_ENCODINGS = ("scale", "bits", "objects", "planes", "bilinear-planes", "box-planes", "ego-planes")
# Encodings decoded from Space Invaders' RAM layout (``jaxrl.dqn.config`` checks the env id and frame stack).
GAME_ENCODINGS = ("objects", "planes", "bilinear-planes", "box-planes", "ego-planes")
SPATIAL_ENCODINGS = ("planes", "bilinear-planes", "box-planes", "ego-planes")


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


def encode(obs: jax.Array, encoding: str) -> jax.Array:
    """Encode RAM observations for the Q-network.

    Args:
      obs: [..., D] uint8 RAM (``D = K * 128``); for ``"scale"`` also float already in [0, 1].
      encoding: one of ``OBS_ENCODINGS``.

    Returns:
      float32: ``[..., D]`` (scale), ``[..., 8 D]`` (bits), ``[..., 82]`` (objects), ``[..., 19, 20, 6 (K - 1)]``
      (planes, bilinear-planes), ``[..., 38, 40, 6 (K - 1)]`` (box-planes), ``[..., 19, 39, 7 (K - 1)]``
      (ego-planes).
    """
    if encoding == "scale":
        return scale_obs(obs)
    if encoding == "bits":
        return unpack_bits(obs)
    if encoding in GAME_ENCODINGS and not jnp.issubdtype(obs.dtype, jnp.integer):
        raise TypeError(f"obs_encoding={encoding!r} decodes integer RAM bytes, got {obs.dtype}")
    if encoding == "objects":
        return space_invaders.encode_objects(obs)
    if encoding == "box-planes":
        return space_invaders.encode_box_planes(obs)
    if encoding in SPATIAL_ENCODINGS:
        return space_invaders.encode_planes(obs, bilinear=encoding == "bilinear-planes",
                                            egocentric=encoding == "ego-planes")
    raise ValueError(f"obs_encoding must be one of {OBS_ENCODINGS}, got {encoding!r}")
