"""A DQN run directory: ``config.json`` (the run's DQNConfig), ``metrics.csv``, ``evals.csv``, ``tb/`` and
``checkpoints/``; reading its config and checking it can be used (no JAX: ``jaxrl dqn eval`` and ``train``
both start here).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from jaxrl.dqn.config import DQNConfig

METRICS_FILE = "metrics.csv"
CONFIG_FILE = "config.json"


class RunDirError(ValueError):
    """The run directory cannot be used as asked (exists without --resume/--overwrite, or nothing to resume)."""


def write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


def load_run_config(run_dir: str | os.PathLike) -> DQNConfig:
    """The ``DQNConfig`` saved in ``run_dir/config.json``."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise RunDirError(f"{path} not found: is {run_dir} a jaxrl dqn run directory?")
    try:
        return DQNConfig.from_dict(json.loads(path.read_bytes().decode("utf-8")))
    except (ValueError, TypeError) as error:  # not UTF-8, not JSON, not a config
        raise RunDirError(f"{path} cannot be read as a run config ({error}); each checkpoint holds a copy "
                          f"(checkpoints/<step>/config/metadata)") from None


def prepare_run_dir(run_dir: str | os.PathLike, *, resume: bool, overwrite: bool) -> Path:
    """Check (and for a new run, create) ``run_dir``. An existing non-empty directory is only touched with
    ``resume`` (continue it) or ``overwrite`` (delete it first)."""
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite exclude each other")
    if resume:
        if not (run_dir / CONFIG_FILE).is_file():
            raise RunDirError(f"cannot resume: {run_dir} has no {CONFIG_FILE} (not a run directory, or never "
                              f"started); start a new run without --resume")
        return run_dir
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        if not overwrite:
            raise RunDirError(f"run directory {run_dir} already exists and is not empty; pass --resume to "
                              f"continue it, --overwrite to replace it, or choose another --run-dir")
        if not (run_dir / CONFIG_FILE).is_file():
            raise RunDirError(f"refusing to --overwrite {run_dir}: it is not a jaxrl dqn run directory "
                              f"(no {CONFIG_FILE}); delete it yourself or choose another --run-dir")
        shutil.rmtree(run_dir) if run_dir.is_dir() else run_dir.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir
