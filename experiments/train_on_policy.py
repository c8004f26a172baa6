"""Train PPO (`jaxrl.dqn.ppo`) on SpaceInvaders' RAM and evaluate the frozen policy (PQN, a learner with the DQN
agent's step, trains with ``jaxrl dqn train --preset pqn``).

PPO runs on the envs `jaxrl dqn train --loop xla` uses (envpool's XLA step: sticky actions 0.25, no-op starts,
full games) with the DQN agent's encodings (``--obs-encoding planes --frame-stack 2``: the decoded objects drawn
as planes for a small CNN). The whole rollout-and-update iteration is one compiled call.

    python experiments/train_on_policy.py ppo --obs-encoding planes --frame-stack 2 --total-frames 10000000 \\
        --seed 0 --out checkpoints/ppo-planes-s0
    python experiments/train_on_policy.py ppo --total-frames 40000000 --eval-at-frames 10000000 --out DIR
    python experiments/train_on_policy.py ppo --total-steps 20000 --eval-episodes 8      # a smoke run
    python experiments/train_on_policy.py play checkpoints/ppo-planes-s0 --video ppo-play.gif --max-steps 900
    python experiments/train_on_policy.py eval checkpoints/ppo-planes-s0 --episodes 100

Prints the training return of the last 100 games every --log-every iterations. At each --eval-at-frames point
and at the end it evaluates the frozen parameters on --eval-episodes fresh envs (seeded 10,000 + seed, never
trained on), one full game each, with actions sampled from the policy (the PPO convention), greedy, and greedy
with a random action at probability 0.05 (``greedy-eps0.05``: the DQN agent's evaluation, ``jaxrl dqn eval``).
With --out it writes log.csv, evals.csv, config.json and the parameters of each evaluated point (orbax,
``params-<frames>/``); an existing --out is refused. ``eval`` scores a saved point the same way on envs of its own
--seed (12345 by default, as ``jaxrl dqn eval``); ``play`` renders a saved agent (its last saved point, or
--frames) to a GIF or MP4 with `jaxrl.dqn.run.evaluate.play`.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from pathlib import Path

from jaxrl.dqn.ppo import PPOConfig

CONFIGS = {"ppo": PPOConfig}
FRAME_SKIP = 4
EVAL_EPSILON = 0.05  # the DQN agent's evaluation


def add_config_flags(parser: argparse.ArgumentParser, config_class) -> None:
    """One flag per config field (same name, dashed; same default and help), read as ``jaxrl dqn train`` reads
    a field with the same validation rule."""
    from jaxrl.dqn.run.cli import argparse_kwargs

    for field in dataclasses.fields(config_class):
        parser.add_argument("--" + field.name.replace("_", "-"), default=field.default, help=field.metadata["help"],
                            **argparse_kwargs(field.metadata["rule"]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    algorithms = parser.add_subparsers(dest="algo", required=True)
    for name, config_class in CONFIGS.items():
        sub = algorithms.add_parser(name, help=(config_class.__doc__ or "").splitlines()[0])
        add_config_flags(sub, config_class)
        sub.add_argument("--total-frames", type=int, default=None,
                         help=f"Atari frames instead of --total-steps (steps x {FRAME_SKIP})")
        sub.add_argument("--eval-episodes", type=int, default=100, help="fresh envs, one full game each")
        sub.add_argument("--eval-at-frames", type=int, nargs="*", default=[],
                         help="also evaluate (and save) the parameters when training passes these frame counts")
        sub.add_argument("--out", default=None, help="a new directory for the logs, evals and parameters")
    play = algorithms.add_parser("play", help="render a saved agent (its --out directory) to a GIF or MP4")
    play.add_argument("run_dir", help="the --out directory of a training run")
    play.add_argument("--video", required=True, help="output file, .gif or .mp4")
    play.add_argument("--frames", type=int, default=None, help="the saved point to play (default: the last)")
    play.add_argument("--seed", type=int, default=0, help="env seed of the episode")
    play.add_argument("--max-steps", type=int, default=None, help="cut the episode after this many steps")
    play.add_argument("--fps", type=int, default=30)
    evaluate = algorithms.add_parser("eval", help="score a saved agent (its --out directory) on fresh envs")
    evaluate.add_argument("run_dir", help="the --out directory of a training run")
    evaluate.add_argument("--frames", type=int, default=None, help="the saved point (default: the last)")
    evaluate.add_argument("--episodes", type=int, default=100, help="fresh envs, one full game each")
    evaluate.add_argument("--seed", type=int, default=12345, help="env / action seed of the evaluation")
    return parser


def parse_args(argv=None):
    """(config, args) of the command line; a bad value exits naming the flag."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.algo in ("play", "eval"):
        if args.algo == "eval" and args.episodes < 1:
            parser.error("--episodes must be >= 1")
        return None, args
    config_class = CONFIGS[args.algo]
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(config_class)}
    if args.total_frames is not None:
        if "--total-steps" in (argv if argv is not None else sys.argv[1:]):
            parser.error("give --total-steps or --total-frames, not both")
        if args.total_frames < FRAME_SKIP:
            parser.error(f"--total-frames must be >= {FRAME_SKIP}, got {args.total_frames}")
        values["total_steps"] = args.total_frames // FRAME_SKIP
    if args.eval_episodes < 1:
        parser.error("--eval-episodes must be >= 1")
    if any(frames < 1 for frames in args.eval_at_frames):
        parser.error(f"--eval-at-frames must be positive frame counts, got {args.eval_at_frames}")
    if args.out is not None and Path(args.out).exists():
        parser.error(f"--out {args.out} exists; give a new directory (nothing was written)")
    try:
        config = config_class(**values)
    except ValueError as error:
        parser.error(config_class.as_flags(str(error)))
    return config, args


def policies(network) -> dict:
    """The frozen policies to evaluate, by name."""
    from jaxrl.dqn.ppo import act
    return {"sampled": act(network, greedy=False), "greedy": act(network, greedy=True),
            f"greedy-eps{EVAL_EPSILON}": act(network, greedy=True, epsilon=EVAL_EPSILON)}


def evaluate_policies(network, params, eval_env, key, frames: int) -> list[dict]:
    """Each of `policies` on eval_env's fresh envs (one full game each, the same games and key for each policy);
    a row per policy, printed as it ends."""
    from jaxrl.dqn.on_policy import evaluate

    rows = []
    for name, act in policies(network).items():
        start = time.perf_counter()
        returns = evaluate(act, params, eval_env, key, max_steps=108_000 // FRAME_SKIP + 1)
        rows.append(dict(frames=frames, policy=name, episodes=len(returns), mean=returns.mean(), std=returns.std(),
                         min=returns.min(), max=returns.max()))
        print(f"eval at {frames:,} frames ({name}, {len(returns)} games): {returns.mean():.1f} +- "
              f"{returns.std():.1f} (min {returns.min():.0f}, max {returns.max():.0f}) "
              f"[{time.perf_counter() - start:.1f} s]", flush=True)
    return rows


def load_run(run_dir: Path, frames: int | None):
    """(algo name, config, saved frames, params) of a --out directory; a missing point raises naming the ones saved."""
    import jax
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    from jaxrl.dqn.envs.atari import NUM_RAM_BYTES
    from jaxrl.dqn.ppo import ActorCritic

    settings = json.loads((run_dir / "config.json").read_text())
    algo = settings.pop("algo")
    config = CONFIGS[algo](**settings)
    saved = sorted(int(path.name.split("-")[1]) for path in run_dir.glob("params-*"))
    if not saved or (frames is not None and frames not in saved):
        raise SystemExit(f"error: {run_dir} has no parameters saved at {frames} frames (saved: {saved})")
    frames = saved[-1] if frames is None else frames
    num_actions = 6  # SpaceInvaders' minimal action set, the only game the encodings decode
    network = ActorCritic.from_config(num_actions, config)
    abstract = jax.eval_shape(network.init, jax.random.key(0),
                              jnp.zeros((1, config.frame_stack * NUM_RAM_BYTES), jnp.uint8))
    return algo, config, frames, network, ocp.StandardCheckpointer().restore(run_dir / f"params-{frames}", abstract)


def play_saved(args) -> None:
    """Render a saved PPO agent with the DQN agent's player (its envs: sticky actions, full games)."""
    from jaxrl.dqn.config import DQNConfig
    from jaxrl.dqn.run.evaluate import play

    algo, config, frames, network, params = load_run(Path(args.run_dir).resolve(), args.frames)
    from jaxrl.dqn.ppo import act

    policy = act(network, greedy=False)
    env_settings = DQNConfig(frame_stack=config.frame_stack, obs_encoding=config.obs_encoding)
    returns = play(env_settings, params, args.video, seed=args.seed, fps=args.fps, max_steps=args.max_steps,
                   act=policy)
    print(f"{algo} agent at {frames:,} frames: score {returns[0]:.0f} -> {args.video}")


def evaluate_saved(args) -> None:
    """Score a saved PPO agent with each of `policies` on --episodes fresh envs of --seed."""
    import jax

    from jaxrl.dqn.envs.xla import make_envpool_xla_env

    algo, config, frames, network, params = load_run(Path(args.run_dir).resolve(), args.frames)
    eval_env = make_envpool_xla_env(args.episodes, args.seed, frame_stack=config.frame_stack)
    print(f"{algo} agent at {frames:,} frames, envs seeded {args.seed}:")
    evaluate_policies(network, params, eval_env, jax.random.key(args.seed), frames)
    eval_env.close()


def main(argv=None) -> None:
    config, args = parse_args(argv)
    if args.algo == "play":
        return play_saved(args)
    if args.algo == "eval":
        return evaluate_saved(args)
    import jax
    import orbax.checkpoint as ocp

    from jaxrl.dqn.envs.xla import make_envpool_xla_env
    from jaxrl.dqn.run.on_policy import train

    out = Path(args.out).resolve() if args.out else None
    if out is not None:
        out.mkdir(parents=True)
        (out / "config.json").write_text(json.dumps(dict(algo=args.algo, **dataclasses.asdict(config)), indent=1))
    env = make_envpool_xla_env(config.num_envs, config.seed, frame_stack=config.frame_stack)
    from jaxrl.dqn.ppo import make_ppo

    learner = make_ppo(env, config)
    eval_env = make_envpool_xla_env(args.eval_episodes, 10_000 + config.seed, frame_stack=config.frame_stack)
    checkpointer = ocp.StandardCheckpointer()
    eval_rows = []

    def evaluate_frozen(env_steps, params):
        eval_rows.extend(evaluate_policies(learner.network, params, eval_env, jax.random.key(config.seed + 1),
                                           FRAME_SKIP * env_steps))
        if out is not None:
            checkpointer.save(out / f"params-{FRAME_SKIP * env_steps}", params)
            checkpointer.wait_until_finished()
            write_csv(out / "evals.csv", eval_rows)

    milestones = tuple(frames // FRAME_SKIP for frames in args.eval_at_frames)
    params, rows = train(learner, env, jax.random.key(config.seed), num_steps=config.num_steps,
                         log_every=config.log_every, loss_names=LOSS_NAMES[args.algo], milestones=milestones,
                         at_milestone=evaluate_frozen, log=lambda line: print(line, flush=True))
    if out is not None:
        write_csv(out / "log.csv", rows)
    steps = learner.iterations * config.num_envs * config.num_steps
    if not eval_rows or eval_rows[-1]["frames"] != FRAME_SKIP * steps:  # the end, unless a milestone was
        evaluate_frozen(steps, params)
    env.close()
    eval_env.close()


LOSS_NAMES = {"ppo": ("loss", "policy_loss", "value_loss", "entropy")}


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` (dicts with the same keys, the first row's order) to ``path`` with a header."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
