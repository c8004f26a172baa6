"""Return curve of a DQN run from its ``metrics.csv`` and ``evals.csv`` (matplotlib, Agg: no display needed)."""
from __future__ import annotations

import csv
import os
from pathlib import Path

EVALS_FILE = "evals.csv"  # written by jaxrl.dqn.run.train: step, frames, eval_return of each checkpoint


def read_metrics(path: str | os.PathLike, required=()) -> dict[str, list[float]]:
    """Columns of a ``metrics.csv`` as float lists (empty cells -> nan); ``required``: columns it must have."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train a run first (jaxrl dqn train)")
    rows = _read_rows(path)
    if not rows:
        raise ValueError(f"{path} has no rows yet")
    return _float_columns(path, rows, required)


def _read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file; a damaged file (not UTF-8, not CSV) is a ``ValueError`` naming it."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path} is damaged ({error})") from None


def _float_columns(path: Path, rows: list[dict[str, str]], required=()) -> dict[str, list[float]]:
    """``rows`` as float columns (empty cells -> nan); a missing ``required`` column or a cell that is no number
    is a ``ValueError`` naming the file."""
    missing = [name for name in required if name not in rows[0]]
    if missing:
        raise ValueError(f"{path} is damaged (no {', '.join(missing)} column)")
    try:
        return {name: [float(row[name]) if row[name] != "" else float("nan") for row in rows] for name in rows[0]}
    except (ValueError, TypeError) as error:  # TypeError: a short row (None cells)
        raise ValueError(f"{path} is damaged ({error})") from None


def plot_returns(metrics_csv: str | os.PathLike, out_png: str | os.PathLike, *, random_return: float | None = 148.0
                 ) -> Path:
    """Mean episode return (last 100 episodes, and per logging window) against env frames, plus the loss.

    Where the run evaluated its checkpoints, ``evals.csv`` beside ``metrics_csv`` adds the frozen policy's eval
    returns: the training return measures a policy that changes with every update, the evals the parameters a
    checkpoint would play with.

    Args:
        metrics_csv: a run's ``metrics.csv``.
        out_png: where to write the PNG.
        random_return: a horizontal reference line (the random agent; None for none).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = read_metrics(metrics_csv, required=("frames", "window_return", "mean_return", "loss"))
    frames = [f / 1e6 for f in metrics["frames"]]
    fig, (ax_return, ax_loss) = plt.subplots(2, 1, figsize=(8, 6), sharex=True,
                                             gridspec_kw=dict(height_ratios=(3, 1)))
    ax_return.plot(frames, metrics["window_return"], ".", alpha=0.35, label="episodes in each log window")
    ax_return.plot(frames, metrics["mean_return"], "-", label="mean of the last 100 episodes")
    evals_csv = Path(metrics_csv).with_name(EVALS_FILE)
    evals = _read_rows(evals_csv) if evals_csv.is_file() else []
    if evals:
        columns = _float_columns(evals_csv, evals, required=("frames", "eval_return"))
        ax_return.plot([f / 1e6 for f in columns["frames"]], columns["eval_return"],
                       "s--", color="tab:green", label="eval of each checkpoint (frozen policy)")
    if random_return is not None:
        ax_return.axhline(random_return, color="grey", ls="--", lw=1, label=f"random agent (≈{random_return:g})")
    ax_return.set_ylabel("episode return")
    ax_return.legend(loc="upper left")
    ax_return.grid(alpha=0.3)
    ax_loss.plot(frames, metrics["loss"], "-", color="tab:red")
    ax_loss.set_ylabel("TD loss")
    ax_loss.set_xlabel("env frames (millions)")
    ax_loss.grid(alpha=0.3)
    fig.suptitle(f"DQN on SpaceInvaders RAM — {Path(metrics_csv).parent.name}")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
