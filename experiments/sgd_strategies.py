"""Compare stochastic learning strategies for MLPClassifier (scikit-learn's example of that name), with jaxrl.

The same seven solvers as scikit-learn's example -- SGD with a constant or inverse-scaling learning rate, each
without momentum, with momentum and with Nesterov's momentum, and Adam -- fitted on iris, digits, circles and
moons (MinMax-scaled, `random_state=0`, 400 epochs, 15 on digits), their training-loss curves drawn on one
plot per dataset. With `--compare-sklearn` scikit-learn's MLPClassifier is fitted with the same parameters in
the same run, its figure is drawn beside ours and the table shows both.

    python experiments/sgd_strategies.py --out results/sgd_strategies [--compare-sklearn]

Reference: https://scikit-learn.org/stable/auto_examples/neural_networks/plot_mlp_training_curves.html
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn import datasets
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import MinMaxScaler

from jaxrl.mlp.experiment import classifier_class
from jaxrl.mlp.figures import save_figure

# scikit-learn's example, parameter for parameter.
STRATEGIES = (
    ("constant learning-rate",
     dict(solver="sgd", learning_rate="constant", momentum=0, learning_rate_init=0.2), ("red", "-")),
    ("constant with momentum",
     dict(solver="sgd", learning_rate="constant", momentum=0.9, nesterovs_momentum=False, learning_rate_init=0.2),
     ("green", "-")),
    ("constant with Nesterov's momentum",
     dict(solver="sgd", learning_rate="constant", momentum=0.9, nesterovs_momentum=True, learning_rate_init=0.2),
     ("blue", "-")),
    ("inv-scaling learning-rate",
     dict(solver="sgd", learning_rate="invscaling", momentum=0, learning_rate_init=0.2), ("red", "--")),
    ("inv-scaling with momentum",
     dict(solver="sgd", learning_rate="invscaling", momentum=0.9, nesterovs_momentum=False, learning_rate_init=0.2),
     ("green", "--")),
    ("inv-scaling with Nesterov's momentum",
     dict(solver="sgd", learning_rate="invscaling", momentum=0.9, nesterovs_momentum=True, learning_rate_init=0.2),
     ("blue", "--")),
    ("adam", dict(solver="adam", learning_rate_init=0.01), ("black", "-")),
)


def toy_datasets() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The example's four datasets: (name, X [n, d] float64, y [n])."""
    iris = datasets.load_iris()
    digits = datasets.load_digits()
    return [
        ("iris", iris.data, iris.target),
        ("digits", digits.data, digits.target),
        ("circles", *datasets.make_circles(noise=0.2, factor=0.5, random_state=1)),
        ("moons", *datasets.make_moons(noise=0.3, random_state=0)),
    ]


def fit_strategies(implementation: str, x: np.ndarray, y: np.ndarray, max_iter: int) -> list[dict]:
    """Fit every strategy on (x, y); returns one record per strategy with its loss curve and scores."""
    estimator_class = classifier_class(implementation)
    records = []
    for label, params, _ in STRATEGIES:
        estimator = estimator_class(random_state=0, max_iter=max_iter, **params)
        start = time.perf_counter()
        with warnings.catch_warnings():  # some strategies do not converge; the example ignores that too
            warnings.filterwarnings("ignore", category=ConvergenceWarning)
            estimator.fit(x, y)
        records.append(dict(strategy=label, seconds=time.perf_counter() - start, n_iter=int(estimator.n_iter_),
                            train_score=float(estimator.score(x, y)), loss=float(estimator.loss_),
                            loss_curve=np.asarray(estimator.loss_curve_)))
    return records


def plot_strategies(results: dict[str, list[dict]], title: str, path: Path) -> Path:
    """2x2 panels (one per dataset), every strategy's training-loss curve in the example's colours."""
    figure = Figure(figsize=(15, 10), dpi=80)
    axes = figure.subplots(2, 2)
    for ax, (name, records) in zip(axes.ravel(), results.items()):
        for record, (_, _, (color, linestyle)) in zip(records, STRATEGIES):
            ax.plot(record["loss_curve"], color=color, linestyle=linestyle, label=record["strategy"])
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, ncol=4, loc="lower center")
    figure.suptitle(title)
    figure.subplots_adjust(top=0.92, bottom=0.14, hspace=0.3)
    save_figure(figure, path)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/sgd_strategies", help="folder for the figures")
    parser.add_argument("--compare-sklearn", action="store_true", help="also fit scikit-learn's MLPClassifier")
    parser.add_argument("--max-iter", type=int, default=400, help="epochs (the example: 400; digits always 15)")
    args = parser.parse_args(argv)
    implementations = ("jaxrl", "sklearn") if args.compare_sklearn else ("jaxrl",)

    results: dict[str, dict[str, list[dict]]] = {impl: {} for impl in implementations}
    for name, x, y in toy_datasets():
        x = MinMaxScaler().fit_transform(x)
        max_iter = 15 if name == "digits" else args.max_iter
        for implementation in implementations:
            results[implementation][name] = fit_strategies(implementation, x, y, max_iter)

    header = ["dataset", "strategy"]
    for implementation in implementations:
        header += [f"{implementation} epochs", f"{implementation} train score", f"{implementation} loss",
                   f"{implementation} fit s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    first = results[implementations[0]]
    for name in first:
        for index, (label, _, _) in enumerate(STRATEGIES):
            row = [name, label]
            for implementation in implementations:
                record = results[implementation][name][index]
                row += [str(record["n_iter"]), f"{record['train_score']:.3f}", f"{record['loss']:.4f}",
                        f"{record['seconds']:.2f}"]
            print("| " + " | ".join(row) + " |")
    for implementation in implementations:
        path = plot_strategies(results[implementation],
                               f"{implementation} MLPClassifier: stochastic learning strategies",
                               Path(args.out) / f"sgd_strategies_{implementation}.png")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
