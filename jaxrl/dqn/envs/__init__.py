"""Where observations come from: the env interface, the env backends and the wrappers around them.

- `atari` (no JAX): the RAM size, envpool's Atari settings, the `XlaEnv` interface;
- `host`: gymnasium / envpool vectorised envs stepped from Python (``--loop python``, eval, play);
- `xla`: envpool's XLA step as an `XlaEnv` (``--loop xla``);
- `toy`: a pure-JAX `XlaEnv` for tests and overhead benchmarks;
- `frame_stack`: RAM frame stacking as a pure pair, and its wrappers of both kinds of env.

Importing this package imports nothing else (``jaxrl.dqn.config`` reads `atari` without JAX).
"""
