"""Pictures of a fitted MLP classifier: first-layer weights, training curves, confusion matrix, mistakes.

Plain functions from arrays to a PNG file. They build `matplotlib.figure.Figure` objects directly and render
with the Agg canvas, so they never touch pyplot's global state or need a display. Each file is written to a
temporary name and moved into place, so a failed plot never leaves half a PNG over an earlier one.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "plot_first_layer_weights",
    "plot_training_curves",
    "plot_confusion_matrix",
    "plot_misclassified",
]


def save_figure(figure: Figure, path: str | os.PathLike) -> Path:
    """Write `figure` as a PNG at `path` atomically (temporary file, then `os.replace`); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    temp = path.with_name(f".{path.name}.tmp")
    figure.savefig(temp, format="png", dpi=figure.dpi)
    os.replace(temp, path)
    return path


def _grid(count: int, max_columns: int) -> tuple[int, int]:
    columns = min(max_columns, max(1, math.ceil(math.sqrt(count))))
    return math.ceil(count / columns), columns


def plot_first_layer_weights(
    coef: np.ndarray,
    image_shape: tuple[int, int],
    path: str | os.PathLike,
    *,
    max_units: int = 36,
    title: str = "First-layer weights",
) -> Path:
    """Each hidden unit's incoming weights shown as an image, as in scikit-learn's "Visualization of MLP
    weights on MNIST" example (gray colormap, colour limits at half the extreme weights).

    Args:
      coef: [n_features, n_hidden] the estimator's `coefs_[0]`; n_features must equal H * W.
      image_shape: (H, W), e.g. (28, 28) or (8, 8) for digits.
      path: PNG to write.
      max_units: show at most this many hidden units (the first ones).
    """
    coef = np.asarray(coef)
    height, width = image_shape
    if coef.ndim != 2 or coef.shape[0] != height * width:
        raise ValueError(f"coef must have shape [{height * width}, n_hidden] for images {image_shape}, "
                         f"got {coef.shape}.")
    n_units = min(coef.shape[1], max_units)
    rows, columns = _grid(n_units, max_columns=8)
    vmin, vmax = 0.5 * coef.min(), 0.5 * coef.max()
    figure = Figure(figsize=(1.3 * columns, 1.3 * rows + 0.5), dpi=100)
    axes = figure.subplots(rows, columns, squeeze=False)
    for unit, ax in enumerate(axes.ravel()):
        if unit < n_units:
            ax.matshow(coef[:, unit].reshape(height, width), cmap="gray", vmin=vmin, vmax=vmax)
            ax.set_xticks(())
            ax.set_yticks(())
        else:
            ax.set_axis_off()
    figure.suptitle(f"{title} ({n_units} of {coef.shape[1]} units)")
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.6 / figure.get_figheight(),
                           wspace=0.08, hspace=0.08)
    return save_figure(figure, path)


def plot_training_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float] | None]],
    path: str | os.PathLike,
    *,
    title: str = "Training",
) -> Path:
    """Training loss per epoch (left axis) and, where given, validation accuracy (right axis).

    Args:
      curves: model name -> (`loss_curve_` [n_iter], `validation_scores_` [n_iter] or None).
      path: PNG to write.
    """
    figure = Figure(figsize=(7, 4.2), dpi=100)
    loss_ax = figure.subplots()
    score_ax = None
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for index, (name, (loss_curve, validation_scores)) in enumerate(curves.items()):
        color = colors[index % len(colors)]
        epochs = np.arange(1, len(loss_curve) + 1)
        loss_ax.plot(epochs, loss_curve, color=color, linestyle="-" if index % 2 == 0 else "--",
                     label=f"{name}: training loss")
        if validation_scores is not None and len(validation_scores):
            if score_ax is None:
                score_ax = loss_ax.twinx()
                score_ax.set_ylabel("validation accuracy")
            score_ax.plot(np.arange(1, len(validation_scores) + 1), validation_scores, color=color,
                          linestyle=":", label=f"{name}: validation accuracy")
    loss_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss")
    handles, labels = loss_ax.get_legend_handles_labels()
    if score_ax is not None:
        more_handles, more_labels = score_ax.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    loss_ax.legend(handles, labels, loc="center right", fontsize="small", framealpha=0.9)
    loss_ax.set_title(title)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_confusion_matrix(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str = "Confusion matrix (test set)",
) -> Path:
    """Counts of (true class, predicted class) on the test set, with scikit-learn's `ConfusionMatrixDisplay`.

    Args:
      y_true, y_pred: [N] class indices in [0, len(class_names)).
    """
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

    labels = np.arange(len(class_names))
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    size = max(5.0, 0.55 * len(class_names) + 2.5)
    figure = Figure(figsize=(size, size), dpi=100)
    ax = figure.subplots()
    display = ConfusionMatrixDisplay(matrix, display_labels=list(class_names))
    display.plot(ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45 if max(map(len, class_names)) > 2 else 0)
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    ax.set_title(f"{title}: accuracy {accuracy:.4f}")
    figure.tight_layout()
    return save_figure(figure, path)


def plot_misclassified(
    images: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    *,
    max_images: int = 36,
    title: str = "Misclassified test images",
) -> Path:
    """A grid of the first misclassified images, each titled "true -> predicted".

    Args:
      images: [N, H, W] (or [N, H*W] together with square images) test images.
      y_true, y_pred: [N] class indices.
    """
    images = np.asarray(images)
    if images.ndim == 2:
        side = int(round(math.sqrt(images.shape[1])))
        if side * side != images.shape[1]:
            raise ValueError(f"flat images of {images.shape[1]} pixels are not square; pass [N, H, W].")
        images = images.reshape(len(images), side, side)
    wrong = np.flatnonzero(np.asarray(y_true) != np.asarray(y_pred))[:max_images]
    count = max(1, len(wrong))
    rows, columns = _grid(count, max_columns=9)
    figure = Figure(figsize=(1.35 * columns, 1.5 * rows + 0.5), dpi=100)
    axes = figure.subplots(rows, columns, squeeze=False)
    for slot, ax in enumerate(axes.ravel()):
        if slot < len(wrong):
            index = wrong[slot]
            ax.imshow(images[index], cmap="gray_r")
            ax.set_xticks(())
            ax.set_yticks(())
            ax.set_title(f"{class_names[y_true[index]]}→{class_names[y_pred[index]]}", fontsize=8, color="tab:red")
        elif slot or len(wrong):
            ax.set_axis_off()
    total_wrong = int(np.sum(np.asarray(y_true) != np.asarray(y_pred)))
    if not len(wrong):
        axes[0, 0].set_xticks(())
        axes[0, 0].set_yticks(())
        axes[0, 0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    figure.suptitle(f"{title}: {len(wrong)} of {total_wrong} shown (true→predicted)")
    figure.tight_layout()
    return save_figure(figure, path)
