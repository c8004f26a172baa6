"""One MLP experiment on an image dataset: load, scale, fit (jaxrl, and scikit-learn when asked), time,
evaluate, print a results table, and draw the figures. `jaxrl mlp` is a thin argparse shell over
`run_experiment`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from jaxrl import datasets

__all__ = [
    "IMPLEMENTATIONS",
    "classifier_class",
    "ExperimentConfig",
    "ModelResult",
    "ExperimentResult",
    "prepare_features",
    "fit_and_evaluate",
    "format_table",
    "run_experiment",
    "SweepResult",
    "sweep_alphas",
]

IMPLEMENTATIONS = ("jaxrl", "sklearn")


def classifier_class(implementation: str = "jaxrl") -> type:
    """The `MLPClassifier` class of an implementation: `"jaxrl"` (ours, the default) or `"sklearn"`.

    Both take the same constructor parameters and expose the same fitted attributes (`coefs_`,
    `loss_curve_`, `validation_scores_`, `n_iter_`, ...), so everything below works with either.
    """
    if implementation == "jaxrl":
        from jaxrl.mlp.estimators import MLPClassifier
    elif implementation == "sklearn":
        from sklearn.neural_network import MLPClassifier
    else:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}.")
    return MLPClassifier


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """What to run. `estimator_params` go to `MLPClassifier(**estimator_params)` unchanged."""

    dataset: str = "digits"                     # digits | mnist | fashion | kmnist
    data_dir: str | None = None                 # None: $JAXRL_DATA_DIR or ~/.cache/jaxrl/datasets
    source: str = "official"                    # official files or "openml"
    download: bool = True
    estimator_params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    compare_sklearn: bool = False
    out: str | None = None                      # folder for results.json, results.md and figures; None: none
    max_train: int | None = None                # use only the first N training images (a seeded shuffle)
    scale: str = "pixel"                        # "pixel": x / pixel_max in [0, 1]; "standard": StandardScaler
    dtype: str = "float32"
    figures: bool = True
    repeats: int = 1                            # fits per implementation (the first includes jit compilation)
    blas_threads: int | None = None             # cap NumPy/SciPy BLAS threads (scikit-learn's maths) during fits
    sweep: int = 0                              # > 0: also an alpha sweep of this many models (fit_grid vs serial)

    def __post_init__(self):
        if self.scale not in ("pixel", "standard"):
            raise ValueError(f"scale must be 'pixel' or 'standard', got {self.scale!r}.")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}.")
        if self.max_train is not None and self.max_train < 2:
            raise ValueError(f"max_train must be at least 2, got {self.max_train}.")
        if self.repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {self.repeats}.")
        if self.blas_threads is not None and self.blas_threads < 1:
            raise ValueError(f"blas_threads must be at least 1, got {self.blas_threads}.")
        if self.sweep < 0:
            raise ValueError(f"sweep must be >= 0, got {self.sweep}.")


class ModelResult(NamedTuple):
    """Measurements of one fitted model."""

    implementation: str
    fit_seconds: tuple[float, ...]      # [repeats] wall time of each fit (the first includes compilation)
    n_iter: int
    train_accuracy: float
    test_accuracy: float
    predict_seconds: float
    loss_curve: tuple[float, ...] | None
    validation_scores: tuple[float, ...] | None
    y_pred: np.ndarray                  # [N_test] predicted class indices
    estimator: Any


class SweepResult(NamedTuple):
    """One side of an alpha sweep: the same N models fitted one vmapped call at a time or serially."""

    side: str
    seconds: float                      # wall time of the whole sweep
    compile_seconds: float              # of which XLA compilation (0 when warm or for scikit-learn)
    mean_test_accuracy: float
    best_alpha: float                   # the alpha with the best test accuracy (for display only)


class ExperimentResult(NamedTuple):
    config: ExperimentConfig
    dataset: datasets.ImageDataset      # flattened, unscaled images
    n_train: int
    models: tuple[ModelResult, ...]
    table: str
    files: tuple[Path, ...]             # results and figures written
    sweep: tuple[SweepResult, ...] = ()


def prepare_features(data: datasets.ImageDataset, *, scale: str = "pixel", dtype: str = "float32",
                     max_train: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flatten and scale images into MLP features.

    Args:
      data: an `ImageDataset` (images `[N, H, W]` or `[N, H*W]`, raw pixel values).
      scale: `"pixel"` divides by `data.pixel_max` (the scikit-learn MNIST example's `X / 255`); `"standard"`
        standardizes each pixel with statistics of the training images.
      max_train: keep this many training images, drawn by a seeded permutation.

    Returns:
      (x_train [N_train, H*W], x_test [N_test, H*W], train_index [N_train] rows of `data.x_train` used).
    """
    train_index = np.arange(len(data.x_train))
    if max_train is not None and max_train < len(train_index):
        train_index = np.sort(np.random.default_rng(seed).permutation(len(train_index))[:max_train])
    x_train = data.x_train[train_index].reshape(len(train_index), -1).astype(dtype)
    x_test = data.x_test.reshape(len(data.x_test), -1).astype(dtype)
    if scale == "pixel":
        x_train /= data.pixel_max
        x_test /= data.pixel_max
    else:
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(x_train)
        x_train, x_test = scaler.transform(x_train).astype(dtype), scaler.transform(x_test).astype(dtype)
    return x_train, x_test, train_index


def fit_and_evaluate(implementation: str, params: Mapping[str, Any], x_train, y_train, x_test, y_test, *,
                     repeats: int = 1, estimator_class: type | None = None) -> ModelResult:
    """Fit `MLPClassifier(**params)` `repeats` times on the same data, timing each fit; evaluate the last."""
    estimator_class = classifier_class(implementation) if estimator_class is None else estimator_class
    fit_seconds = []
    for _ in range(repeats):
        estimator = estimator_class(**params)
        start = time.perf_counter()
        estimator.fit(x_train, y_train)
        fit_seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
    y_pred = np.asarray(estimator.predict(x_test))
    predict_seconds = time.perf_counter() - start
    train_accuracy = float(np.mean(np.asarray(estimator.predict(x_train)) == y_train))
    loss_curve = getattr(estimator, "loss_curve_", None)
    validation_scores = getattr(estimator, "validation_scores_", None)
    return ModelResult(
        implementation=implementation,
        fit_seconds=tuple(fit_seconds),
        n_iter=int(estimator.n_iter_),
        train_accuracy=train_accuracy,
        test_accuracy=float(np.mean(y_pred == y_test)),
        predict_seconds=predict_seconds,
        loss_curve=None if loss_curve is None else tuple(float(v) for v in loss_curve),
        validation_scores=None if validation_scores is None else tuple(float(v) for v in validation_scores),
        y_pred=y_pred,
        estimator=estimator,
    )


def sweep_alphas(params: Mapping[str, Any], x_train, y_train, x_test, y_test, num_alphas: int, *,
                 compare_sklearn: bool = True) -> list[SweepResult]:
    """``num_alphas`` log-spaced alphas in [1e-5, 10]: one ``fit_grid`` call (cold, then warm) and, when
    ``compare_sklearn``, the same models fitted one after the other by scikit-learn (1 BLAS thread, its
    fastest setting for serial fits of this size), timed in the same process."""
    from jaxrl.mlp.estimators import MLPClassifier
    from jaxrl.mlp.grid import fit_grid

    alphas = [float(a) for a in np.logspace(-5, 1, num_alphas)]
    params = {key: value for key, value in params.items() if key != "alpha"}
    template = MLPClassifier(**params)
    results = []

    def summary(side, seconds, compile_seconds, models):
        scores = [float(np.mean(np.asarray(m.predict(x_test)) == y_test)) for m in models]
        return SweepResult(side, seconds, compile_seconds, float(np.mean(scores)), alphas[int(np.argmax(scores))])

    for label in ("cold: compiles", "warm: compiled"):
        start = time.perf_counter()
        grid = fit_grid(template, x_train, y_train, alpha=alphas)
        seconds = time.perf_counter() - start
        compile_seconds = grid.timings.get("compile", 0.0) if label.startswith("cold") else 0.0
        results.append(summary(f"jaxrl fit_grid, one vmapped call ({label})", seconds, compile_seconds,
                               grid.estimators))
    if compare_sklearn:
        from sklearn.neural_network import MLPClassifier as SklearnMLPClassifier
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            start = time.perf_counter()
            models = [SklearnMLPClassifier(alpha=alpha, **params).fit(x_train, y_train) for alpha in alphas]
            seconds = time.perf_counter() - start
        results.append(summary("scikit-learn, serial fits", seconds, 0.0, models))
    return results


def format_sweep_table(sweep: Sequence[SweepResult], num_alphas: int) -> str:
    """A Markdown table of an alpha sweep, speed-ups relative to scikit-learn's serial fits when present."""
    base = next((r.seconds for r in sweep if r.side.startswith("scikit-learn")), None)
    lines = [f"| {num_alphas} alphas | wall s | of which compile s | speed-up | mean test acc | best alpha |",
             "|---|---|---|---|---|---|"]
    for r in sweep:
        speedup = f"{base / r.seconds:.1f}x" if base else "-"
        lines.append(f"| {r.side} | {r.seconds:.2f} | {r.compile_seconds:.2f} | {speedup} | "
                     f"{r.mean_test_accuracy:.4f} | {r.best_alpha:.2g} |")
    return "\n".join(lines)


def _describe_model(params: Mapping[str, Any]) -> str:
    hidden = params.get("hidden_layer_sizes", (100,))
    hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    return f"{'x'.join(map(str, hidden))} {params.get('solver', 'adam')}"


def format_table(dataset: str, n_train: int, n_test: int, params: Mapping[str, Any],
                 models: Sequence[ModelResult]) -> str:
    """A Markdown table, one row per model: accuracy, epochs, fit time (first fit and best later fit)."""
    warm = any(len(model.fit_seconds) > 1 for model in models)
    header = ["implementation", "dataset", "n_train", "n_test", "model", "epochs", "fit s (1st)"]
    header += ["fit s (warm, best)", "compile s (1st - warm)"] if warm else []
    header += ["s/epoch (warm)" if warm else "s/epoch (1st fit)", "train acc", "test acc"]
    rows = []
    for model in models:
        best = min(model.fit_seconds[1:]) if len(model.fit_seconds) > 1 else model.fit_seconds[0]
        row = [model.implementation, dataset, str(n_train), str(n_test), _describe_model(params),
               str(model.n_iter), f"{model.fit_seconds[0]:.2f}"]
        if warm and len(model.fit_seconds) > 1:
            compile_s = max(0.0, model.fit_seconds[0] - best) if model.implementation == "jaxrl" else 0.0
            row += [f"{best:.2f}", f"{compile_s:.2f}" if model.implementation == "jaxrl" else "-"]
        elif warm:
            row += ["-", "-"]
        row += [f"{best / max(1, model.n_iter):.4f}", f"{model.train_accuracy:.4f}", f"{model.test_accuracy:.4f}"]
        rows.append(row)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _jsonable(value):
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def _write_outputs(config: ExperimentConfig, data: datasets.ImageDataset, models: Sequence[ModelResult],
                   table: str, n_train: int, sweep: Sequence[SweepResult] = ()) -> list[Path]:
    from jaxrl.mlp import figures

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    images = data.x_test.reshape((len(data.x_test),) + tuple(data.image_shape))
    if config.figures:
        curves = {m.implementation: (m.loss_curve, m.validation_scores) for m in models if m.loss_curve}
        if curves:
            written.append(figures.plot_training_curves(
                curves, out / "loss_curve.png", title=f"{data.name}: {_describe_model(config.estimator_params)}"))
        for model in models:
            prefix = out / model.implementation
            written.append(figures.plot_first_layer_weights(
                np.asarray(model.estimator.coefs_[0]), data.image_shape, f"{prefix}_weights.png",
                title=f"{model.implementation}: first-layer weights"))
            written.append(figures.plot_confusion_matrix(
                data.y_test, model.y_pred, data.class_names, f"{prefix}_confusion.png",
                title=f"{model.implementation} on {data.name}"))
            written.append(figures.plot_misclassified(
                images, data.y_test, model.y_pred, data.class_names, f"{prefix}_misclassified.png",
                title=f"{model.implementation} on {data.name}"))
    record = {
        "config": _jsonable(dataclasses.asdict(config)),
        "n_train": n_train,
        "n_test": int(len(data.y_test)),
        "models": [
            {key: _jsonable(value) for key, value in model._asdict().items() if key not in ("y_pred", "estimator")}
            for model in models
        ],
        "sweep": [_jsonable(r._asdict()) for r in sweep],
    }
    for name, text in (("results.json", json.dumps(record, indent=2)), ("results.md", table + "\n")):
        temp = out / f".{name}.tmp"
        temp.write_text(text)
        temp.replace(out / name)
        written.append(out / name)
    return written


def run_experiment(config: ExperimentConfig, *, implementations: Sequence[str] | None = None,
                   log: Callable[[str], None] = print,
                   estimator_classes: Mapping[str, type] | None = None) -> ExperimentResult:
    """Load `config.dataset`, fit jaxrl's MLPClassifier (and scikit-learn's with the same parameters when
    `config.compare_sklearn`), print the results table and write results + figures to `config.out`.

    Nothing is written before every fit has finished, so a failed run leaves earlier results untouched.

    Args:
      implementations: override which implementations run (default: jaxrl, plus sklearn when comparing).
      estimator_classes: implementation name -> class, to inject a class instead of `classifier_class`.
    """
    if implementations is None:
        implementations = ("jaxrl", "sklearn") if config.compare_sklearn else ("jaxrl",)
    for implementation in implementations:
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}.")
    if config.out is not None and Path(config.out).exists() and not Path(config.out).is_dir():
        raise ValueError(f"--out {config.out} exists and is not a folder.")
    estimator_classes = dict(estimator_classes or {})
    # Validate the estimator parameters before loading data: an unknown name fails here, in one line.
    for implementation in implementations:
        cls = estimator_classes.get(implementation) or classifier_class(implementation)
        estimator_classes[implementation] = cls
        unknown = sorted(set(config.estimator_params) - set(cls().get_params()))
        if unknown:
            raise ValueError(f"{cls.__module__}.MLPClassifier has no parameter(s) {unknown}.")

    data = datasets.load_dataset(config.dataset, config.data_dir, source=config.source, download=config.download,
                                 flatten=True, scale=False)
    x_train, x_test, train_index = prepare_features(data, scale=config.scale, dtype=config.dtype,
                                                    max_train=config.max_train)
    y_train, y_test = data.y_train[train_index], data.y_test
    log(f"{data.name}: {len(x_train)} train / {len(x_test)} test images of {data.image_shape[0]}x"
        f"{data.image_shape[1]}, {data.n_classes} classes; features {x_train.dtype}, scale={config.scale}")

    models = []
    blas_limit = contextlib.nullcontext()
    if config.blas_threads is not None:
        from threadpoolctl import threadpool_limits

        blas_limit = threadpool_limits(limits=config.blas_threads, user_api="blas")
        log(f"BLAS threads capped at {config.blas_threads} during the fits")
    with blas_limit:
        for implementation in implementations:
            arguments = ", ".join(f"{key}={value!r}" for key, value in config.estimator_params.items())
            log(f"fitting {implementation} MLPClassifier({arguments})")
            models.append(fit_and_evaluate(implementation, config.estimator_params, x_train, y_train, x_test,
                                           y_test, repeats=config.repeats,
                                           estimator_class=estimator_classes[implementation]))
        sweep = []
        if config.sweep:
            log(f"alpha sweep: {config.sweep} models, one fit_grid call"
                + (" vs serial scikit-learn fits" if config.compare_sklearn else ""))
            sweep = sweep_alphas(config.estimator_params, x_train, y_train, x_test, y_test, config.sweep,
                                 compare_sklearn=config.compare_sklearn)
    table = format_table(data.name, len(x_train), len(x_test), config.estimator_params, models)
    if sweep:
        table += "\n\n" + format_sweep_table(sweep, config.sweep)
    log(table)
    files = _write_outputs(config, data, models, table, len(x_train), sweep) if config.out is not None else []
    for path in files:
        log(f"wrote {path}")
    return ExperimentResult(config, data, len(x_train), tuple(models), table, tuple(files), tuple(sweep))
