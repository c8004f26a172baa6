"""Checkpoints damaged after they were written (bad copy, flaky disk, bit rot): eval and --resume fall back to the
newest readable checkpoint with a one-line warning, an explicit step or a run without a readable checkpoint is a
clear error naming the run and the step, nothing is deleted, and no traceback reaches the user."""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxrl.dqn.config import preset
from jaxrl.dqn.learner import abstract_learner_state, make_learner
from jaxrl.dqn.run import checkpoint as ckpt
from jaxrl.dqn.run.evaluate import load_params
from jaxrl.dqn.run.train import train

BACKEND = "envpool" if importlib.util.find_spec("envpool") is not None else "gymnasium"
# 1,200 steps with checkpoints at 400, 800 and 1,200 (the last two at least are kept).
CONFIG = preset("tiny", backend=BACKEND, loop="python")
NEWEST, PREVIOUS = 1_200, 800


def _data_file(step_dir: Path) -> Path:
    """The largest array data file of a checkpoint's state (OCDBT, zstd-compressed chunks)."""
    return max((p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"),
               key=lambda p: p.stat().st_size)


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, max(path.stat().st_size, 64), np.uint8).tobytes())


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# kind -> (damage done to the newest checkpoint's directory, what the warning names as the reason)
DAMAGE = {
    "data-random-bytes": (lambda step_dir: _random_bytes(_data_file(step_dir)), "orbax cannot read it"),
    "data-truncated": (lambda step_dir: _truncate(_data_file(step_dir)), "orbax cannot read it"),
    "data-missing": (lambda step_dir: _data_file(step_dir).unlink(), "orbax cannot read it"),
    "state-metadata": (lambda step_dir: _random_bytes(step_dir / "state" / "_METADATA"), "state/_METADATA"),
    "host-json": (lambda step_dir: _random_bytes(step_dir / "host" / "metadata"), "host/metadata"),
    "config-json": (lambda step_dir: _random_bytes(step_dir / "config" / "metadata"), "config/metadata"),
    "metrics-json": (lambda step_dir: _random_bytes(step_dir / "metrics" / "metrics"), "metrics/metrics"),
    "host-missing": (lambda step_dir: (step_dir / "host" / "metadata").unlink(), "host/metadata: missing"),
}


def _steps(run_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


def _full_state(run_dir: Path, step):
    manager = ckpt.open_manager(run_dir, read_only=True)
    try:
        abstract = abstract_learner_state(make_learner(CONFIG, 6), CONFIG)
        return ckpt.restore_checkpoint(manager, abstract, CONFIG, step=step)
    finally:
        manager.close()


def _assert_same_tree(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    train(CONFIG, run, progress=False, log=lambda *_: None)
    assert {PREVIOUS, NEWEST} <= set(_steps(run))
    return run


@pytest.fixture
def damaged_run(trained_run, tmp_path):
    """``damaged_run(kind, only_newest=False)``: a copy of the trained run with its newest checkpoint damaged."""

    def make(kind: str, only_newest: bool = False) -> Path:
        run = tmp_path / kind
        shutil.copytree(trained_run, run)
        if only_newest:
            for step in _steps(run)[:-1]:
                shutil.rmtree(run / "checkpoints" / str(step))
        DAMAGE[kind][0](run / "checkpoints" / str(NEWEST))
        return run

    return make


def _check_warning(lines: list[str], run: Path, kind: str) -> None:
    assert len(lines) == 1, lines
    assert f"checkpoint {NEWEST} of {run} is damaged" in lines[0] and DAMAGE[kind][1] in lines[0]
    assert f"restoring checkpoint {PREVIOUS} instead" in lines[0] and "\n" not in lines[0]


@pytest.mark.parametrize("kind", DAMAGE)
def test_eval_falls_back_to_the_previous_checkpoint_and_refuses_the_damaged_step(trained_run, damaged_run, kind):
    run = damaged_run(kind)
    lines = []
    params, _, step = load_params(run, warn=lines.append)
    assert step == PREVIOUS
    _check_warning(lines, run, kind)
    _assert_same_tree(params, load_params(trained_run, PREVIOUS)[0])
    with pytest.raises(ckpt.DamagedCheckpointError, match=f"checkpoint {NEWEST} of {re.escape(str(run))} is damaged"):
        load_params(run, NEWEST)
    # library callers get a DamagedCheckpointWarning by default
    with pytest.warns(ckpt.DamagedCheckpointWarning, match=f"checkpoint {NEWEST}"):
        assert _full_state(run, "latest")[3] == PREVIOUS
    assert (run / "checkpoints" / str(NEWEST)).is_dir()  # read-only: nothing moved, nothing deleted


@pytest.mark.parametrize("kind", DAMAGE)
def test_restore_for_a_resume_sets_the_damaged_checkpoint_aside_and_saves_over_its_step(damaged_run, kind):
    """What ``train(resume=True)`` asks of the checkpoints, without the training."""
    run = damaged_run(kind)
    newest_dir = run / "checkpoints" / str(NEWEST)
    damaged_files = sorted(p.relative_to(newest_dir) for p in newest_dir.rglob("*"))
    manager = ckpt.open_manager(run, CONFIG.keep_checkpoints)
    abstract = abstract_learner_state(make_learner(CONFIG, 6), CONFIG)
    lines = []
    try:
        state, host, _, step = ckpt.restore_checkpoint(manager, abstract, CONFIG, host_keys=("segment",),
                                                       warn=lines.append, set_aside_damaged=True)
        assert step == PREVIOUS and manager.latest_step() == PREVIOUS
        ckpt.save_checkpoint(manager, NEWEST, state, host, CONFIG, eval_return=1.0)  # the resumed run's next save
    finally:
        manager.close()
    _check_warning(lines, run, kind)
    aside = run / "checkpoints" / f"damaged-{NEWEST}"
    assert f"kept in {aside}" in lines[0]
    assert sorted(p.relative_to(aside) for p in aside.rglob("*")) == damaged_files  # moved, not deleted
    assert _full_state(run, NEWEST)[1] == host


@pytest.mark.parametrize("kind", ["data-random-bytes", "metrics-json"])  # read failure; hidden by the manager
def test_resume_continues_from_the_previous_checkpoint_bit_for_bit(trained_run, damaged_run, kind):
    run = damaged_run(kind)
    lines = []
    result = train(CONFIG, run, resume=True, progress=False, log=lines.append)
    warnings = [line.removeprefix("warning: ") for line in lines if line.startswith("warning: ")]
    _check_warning(warnings, run, kind)
    assert f"kept in {run / 'checkpoints' / f'damaged-{NEWEST}'}" in warnings[0]
    assert any(f"from checkpoint {PREVIOUS}" in line for line in lines)
    assert result.env_steps == result.last_checkpoint == NEWEST
    # the resumed run's new checkpoint loads and is the uninterrupted run's, bit for bit
    state, host, _, step = _full_state(run, "latest")
    straight, straight_host, _, _ = _full_state(trained_run, NEWEST)
    assert step == NEWEST
    _assert_same_tree(state, straight)
    assert host["recent_returns"] == straight_host["recent_returns"]


def test_best_falls_back_to_the_newest_readable_checkpoint(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    manager = ckpt.open_manager(run, read_only=True)
    best = ckpt.best_step(manager)
    manager.close()
    DAMAGE["data-random-bytes"][0](run / "checkpoints" / str(best))
    lines = []
    _, _, step = load_params(run, "best", warn=lines.append)
    assert step == max(s for s in _steps(run) if s != best) and len(lines) == 1
    assert f"checkpoint {best} of {run} is damaged" in lines[0] and f"restoring checkpoint {step} instead" in lines[0]


def test_host_json_without_the_training_counters_counts_as_damaged(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "checkpoints" / str(NEWEST) / "host" / "metadata").write_text('{"segment": 3}')  # valid JSON, too few keys
    manager = ckpt.open_manager(run, read_only=True)
    abstract = abstract_learner_state(make_learner(CONFIG, 6), CONFIG)
    lines = []
    try:
        assert ckpt.restore_checkpoint(manager, abstract, CONFIG)[3] == NEWEST  # eval needs no counters
        _, _, _, step = ckpt.restore_checkpoint(manager, abstract, CONFIG, host_keys=("segment", "episodes"),
                                                warn=lines.append)
    finally:
        manager.close()
    assert step == PREVIOUS and "host/metadata: no episodes" in lines[0]


def test_a_run_whose_only_checkpoint_is_damaged_is_a_clear_error(damaged_run):
    run = damaged_run("data-random-bytes", only_newest=True)
    message = f"no readable checkpoint in {run}: every one is damaged (checkpoint {NEWEST}: orbax cannot read it"
    with pytest.raises(ckpt.DamagedCheckpointError, match=re.escape(message)):
        load_params(run)
    before = sorted(p.relative_to(run) for p in (run / "checkpoints").rglob("*"))
    with pytest.raises(ckpt.DamagedCheckpointError, match=re.escape(message)):
        train(CONFIG, run, resume=True, progress=False, log=lambda *_: None)
    assert sorted(p.relative_to(run) for p in (run / "checkpoints").rglob("*")) == before  # nothing moved


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaxrl", "dqn", *args], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))


def test_command_line_warns_or_fails_in_one_line_without_traceback(damaged_run):
    """The damage that used to end in orbax's error and "Event loop is closed" tracebacks at exit."""
    run = damaged_run("data-random-bytes")
    done = _cli("eval", "--run-dir", str(run), "--episodes", "1", "--backend", BACKEND)
    assert done.returncode == 0, done.stderr
    assert f"warning: checkpoint {NEWEST} of {run} is damaged" in done.stderr
    assert f"checkpoint {PREVIOUS}" in done.stdout
    assert "Traceback" not in done.stderr and "Event loop is closed" not in done.stderr
    failed = _cli("eval", "--run-dir", str(run), "--episodes", "1", "--backend", BACKEND, "--checkpoint", str(NEWEST))
    assert failed.returncode == 2
    assert failed.stderr.startswith(f"jaxrl dqn eval: error: checkpoint {NEWEST} of {run} is damaged (")
    assert len(failed.stderr.strip().splitlines()) == 1 and "Traceback" not in failed.stderr


def test_damaged_run_files_are_errors_naming_the_file(trained_run, tmp_path):
    from jaxrl.dqn.run.plots import plot_returns

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    _random_bytes(run / "metrics.csv")
    with pytest.raises(ValueError, match=re.escape(f"{run / 'metrics.csv'} is damaged")):
        plot_returns(run / "metrics.csv", tmp_path / "returns.png")
    _random_bytes(run / "config.json")
    with pytest.raises(ValueError, match=re.escape(f"{run / 'config.json'} cannot be read as a run config")):
        load_params(run)


def test_loading_a_sound_checkpoint_prints_only_the_result(trained_run, tmp_path):
    """eval and play load orbax checkpoints without absl's INFO / WARNING lines (e.g. "read only directory")."""
    done = _cli("eval", "--run-dir", str(trained_run), "--episodes", "1", "--backend", BACKEND)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith(f"{trained_run} checkpoint {NEWEST}")
    assert done.stderr.strip() == "", done.stderr
    played = _cli("play", "--run-dir", str(trained_run), "--episodes", "1", "--max-steps", "20", "--backend", BACKEND,
                  "--video", str(tmp_path / "play.gif"))
    assert played.returncode == 0 and played.stderr.strip() == "", played.stderr


def test_asyncio_reports_of_unretrieved_checkpoint_read_errors_are_dropped_and_others_kept():
    import logging

    from jaxrl.dqn.run.checkpoint import _drop_unretrieved_read_errors

    def record(msg, error):
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, None, (type(error), error, None))

    read_error = ValueError('FAILED_PRECONDITION: Error reading "dqn.params" in OCDBT database')
    assert not _drop_unretrieved_read_errors(record("Task exception was never retrieved", read_error))
    assert _drop_unretrieved_read_errors(record("Task exception was never retrieved", ValueError("other")))
    assert _drop_unretrieved_read_errors(record("Exception in callback", read_error))
