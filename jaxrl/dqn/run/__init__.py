"""The shells of a DQN run: the command line, the training run, its files, evaluation and plots.

- `cli`: ``jaxrl dqn train | eval | play | plot`` (imports no JAX until a command runs);
- `train`: the run (segments, metrics, checkpoints, resume, SIGINT, divergence guard), with the Python env
  loop or `xla_loop`, the compiled loop (``lax.scan`` of env step -> ``learner.step``);
- `run_dir`, `checkpoint`, `evaluate`, `plots`: ``config.json`` and the run directory, orbax checkpoints,
  eval / play, plots.

Importing this package imports nothing else, so ``jaxrl --help`` stays free of JAX.
"""
