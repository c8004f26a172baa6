"""Figures are real PNGs with the expected layout; bad shapes are refused before anything is written."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from jaxrl.mlp import figures


def read_png(path):
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    return image


def test_first_layer_weights_grid(tmp_path):
    rng = np.random.default_rng(0)
    path = figures.plot_first_layer_weights(rng.normal(size=(784, 10)), (28, 28), tmp_path / "w.png")
    image = read_png(path)
    assert image.std() > 0.05  # not a blank canvas
    digits_path = figures.plot_first_layer_weights(rng.normal(size=(64, 50)), (8, 8), tmp_path / "d.png",
                                                   max_units=16)
    assert imread(digits_path).shape[1] < image.shape[1] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png", "w.png"]  # no temporary files left


def test_first_layer_weights_shape_mismatch_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"coef must have shape \[784, n_hidden\]"):
        figures.plot_first_layer_weights(np.zeros((64, 5)), (28, 28), tmp_path / "w.png")
    assert not any(tmp_path.iterdir())


def test_training_curves_with_and_without_validation(tmp_path):
    loss = np.linspace(2.0, 0.1, 12)
    path = figures.plot_training_curves(
        {"jaxrl": (loss, np.linspace(0.3, 0.9, 12)), "sklearn": (loss * 1.01, None)}, tmp_path / "loss.png")
    read_png(path)


def test_confusion_matrix_and_misclassified(tmp_path):
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 3, 40)
    y_pred = np.where(rng.random(40) < 0.7, y_true, (y_true + 1) % 3)
    read_png(figures.plot_confusion_matrix(y_true, y_pred, ["o", "ki", "su"], tmp_path / "cm.png"))
    images = rng.integers(0, 256, (40, 28, 28)).astype(np.uint8)
    read_png(figures.plot_misclassified(images, y_true, y_pred, ["o", "ki", "su"], tmp_path / "mis.png",
                                        max_images=9))
    flat = images.reshape(40, -1)
    read_png(figures.plot_misclassified(flat, y_true, y_true, ["o", "ki", "su"], tmp_path / "none.png"))
    with pytest.raises(ValueError, match="not square"):
        figures.plot_misclassified(flat[:, :700], y_true, y_pred, ["o", "ki", "su"], tmp_path / "bad.png")
