"""Orbax checkpoints of a DQN run: atomic, last N plus the best by eval return, enough to resume bit-for-bit.

A checkpoint (``<run_dir>/checkpoints/<step>/``) holds three items:

- ``state``: the whole ``LearnerState`` pytree (params, target params, Adam state, replay buffer, per-env
  bookkeeping, PRNG key, step counters), saved with ``StandardSave``;
- ``host``: JSON of the host-side counters of the training loop (episodes, recent returns, segment index,
  wall time, ...);
- ``config``: the ``DQNConfig`` as JSON, checked on restore: a checkpoint from a different config (network
  shape, env, agent hyper-parameters; only ``RESUMABLE_FIELDS`` may differ) is refused with a ``ValueError``.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a save interrupted
by a crash or SIGKILL leaves the previous checkpoints loadable (the half-written temporary directory is
ignored). The preservation policy keeps the latest ``keep_last`` checkpoints and, in addition, the one with
the best ``eval_return`` metric.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from jaxrl.dqn.config import DQNConfig, config_differences

CHECKPOINT_SUBDIR = "checkpoints"
ITEMS = ("state", "host", "config")


class ConfigMismatchError(ValueError):
    """A checkpoint was written with a different config than the one asked to resume it."""


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir).absolute() / CHECKPOINT_SUBDIR


def open_manager(run_dir: str | os.PathLike, keep_last: int = 3, *, read_only: bool = False
                 ) -> ocp.CheckpointManager:
    """The run's ``CheckpointManager``: synchronous, atomic saves; keeps the last ``keep_last`` + the best."""
    policy = checkpoint_managers.AnyPreservationPolicy([
        checkpoint_managers.LatestN(n=int(keep_last)),
        checkpoint_managers.BestN(get_metric_fn=lambda metrics: metrics["eval_return"], n=1,
                                  keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy,
        best_fn=lambda metrics: metrics["eval_return"],  # makes orbax write the metrics (reloaded on resume)
        best_mode="max",
        enable_async_checkpointing=False,  # the save is complete (and renamed into place) when save returns
        create=not read_only,
        read_only=read_only,
        cleanup_tmp_directories=not read_only,  # drop a half-written save left by a killed run
    )
    return ocp.CheckpointManager(checkpoint_dir(run_dir), options=options, item_names=ITEMS)


def _to_host(tree: Any) -> Any:
    """Device arrays -> NumPy (orbax saves either; NumPy keeps the save independent of donation)."""
    return jax.tree.map(np.asarray, jax.device_get(tree))


def save_checkpoint(manager: ocp.CheckpointManager, step: int, state: Any, host: dict, config: DQNConfig,
                    eval_return: float | None = None) -> None:
    """Write checkpoint ``step`` (atomically) and apply the preservation policy.

    Args:
        step: env steps at the checkpoint (the directory name).
        state: the ``LearnerState`` pytree.
        host: JSON-serialisable host-side counters.
        config: the run's config (saved and later checked on restore).
        eval_return: score for "best" (None: this checkpoint never counts as best).
    """
    metrics = None if eval_return is None else {"eval_return": float(eval_return)}
    manager.save(
        int(step),
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(_to_host(state)),
            host=ocp.args.JsonSave(dict(host)),
            config=ocp.args.JsonSave(config.to_dict()),
        ),
        metrics=metrics,
        force=True,
    )
    manager.wait_until_finished()


def saved_config(manager: ocp.CheckpointManager, step: int | None = None) -> DQNConfig:
    """The config stored with checkpoint ``step`` (default: the latest)."""
    step = _pick_step(manager, step)
    restored = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    values = dict(restored["config"])
    values["hidden_sizes"] = tuple(values["hidden_sizes"])
    return DQNConfig.from_dict(values)


def check_config(saved: DQNConfig, current: DQNConfig, where: str = "the checkpoint") -> None:
    """Raise ``ConfigMismatchError`` naming every field (other than the resumable ones) that differs."""
    diff = config_differences(saved, current)
    if diff:
        parts = "; ".join(f"{name}={a!r} there, {b!r} here" for name, (a, b) in sorted(diff.items()))
        raise ConfigMismatchError(
            f"{where} was written with a different config ({parts}); resume with the same settings or start "
            f"a new run directory")


def best_step(manager: ocp.CheckpointManager) -> int | None:
    """The kept checkpoint with the highest ``eval_return`` (None when no checkpoint has one)."""
    scored = []
    for step in manager.all_steps():
        metrics = manager.metrics(step) or {}
        if "eval_return" in metrics:
            scored.append((float(metrics["eval_return"]), step))
    return int(max(scored)[1]) if scored else None


def _pick_step(manager: ocp.CheckpointManager, step: int | str | None) -> int:
    steps = manager.all_steps()
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    if step is None or step == "latest":
        return int(manager.latest_step())
    if step == "best":
        best = best_step(manager)
        return int(best if best is not None else manager.latest_step())
    if int(step) not in steps:
        raise ValueError(f"no checkpoint at step {step} in {manager.directory}; saved steps: {sorted(steps)}")
    return int(step)


def restore_checkpoint(manager: ocp.CheckpointManager, abstract_state: Any, config: DQNConfig | None = None,
                       step: int | str | None = None) -> tuple[Any, dict, DQNConfig, int]:
    """Load checkpoint ``step`` (an int, ``"latest"`` or ``"best"``; default latest).

    Args:
        abstract_state: a ``LearnerState`` of ``jax.ShapeDtypeStruct`` (``jax.eval_shape`` of ``init``) or of
            arrays, giving the tree structure, shapes and dtypes to restore into.
        config: when given, the stored config must match it (``check_config``) before anything is loaded.

    Returns:
        (state, host, saved_config, step).
    """
    step = _pick_step(manager, step)
    stored = saved_config(manager, step)
    if config is not None:
        check_config(stored, config, where=f"checkpoint {step} in {manager.directory}")
    abstract_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), abstract_state)
    try:
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), host=ocp.args.JsonRestore()))
        state = restored["state"]
    except ValueError as error:
        if "tree structures do not match" not in str(error):
            raise
        # A checkpoint written before optional (None) state fields existed (e.g. LearnerState.nstep): the
        # stored tree lacks those keys. Read it as saved and fill the expected structure leaf by leaf.
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(), host=ocp.args.JsonRestore()))
        state = _fill_from_saved(abstract_state, restored["state"], where=f"checkpoint {step} in {manager.directory}")
    return state, dict(restored["host"]), stored, step


def _fill_from_saved(abstract_state: Any, saved: Any, where: str) -> Any:
    """``abstract_state``'s structure with each leaf read from the nested dicts/lists ``saved`` by its path."""

    def lookup(path, leaf):
        node = saved
        for entry in path:
            name = getattr(entry, "name", getattr(entry, "key", getattr(entry, "idx", None)))
            if isinstance(node, dict):
                node = node.get(name, node.get(str(name)))
            elif isinstance(node, (list, tuple)) and isinstance(name, int) and name < len(node):
                node = node[name]
            else:
                node = None
            if node is None:
                break
        label = jax.tree_util.keystr(path)
        if node is None:
            raise ValueError(f"{where} has no value for state{label}: it was written by an incompatible version")
        value = np.asarray(node)
        if value.shape != tuple(leaf.shape) or value.dtype != leaf.dtype:
            raise ValueError(f"{where}: state{label} is {value.dtype}{list(value.shape)} on disk, "
                             f"{leaf.dtype}{list(leaf.shape)} expected")
        return value

    return jax.tree_util.tree_map_with_path(lookup, abstract_state)
