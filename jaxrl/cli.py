"""The `jaxrl` command line: `jaxrl mlp ...`, `jaxrl dqn train|eval|play ...` and `jaxrl launch ...`.

Each subcommand lives beside the code it drives (`jaxrl/mlp/cli.py`, `jaxrl/dqn/run/cli.py`) and exposes
`add_parser(subparsers)`, which registers its parser and sets `func` to a callable taking the parsed
`argparse.Namespace` and returning an exit code. Heavy imports happen inside `func`, so `jaxrl --help` is quick
(it imports neither JAX nor scikit-learn).

Before running a subcommand, `main` joins a multi-process run when the environment configures one
(`jaxrl.distributed.initialize()`, e.g. under `jaxrl launch`; a no-op otherwise) and turns on the persistent XLA compilation cache
(`jaxrl.compilation_cache`: `~/.cache/jaxrl/xla`, `JAXRL_COMPILATION_CACHE=0` turns it off), so a second run
with the same shapes loads its compiled functions instead of compiling them again. A subcommand whose parser
sets the default `compilation_cache=False` (`jaxrl launch`, which only starts other processes) skips this.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from jaxrl import compilation_cache, distributed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxrl",
        description="scikit-learn's MLPs and a DQN agent as pure, jitted JAX functions.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from jaxrl.mlp import cli as mlp_cli
    from jaxrl.dqn.run import cli as dqn_cli
    from jaxrl import launch

    mlp_cli.add_parser(subparsers)
    dqn_cli.add_parser(subparsers)
    launch.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "compilation_cache", True):  # `jaxrl launch` runs no JAX itself
        distributed.initialize()  # joins a multi-process run when JAXRL_* variables configure one; else a no-op
        try:
            compilation_cache.enable()
        except OSError as error:  # e.g. a read-only home: run without the cache
            print(f"warning: persistent compilation cache off: {error}", file=sys.stderr)
    return int(args.func(args) or 0)
