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

**Damaged checkpoints.** A checkpoint can also be damaged after it was written (a bad copy, a flaky disk, bit
rot). ``restore_checkpoint`` checks each one it reads: every JSON file of the step (orbax's step and state
metadata, ``host``, ``config``, the metrics) must parse, the ``config`` must be a valid ``DQNConfig`` and the
``host`` hold the keys asked for, orbax must read the state's array metadata with the expected shapes and dtypes,
and the full restore must succeed (tensorstore checks the zstd frames of the array data). A damaged ``"latest"``
or ``"best"`` checkpoint is reported in one line and the newest readable one is restored instead; an explicit
step is restored exactly or refused with a ``DamagedCheckpointError`` naming the run and the step. Nothing
damaged is ever deleted: managers do not see a checkpoint whose JSON files are unreadable (orbax would fail to
list the run), and a resumed run moves the damaged ones it found to ``checkpoints/damaged-<step>/``, where
they can no longer collide with the run's new saves.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Collection, Iterator

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from jaxrl.dqn.buffers import sum_tree
from jaxrl.dqn.config import DQNConfig, config_differences

CHECKPOINT_SUBDIR = "checkpoints"
ITEMS = ("state", "host", "config")
DAMAGED_PREFIX = "damaged-"  # a resumed run moves a damaged checkpoint <step>/ to damaged-<step>/
# The JSON files of a finished checkpoint (relative to its step directory) and whether each must exist: orbax's
# step metadata, the state's tree metadata, the host and config items, the metrics (absent without a score).
JSON_FILES = {"_CHECKPOINT_METADATA": False, "state/_METADATA": True, "host/metadata": True,
              "config/metadata": True, "metrics/metrics": False}
_STEP_NAME = re.compile(r"0|[1-9]\d*")  # orbax's standard step directory names


class ConfigMismatchError(ValueError):
    """A checkpoint was written with a different config than the one asked to resume it."""


class DamagedCheckpointError(ValueError):
    """A checkpoint's files cannot be read or fail validation (damaged after it was written), or no checkpoint
    of a run is readable; ``damaged`` maps each damaged step to the reason."""

    def __init__(self, message: str, damaged: dict[int, str]):
        super().__init__(message)
        self.damaged = damaged


class DamagedCheckpointWarning(UserWarning):
    """``restore_checkpoint`` skipped a damaged checkpoint and restored an older one."""


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir).absolute() / CHECKPOINT_SUBDIR


def open_manager(run_dir: str | os.PathLike, keep_last: int = 3, *, read_only: bool = False
                 ) -> ocp.CheckpointManager:
    """The run's ``CheckpointManager``: synchronous, atomic saves; keeps the last ``keep_last`` + the best.

    The manager does not see checkpoints whose JSON files are unreadable (``damaged_json``): orbax reads every
    step's metrics when it opens a run and would fail on one. ``restore_checkpoint`` still reports them.
    """
    damaged = damaged_json(checkpoint_dir(run_dir))
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
        step_name_format=(_HiddenSteps(ocp.path.step.standard_name_format(), frozenset(damaged))
                          if damaged else None),
    )
    return ocp.CheckpointManager(checkpoint_dir(run_dir), options=options, item_names=ITEMS)


def _to_host(tree: Any) -> Any:
    """Device arrays -> NumPy (orbax saves either; NumPy keeps the save independent of donation). Arrays
    sharded over several processes stay as they are: orbax writes each process's shards."""
    def one(x):
        return x if isinstance(x, jax.Array) and not x.is_fully_addressable else np.asarray(jax.device_get(x))

    return jax.tree.map(one, tree)


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
    """The config stored with checkpoint ``step`` (default: the latest).

    Raises ``DamagedCheckpointError`` when its JSON cannot be read or is not a valid ``DQNConfig``.
    """
    step = _pick_step(manager, step)
    try:
        values = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    except Exception as error:  # whatever orbax fails with: the file cannot be read
        raise _damaged(manager, step, f"config/metadata: {_describe(error)}") from None
    if not isinstance(values, dict):
        raise _damaged(manager, step, "config/metadata: not a JSON object")
    try:
        return DQNConfig.from_dict(values)
    except (ValueError, TypeError) as error:
        raise _damaged(manager, step, f"config/metadata: not a valid DQNConfig ({error})") from None


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


def saved_steps(manager: ocp.CheckpointManager) -> list[int]:
    """Every finished checkpoint of the manager's run, newest first: those it lists and the damaged ones it hides."""
    return sorted(set(manager.all_steps()) | set(damaged_json(manager.directory)), reverse=True)


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
                       step: int | str | None = None, *, host_keys: Collection[str] = (),
                       warn: Callable[[str], None] | None = None, set_aside_damaged: bool = False
                       ) -> tuple[Any, dict, DQNConfig, int]:
    """Load checkpoint ``step`` (an int, ``"latest"`` or ``"best"``; default latest), checked for damage.

    ``"latest"`` and ``"best"`` fall back to the newest readable checkpoint when the one asked for is damaged
    (its files cannot be read or fail validation, see the module docstring); an int is that step or an error.

    Args:
        abstract_state: a ``LearnerState`` of ``jax.ShapeDtypeStruct`` (``jax.eval_shape`` of ``init``) or of
            arrays, giving the tree structure, shapes and dtypes to restore into.
        config: when given, the stored config must match it (``check_config``) before anything is loaded.
        host_keys: keys the host JSON must have (a checkpoint without them counts as damaged).
        warn: called with one line for each damaged checkpoint found (default: ``warnings.warn`` with a
            ``DamagedCheckpointWarning``).
        set_aside_damaged: move each damaged checkpoint found to ``checkpoints/damaged-<step>/`` once another
            one is restored (a resumed run, whose new saves must not collide with them); nothing moves when no
            checkpoint could be restored.

    Returns:
        (state, host, saved_config, step).

    Raises:
        DamagedCheckpointError: the step asked for, or every checkpoint, is damaged (a ``ValueError`` naming the
            run directory and the steps).
        ConfigMismatchError: the stored config differs from ``config``.
        FileNotFoundError: the run has no checkpoint; ValueError: no checkpoint at that step, or one written by
            an incompatible version.
    """
    _quiet_closed_event_loop()
    listed = set(manager.all_steps())
    hidden = {s: reason for s, reason in damaged_json(manager.directory).items() if s not in listed}
    abstract_state = jax.tree.map(  # where the restored arrays go: the target's sharding, if it has one
        lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=getattr(x, "sharding", None)), abstract_state)

    def load(candidate: int):
        return _restore_step(manager, candidate, abstract_state, config, host_keys)

    if step not in (None, "latest", "best"):
        if int(step) in hidden:
            raise _damaged(manager, int(step), hidden[int(step)])
        return load(_pick_step(manager, step))
    every = sorted(listed | set(hidden), reverse=True)
    if not every:
        raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    best = best_step(manager) if step == "best" else None
    order = ([best] if best is not None else []) + [s for s in every if s != best]
    damaged = dict(hidden)
    for candidate in order:
        if candidate in damaged:
            continue
        try:
            restored = load(candidate)
            break
        except DamagedCheckpointError as error:
            damaged.update(error.damaged)
    else:
        parts = "; ".join(f"checkpoint {s}: {damaged[s]}" for s in order)
        raise DamagedCheckpointError(f"no readable checkpoint in {_run_dir(manager)}: every one is damaged ({parts})",
                                     damaged)
    used = restored[3]
    for bad in order:
        if bad not in damaged:
            continue
        instead = f"restoring checkpoint {used} instead" if order.index(bad) < order.index(used) else "skipped"
        message = f"checkpoint {bad} of {_run_dir(manager)} is damaged ({damaged[bad]}); {instead}"
        if set_aside_damaged:
            message += f"; its files are kept in {_set_aside(Path(manager.directory), bad)}"
        if warn is None:
            warnings.warn(message, DamagedCheckpointWarning, stacklevel=2)
        else:
            warn(message)
    if set_aside_damaged and damaged:
        manager.reload()
    return restored


def _restore_step(manager: ocp.CheckpointManager, step: int, abstract_state: Any, config: DQNConfig | None,
                  host_keys: Collection[str]) -> tuple[Any, dict, DQNConfig, int]:
    """``restore_checkpoint`` of exactly ``step``; ``DamagedCheckpointError`` when a check fails."""
    where = f"checkpoint {step} in {manager.directory}"
    reason = _json_damage(Path(manager.directory) / str(step))
    if reason is not None:
        raise _damaged(manager, step, reason)
    stored = saved_config(manager, step)
    if config is not None:
        check_config(stored, config, where=where)
    _check_state_metadata(manager, step, abstract_state, where)
    try:
        try:
            restored = manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), host=ocp.args.JsonRestore()))
            state = restored["state"]
            legacy = False
        except ValueError as error:
            if "tree structures do not match" not in str(error) and "Structure mismatch" not in str(error):
                raise
            # A checkpoint written before optional (None) state fields existed (e.g. LearnerState.nstep): the
            # stored tree lacks those keys. Read it as saved and fill the expected structure leaf by leaf.
            restored = manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(), host=ocp.args.JsonRestore()))
            legacy = True
    except Exception as error:  # the metadata matched: a failed read means damaged files
        raise _damaged(manager, step, f"orbax cannot read it: {_describe(error)}") from None
    if legacy:
        state = _fill_from_saved(abstract_state, restored["state"], where=where)
    host = restored["host"]
    if not isinstance(host, dict):
        raise _damaged(manager, step, "host/metadata: not a JSON object")
    missing = sorted(set(host_keys) - set(host))
    if missing:
        raise _damaged(manager, step, f"host/metadata: no {', '.join(missing)}")
    return state, dict(host), stored, step


def _check_state_metadata(manager: ocp.CheckpointManager, step: int, abstract_state: Any, where: str) -> None:
    """orbax's metadata check of the state item: it must be readable (else the checkpoint is damaged), and
    every array it shares with ``abstract_state`` must have the expected shape and dtype (else ``ValueError``:
    written by an incompatible version, not damaged)."""
    handler = ocp.StandardCheckpointHandler()
    try:
        metadata = handler.metadata(manager.directory / str(step) / "state")
    except Exception as error:  # whatever orbax fails with: the metadata cannot be read
        raise _damaged(manager, step, f"state metadata: {_describe(error)}") from None
    finally:
        handler.close()
    stored = {_key_names(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(metadata)[0]}
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]:
        saved = stored.get(_key_names(path))
        if saved is None or not hasattr(saved, "shape"):
            continue  # a field the checkpoint lacks: the restore names it
        if tuple(saved.shape) != tuple(leaf.shape) or np.dtype(saved.dtype) != leaf.dtype:
            raise ValueError(f"{where}: state{jax.tree_util.keystr(path)} is {np.dtype(saved.dtype)}"
                             f"{list(saved.shape)} on disk, {leaf.dtype}{list(leaf.shape)} expected")


def _key_names(path) -> tuple[str, ...]:
    """A pytree key path as plain names: a NamedTuple field, a dict key and a list index alike."""
    return tuple(str(getattr(entry, "name", getattr(entry, "key", getattr(entry, "idx", entry)))) for entry in path)


# -- damage: detection, reporting, setting aside ------------------------------------------------------
def damaged_json(directory: str | os.PathLike) -> dict[int, str]:
    """The finished checkpoints in ``directory`` (a run's ``checkpoints/``) with a JSON file (``JSON_FILES``)
    missing or unreadable: ``{step: reason}``."""
    directory = Path(directory)
    if not directory.is_dir():
        return {}
    damaged = {}
    for step_dir in directory.iterdir():
        if _STEP_NAME.fullmatch(step_dir.name) and step_dir.is_dir():
            reason = _json_damage(step_dir)
            if reason is not None:
                damaged[int(step_dir.name)] = reason
    return damaged


def _json_damage(step_dir: Path) -> str | None:
    """Why a JSON file of the checkpoint in ``step_dir`` fails (missing, not UTF-8, not JSON), or None."""
    for name, required in JSON_FILES.items():
        try:
            json.loads((step_dir / name).read_bytes().decode("utf-8"))
        except FileNotFoundError:
            if required:
                return f"{name}: missing"
        except (OSError, ValueError) as error:
            return f"{name}: not valid JSON ({_describe(error)})"
    return None


def _damaged(manager: ocp.CheckpointManager, step: int, reason: str) -> DamagedCheckpointError:
    return DamagedCheckpointError(f"checkpoint {step} of {_run_dir(manager)} is damaged ({reason})", {step: reason})


def _run_dir(manager: ocp.CheckpointManager) -> Path:
    return Path(manager.directory).parent


def _describe(error: BaseException) -> str:
    """The first line of an error's message, without tensorstore's trailing spec and source locations."""
    message = re.sub(r"\s*See full TensorStore details:.*", "", str(error), flags=re.DOTALL)  # a multi-line spec
    lines = message.strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return re.sub(r"\s*\[(tensorstore_spec|source locations)=.*$", "", text)


def _set_aside(directory: Path, step: int) -> Path:
    """Rename checkpoint ``step`` to ``damaged-<step>`` (``-1``, ``-2``, ... if taken), out of orbax's sight."""
    target = directory / f"{DAMAGED_PREFIX}{step}"
    suffix = 0
    while target.exists():
        suffix += 1
        target = directory / f"{DAMAGED_PREFIX}{step}-{suffix}"
    (directory / str(step)).rename(target)
    return target


@dataclasses.dataclass(frozen=True)
class _HiddenSteps(ocp.path.step.NameFormat):
    """orbax's step ``NameFormat`` minus the ``hidden`` steps: the manager neither lists nor reads them."""

    name_format: Any  # the NameFormat wrapped (orbax's standard one)
    hidden: frozenset[int]

    def build_name(self, step: int) -> str:
        return self.name_format.build_name(step)

    def find_all(self, base_path) -> Iterator[Any]:
        return (found for found in self.name_format.find_all(base_path) if found.step not in self.hidden)

    def find_step(self, base_path, step: int) -> Any:
        if step in self.hidden:
            raise ValueError(f"checkpoint {step} in {base_path} is damaged")
        return self.name_format.find_step(base_path, step)


def _quiet_closed_event_loop() -> None:
    """Drop the ``RuntimeError: Event loop is closed`` reports that follow a failed restore.

    orbax runs each restore in a fresh asyncio event loop and closes it as soon as one read fails; tensorstore
    still finishes the other reads, and their completion callbacks find the loop closed. Python reports each
    through ``sys.unraisablehook``: tracebacks on stderr, up to interpreter exit, saying nothing about the
    checkpoint (whose failure is reported as such). The hook installed here (once) drops exactly those reports
    and hands every other one to the hook it replaces.
    """
    previous = sys.unraisablehook
    if getattr(previous, "drops_closed_event_loop", False):
        return

    def hook(report) -> None:
        if isinstance(report.exc_value, RuntimeError) and str(report.exc_value) == "Event loop is closed":
            return
        previous(report)

    hook.drops_closed_event_loop = True
    sys.unraisablehook = hook
    # The same race's other face: a read that fails after the first one is a task whose exception nobody retrieves,
    # which asyncio logs with its traceback when the task is collected. Dropped when it is a tensorstore read error.
    logging.getLogger("asyncio").addFilter(_drop_unretrieved_read_errors)


def _drop_unretrieved_read_errors(record: logging.LogRecord) -> bool:
    """False (drop) for asyncio's "exception was never retrieved" record of a checkpoint read that failed."""
    error = record.exc_info[1] if record.exc_info else None
    return not ("exception was never retrieved" in str(record.msg) and isinstance(error, ValueError)
                and "Error reading" in str(error))


def _fill_from_saved(abstract_state: Any, saved: Any, where: str) -> Any:
    """``abstract_state``'s structure with each leaf read from the nested dicts/lists ``saved`` by its path."""

    def find(path):
        node = saved
        for entry in path:
            name = getattr(entry, "name", getattr(entry, "key", getattr(entry, "idx", None)))
            if isinstance(node, dict):
                node = node.get(name, node.get(str(name)))
            elif isinstance(node, (list, tuple)) and isinstance(name, int) and name < len(node):
                node = node[name]
            else:
                return None
            if node is None:
                return None
        return node

    def lookup(path, leaf):
        node = find(path)
        label = jax.tree_util.keystr(path)
        if node is None and _key_names(path)[-1:] == ("sum_tree",):  # written before the sum tree: rebuild it
            priorities = find(path[:-1] + (jax.tree_util.GetAttrKey("priorities"),))
            node = None if priorities is None else sum_tree.build(np.asarray(priorities))
        if node is None:
            raise ValueError(f"{where} has no value for state{label}: it was written by an incompatible version")
        value = np.asarray(node)
        if value.shape != tuple(leaf.shape) or value.dtype != leaf.dtype:
            raise ValueError(f"{where}: state{label} is {value.dtype}{list(value.shape)} on disk, "
                             f"{leaf.dtype}{list(leaf.shape)} expected")
        return value

    return jax.tree_util.tree_map_with_path(lookup, abstract_state)
