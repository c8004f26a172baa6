"""Varying regularization in a multi-layer perceptron (scikit-learn's example of that name), with jaxrl.

Decision boundaries of `MLPClassifier(solver="lbfgs", hidden_layer_sizes=[10, 10], random_state=1,
max_iter=2000, early_stopping=True)` behind a StandardScaler, for alpha in logspace(-1, 1, 5), on moons,
circles and a linearly separable set; each panel shows the probability of class 1 over the plane, the
training points (solid) and test points (light), and the test accuracy in the corner. A larger alpha (L2
penalty) gives a smoother boundary. With `--compare-sklearn` scikit-learn's estimator draws the same figure in
the same run and the table shows both accuracies.

    python experiments/regularization.py --out results/regularization [--compare-sklearn]

Reference: https://scikit-learn.org/stable/auto_examples/neural_networks/plot_mlp_alpha.html
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from sklearn.datasets import make_circles, make_classification, make_moons
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from jaxrl.mlp.experiment import classifier_class
from jaxrl.mlp.figures import save_figure

ALPHAS = np.logspace(-1, 1, 5)
GRID_STEP = 0.02  # the example's mesh step


def toy_datasets() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """moons, circles and the example's noisy linearly separable set: (name, X [100, 2], y [100])."""
    x, y = make_classification(n_features=2, n_redundant=0, n_informative=2, random_state=0,
                               n_clusters_per_class=1)
    x = x + 2 * np.random.RandomState(2).uniform(size=x.shape)
    return [
        ("moons", *make_moons(noise=0.3, random_state=0)),
        ("circles", *make_circles(noise=0.2, factor=0.5, random_state=1)),
        ("linearly separable", x, y),
    ]


def make_classifier(implementation: str, alpha: float):
    estimator = classifier_class(implementation)(solver="lbfgs", alpha=alpha, random_state=1, max_iter=2000,
                                                 early_stopping=True, hidden_layer_sizes=[10, 10])
    return make_pipeline(StandardScaler(), estimator)


def run(implementation: str, path: Path) -> list[dict]:
    """Fit every (dataset, alpha) pair, draw the figure to `path`; returns one record per fit."""
    bright = ListedColormap(["#FF0000", "#0000FF"])
    figure = Figure(figsize=(17, 9), dpi=70)
    sets = toy_datasets()
    axes = figure.subplots(len(sets), len(ALPHAS) + 1)
    records = []
    for row, (name, x, y) in enumerate(sets):
        x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.4, random_state=42)
        x_min, x_max = x[:, 0].min() - 0.5, x[:, 0].max() + 0.5
        y_min, y_max = x[:, 1].min() - 0.5, x[:, 1].max() + 0.5
        xx, yy = np.meshgrid(np.arange(x_min, x_max, GRID_STEP), np.arange(y_min, y_max, GRID_STEP))
        plane = np.column_stack([xx.ravel(), yy.ravel()])
        panels = [(axes[row, 0], "input data", None)] + [
            (axes[row, column + 1], f"alpha {alpha:.2f}", alpha) for column, alpha in enumerate(ALPHAS)]
        for ax, title, alpha in panels:
            if alpha is not None:
                classifier = make_classifier(implementation, alpha)
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", category=ConvergenceWarning)
                    classifier.fit(x_train, y_train)
                seconds = time.perf_counter() - start
                score = float(classifier.score(x_test, y_test))
                z = classifier.predict_proba(plane)[:, 1].reshape(xx.shape)
                ax.contourf(xx, yy, z, cmap="RdBu", alpha=0.8)
                ax.text(xx.max() - 0.3, yy.min() + 0.3, f"{score:.3f}".lstrip("0"), size=15,
                        horizontalalignment="right")
                records.append(dict(dataset=name, alpha=float(alpha), test_score=score, seconds=seconds,
                                    n_iter=int(classifier[-1].n_iter_)))
            ax.scatter(x_train[:, 0], x_train[:, 1], c=y_train, cmap=bright, edgecolors="black", s=25)
            ax.scatter(x_test[:, 0], x_test[:, 1], c=y_test, cmap=bright, alpha=0.6, edgecolors="black", s=25)
            ax.set_xlim(xx.min(), xx.max())
            ax.set_ylim(yy.min(), yy.max())
            ax.set_xticks(())
            ax.set_yticks(())
            if row == 0:
                ax.set_title(title)
    figure.suptitle(f"{implementation} MLPClassifier (lbfgs, 10x10): decision boundary vs alpha")
    figure.subplots_adjust(left=0.02, right=0.98, top=0.92, bottom=0.02)
    save_figure(figure, path)
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/regularization", help="folder for the figures")
    parser.add_argument("--compare-sklearn", action="store_true", help="also fit scikit-learn's MLPClassifier")
    args = parser.parse_args(argv)
    implementations = ("jaxrl", "sklearn") if args.compare_sklearn else ("jaxrl",)
    results = {}
    for implementation in implementations:
        path = Path(args.out) / f"regularization_{implementation}.png"
        results[implementation] = run(implementation, path)
        print(f"wrote {path}")
    header = ["dataset", "alpha"] + [f"{impl} {what}" for impl in implementations
                                     for what in ("test acc", "iterations", "fit s")]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for index, record in enumerate(results[implementations[0]]):
        row = [record["dataset"], f"{record['alpha']:.2f}"]
        for implementation in implementations:
            other = results[implementation][index]
            row += [f"{other['test_score']:.3f}", str(other["n_iter"]), f"{other['seconds']:.2f}"]
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
