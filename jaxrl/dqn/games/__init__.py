"""Pure-JAX decoders of Atari RAM into game objects (one module per game)."""
from jaxrl.dqn.games import space_invaders

__all__ = ["space_invaders"]
