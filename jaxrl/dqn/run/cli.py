"""``jaxrl dqn train | eval | play | plot``: the command line of the DQN runs (argparse).

Every ``DQNConfig`` field is a ``train`` flag (``--num-envs``, ``--learning-rate``, ``--hidden-sizes 256 256``,
``--double-dqn`` / ``--no-double-dqn``, ``--max-grad-norm none`` ...); flags override ``--preset`` (default
``seed``). With ``--resume`` the run directory's saved config is the base, and a flag that changes anything
but the resumable fields (total steps, logging, eval) is refused. Errors are one line on stderr, exit code 2
(bad input) or 1 (divergence); an interrupted run (Ctrl-C / SIGTERM) saves a checkpoint and exits with 130.

``--loop xla`` trains with the compiled loop (envpool's XLA interface; ``--backend gymnasium`` with it is
refused, exit 2; ``--backend auto`` without envpool falls back to the Python loop with a warning).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from jaxrl.dqn.config import DEFAULT_PRESET, GROUPS, PRESETS, Choice, DQNConfig, Flag, Int, Real, Sizes

DEFAULT_RUN_ROOT = "checkpoints"
_EXIT_BAD_INPUT, _EXIT_DIVERGED, _EXIT_INTERRUPTED = 2, 1, 130


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _optional_float(text: str) -> float | None:
    if text.lower() in ("none", "off", ""):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def argparse_kwargs(rule) -> dict:
    """How a field with validation ``rule`` (``jaxrl.dqn.config``) is read from the command line."""
    if isinstance(rule, Flag):
        return dict(action=argparse.BooleanOptionalAction)
    if isinstance(rule, Choice):
        return dict(choices=rule.options)
    if isinstance(rule, Sizes):
        return dict(nargs="+", type=int, metavar=rule.metavar)
    if isinstance(rule, Int):
        return dict(type=int, metavar="N")
    if isinstance(rule, Real):
        return dict(type=_optional_float, metavar="X|none") if rule.optional else dict(type=float, metavar="X")
    return dict(type=str)


def add_config_flags(parser: argparse.ArgumentParser, exclude=()) -> None:
    """One flag per DQNConfig field (but those in ``exclude``), built from the field's metadata (help text,
    validation rule, group); absent flags stay absent (argparse.SUPPRESS) so presets apply. Read them back
    with ``config_overrides``."""
    defaults = DQNConfig()
    groups = {name: parser.add_argument_group(f"config: {name} (defaults: the chosen --preset; shown: the seed "
                                              f"preset)") for name in GROUPS}
    for field in dataclasses.fields(DQNConfig):
        if field.name in exclude:
            continue
        help_text = f"{field.metadata['help']} (seed: {getattr(defaults, field.name)!r})"
        groups[field.metadata["group"]].add_argument(
            _flag(field.name), dest=field.name, default=argparse.SUPPRESS, help=help_text,
            **argparse_kwargs(field.metadata["rule"]))


def config_overrides(args: argparse.Namespace) -> dict:
    names = {f.name for f in dataclasses.fields(DQNConfig)}
    return {name: value for name, value in vars(args).items() if name in names}


def _quiet_libraries() -> None:
    """Keep orbax's absl INFO/WARNING lines (e.g. "read only directory") out of the command's output."""
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl comes with orbax
        pass


def _fail(command: str, error: BaseException, code: int = _EXIT_BAD_INPUT) -> int:
    print(f"jaxrl dqn {command}: error: {error}", file=sys.stderr)
    return code


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``jaxrl dqn ...`` on the top-level ``subparsers``."""
    parser = subparsers.add_parser("dqn", help="DQN on Atari RAM: train, eval, play, plot",
                                   description="Deep Q-learning on Atari SpaceInvaders RAM (envpool or gymnasium).")
    commands = parser.add_subparsers(dest="dqn_command", required=True, metavar="{train,eval,play,plot}")

    train = commands.add_parser("train", help="train an agent into a run directory")
    train.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help=f"base config (default: {DEFAULT_PRESET}; with --resume: the run's saved config)")
    train.add_argument("--run-dir", default=None,
                       help=f"run directory (default: {DEFAULT_RUN_ROOT}/dqn-<preset>-<date>-<time>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    train.add_argument("--overwrite", action="store_true", help="delete an existing --run-dir first")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--total-frames", type=int, default=None, metavar="N",
                       help="train for N emulator frames (= ceil(N / frame_skip) env steps; instead of "
                            "--total-steps)")
    add_config_flags(train)
    train.set_defaults(func=_train)

    def add_agent_source(sub, *, episodes_default):
        sub.add_argument("--run-dir", default=None, help="run directory of a trained agent")
        sub.add_argument("--checkpoint", default="latest", help="latest (default), best, or a step")
        sub.add_argument("--random", action="store_true",
                         help="a uniformly random agent instead (env settings from --run-dir or the seed preset)")
        sub.add_argument("--episodes", type=int, default=episodes_default)
        sub.add_argument("--epsilon", type=float, default=0.05, help="ε of the ε-greedy policy (0: greedy)")
        sub.add_argument("--seed", type=int, default=12345, help="env / action seed of the evaluation")
        sub.add_argument("--backend", choices=("auto", "envpool", "gymnasium"), default=None)
        sub.add_argument("--agent", type=int, default=None, metavar="I",
                         help="agent I of a multi-seed run (--num-seeds): eval defaults to every agent, play needs one")

    evaluate = commands.add_parser("eval", help="mean ± std return of a trained (or random) agent")
    add_agent_source(evaluate, episodes_default=10)
    evaluate.set_defaults(func=_eval)

    play = commands.add_parser("play", help="render a trained (or random) agent to an MP4 or GIF")
    add_agent_source(play, episodes_default=1)
    play.add_argument("--video", required=True, help="output file, .mp4 or .gif")
    play.add_argument("--fps", type=int, default=30)
    play.add_argument("--max-steps", type=int, default=None, help="cut each episode after this many steps")
    play.set_defaults(func=_play)

    plot = commands.add_parser("plot", help="return curve PNG from a run's metrics.csv")
    plot.add_argument("--run-dir", required=True)
    plot.add_argument("--out", default=None, help="PNG path (default: <run-dir>/returns.png)")
    plot.set_defaults(func=_plot)
    return parser


def _train(args: argparse.Namespace) -> int:
    _quiet_libraries()
    from jaxrl.dqn.config import preset
    from jaxrl.dqn.run.multi_seed import train_seeds
    from jaxrl.dqn.run.run_dir import load_run_config, prepare_run_dir
    from jaxrl.dqn.run.train import DivergenceError, train

    try:
        if args.resume:
            if args.run_dir is None:
                raise ValueError("--resume needs --run-dir")
            prepare_run_dir(args.run_dir, resume=True, overwrite=args.overwrite)  # only checks when resuming
            base = preset(args.preset) if args.preset else load_run_config(args.run_dir)
        else:
            base = preset(args.preset or DEFAULT_PRESET)
        config = with_total_frames(base.replace(**config_overrides(args)), args)
        run_dir = args.run_dir or f"{DEFAULT_RUN_ROOT}/dqn-{args.preset or DEFAULT_PRESET}-{time.strftime('%Y%m%d-%H%M%S')}"
        print(f"run directory: {run_dir}")
        fit = train_seeds if config.num_seeds > 1 else train
        results = fit(config, run_dir, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    except DivergenceError as error:
        return _fail("train", error, _EXIT_DIVERGED)
    except (ValueError, TypeError, FileNotFoundError) as error:
        return _fail("train", error)
    for result in results if isinstance(results, list) else [results]:
        print(f"{'interrupted' if result.interrupted else 'done'}: {result.env_steps} steps ({result.frames} frames), "
              f"{result.episodes} episodes, mean return of the last 100: {result.mean_return:.1f}, "
              f"{result.wall_s:.0f} s; last checkpoint {result.last_checkpoint}; {result.run_dir}")
    return _EXIT_INTERRUPTED if result.interrupted else 0


def with_total_frames(config: DQNConfig, args: argparse.Namespace) -> DQNConfig:
    """``config`` with total_steps from ``--total-frames`` (Atari users count emulator frames), if given."""
    if args.total_frames is None:
        return config
    if "total_steps" in vars(args):
        raise ValueError("give --total-frames or --total-steps, not both")
    if args.total_frames < 1:
        raise ValueError(f"--total-frames must be >= 1, got {args.total_frames}")
    return config.replace(total_steps=-(-args.total_frames // config.frame_skip))


def _agent(args: argparse.Namespace):
    """(params or None, config, description) from --run-dir / --random."""
    from jaxrl.dqn.config import preset
    from jaxrl.dqn.run.evaluate import load_params
    from jaxrl.dqn.run.run_dir import load_run_config

    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    if not 0.0 <= args.epsilon <= 1.0:
        raise ValueError(f"--epsilon must be in [0, 1], got {args.epsilon}")
    if args.random:
        config = load_run_config(args.run_dir) if args.run_dir else preset("seed")
        params, what = None, "random agent"
    else:
        if args.run_dir is None:
            raise ValueError("--run-dir is required (or --random for the random agent)")
        params, config, step = load_params(args.run_dir, _which(args), agent=args.agent)
        what = f"{args.run_dir}{'' if args.agent is None else f' agent {args.agent}'} checkpoint {step}"
    if args.backend is not None:  # eval and play step the envs from Python, whatever loop trained the agent
        config = config.replace(backend=args.backend, loop="python")
    return params, config, what


def _which(args: argparse.Namespace) -> int | str:
    return args.checkpoint if args.checkpoint in ("latest", "best") else _step(args.checkpoint)


def _step(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--checkpoint must be latest, best or a step number, got {text!r}") from None


def _eval(args: argparse.Namespace) -> int:
    _quiet_libraries()
    from jaxrl.dqn.run.evaluate import evaluate_returns, format_returns

    try:
        if _every_agent(args):
            return _eval_every_agent(args)
        params, config, what = _agent(args)
        start = time.perf_counter()
        returns = evaluate_returns(config, params, args.episodes, epsilon=args.epsilon, seed=args.seed)
    except (ValueError, TypeError, FileNotFoundError) as error:
        return _fail("eval", error)
    policy = "uniform random actions" if params is None else f"ε={args.epsilon:g}"
    print(f"{what} ({policy}, {config.backend} backend): return {format_returns(returns)} "
          f"[{time.perf_counter() - start:.1f} s]")
    return 0


def _every_agent(args: argparse.Namespace) -> bool:
    """``jaxrl dqn eval`` of a multi-seed run without ``--agent``: every agent."""
    from jaxrl.dqn.run.run_dir import load_run_config

    return (not args.random and args.agent is None and args.run_dir is not None
            and load_run_config(args.run_dir).num_seeds > 1)


def _eval_every_agent(args: argparse.Namespace) -> int:
    """One line per agent of a multi-seed run, then the mean ± std of their mean returns over the agents."""
    import numpy as np

    from jaxrl.dqn.run.evaluate import evaluate_returns, format_returns, load_agents

    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    agents, step = load_agents(args.run_dir, _which(args))
    means = []
    for i, (params, config) in enumerate(agents):
        if args.backend is not None:
            config = config.replace(backend=args.backend, loop="python")
        start = time.perf_counter()
        returns = evaluate_returns(config, params, args.episodes, epsilon=args.epsilon, seed=args.seed)
        means.append(float(np.mean(returns)))
        print(f"{args.run_dir} agent {i} (seed {config.seed}) checkpoint {step} (ε={args.epsilon:g}, "
              f"{config.backend} backend): return {format_returns(returns)} [{time.perf_counter() - start:.1f} s]")
    print(f"{args.run_dir} checkpoint {step}, {len(means)} agents: {np.mean(means):.1f} ± {np.std(means):.1f} "
          f"(mean ± std over agents of their mean returns)")
    return 0


def _play(args: argparse.Namespace) -> int:
    _quiet_libraries()
    from jaxrl.dqn.run.evaluate import play

    try:
        if args.fps < 1:
            raise ValueError(f"--fps must be >= 1, got {args.fps}")
        params, config, what = _agent(args)
        returns = play(config, params, args.video, episodes=args.episodes, epsilon=args.epsilon, seed=args.seed,
                       fps=args.fps, max_steps=args.max_steps)
    except (ValueError, TypeError, FileNotFoundError) as error:
        return _fail("play", error)
    print(f"{what}: wrote {args.video} ({len(returns)} episode(s), returns {', '.join(f'{r:.0f}' for r in returns)})")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from jaxrl.dqn.run.plots import plot_returns

    out = args.out or str(Path(args.run_dir) / "returns.png")
    try:
        plot_returns(Path(args.run_dir) / "metrics.csv", out)
    except (ValueError, FileNotFoundError) as error:
        return _fail("plot", error)
    print(f"wrote {out}")
    return 0
