"""Benchmark: jaxrl's MLPClassifier vs scikit-learn's, same data, same run.

Both sides: hidden (100,), relu, adam, batch 200, float32 input, the same
``random_state``, a fixed number of epochs (``tol=0`` and a large
``n_iter_no_change`` so neither stops early). Reported: compile time (jaxrl,
measured apart: a 1-epoch warm-up fit minus one epoch), fit time per epoch,
test accuracy.

Data (say which in the table):
  * default: scikit-learn's digits (1797 x 64, bundled), 80/20 split;
  * ``--npz PATH``: any ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``
    (images are flattened and scaled to [0, 1] when integer-valued);
  * ``--synthetic-mnist``: random MNIST-shaped data (60000 x 784 train, 10000 test,
    uniform pixels, labels from a fixed random linear teacher) for when no MNIST
    file is present. Timings are representative of MNIST; accuracies are not.

Example::

    python experiments/bench_mlp.py --synthetic-mnist --epochs 5
"""

from __future__ import annotations

import fair_blas  # noqa: F401  (first: drops the OpenBLAS pins before NumPy loads)

import argparse
import os
import platform
import statistics
import time
import warnings

import numpy as np


def load_data(args):
    """Returns ``(name, x_train, y_train, x_test, y_test)`` with float32 features."""
    if args.npz:
        with np.load(args.npz) as data:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(data.files)
            if missing:
                raise SystemExit(f"error: {args.npz} lacks arrays {sorted(missing)} (has {data.files})")
            arrays = [data[k] for k in ("x_train", "y_train", "x_test", "y_test")]
        x_train, y_train, x_test, y_test = arrays
        x_train, x_test = (x.reshape(len(x), -1) for x in (x_train, x_test))
        if np.issubdtype(x_train.dtype, np.integer):
            scale = float(max(x_train.max(), 1))
            x_train, x_test = x_train / scale, x_test / scale
        name = f"npz {os.path.basename(args.npz)}"
    elif args.synthetic_mnist:
        rng = np.random.RandomState(0)
        teacher = rng.randn(784, 10)
        x_train = rng.rand(60000, 784)
        x_test = rng.rand(10000, 784)
        y_train, y_test = (np.argmax((x - 0.5) @ teacher, axis=1) for x in (x_train, x_test))
        name = "SYNTHETIC random MNIST-shaped data (not MNIST)"
    else:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        x, y = load_digits(return_X_y=True)
        x_train, x_test, y_train, y_test = train_test_split(x / 16.0, y, test_size=0.2, random_state=0)
        name = "digits (sklearn)"
    as32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)
    return name, as32(x_train), np.asarray(y_train), as32(x_test), np.asarray(y_test)


def make_estimator(cls, epochs, args):
    return cls(
        hidden_layer_sizes=(args.hidden,),
        solver="adam",
        batch_size=args.batch_size,
        max_iter=epochs,
        tol=0.0,
        n_iter_no_change=epochs + 1,
        random_state=args.seed,
    )


def time_fit(cls, x, y, epochs, args):
    estimator = make_estimator(cls, epochs, args)
    start = time.perf_counter()
    estimator.fit(x, y)
    return estimator, time.perf_counter() - start


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--npz", help="npz file with x_train, y_train, x_test, y_test")
    source.add_argument("--synthetic-mnist", action="store_true", help="random 60000x784 MNIST-shaped data")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per timed fit (default 5)")
    parser.add_argument("--repeats", type=int, default=1, help="timed fits per side; the median is reported")
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-sklearn", action="store_true", help="time only jaxrl")
    args = parser.parse_args(argv)
    for name in ("epochs", "repeats", "hidden", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")

    import jax
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier as SkMLPClassifier

    from jaxrl import MLPClassifier

    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    data_name, x_train, y_train, x_test, y_test = load_data(args)
    print(f"data: {data_name}: train {x_train.shape}, test {x_test.shape}, float32")

    rows = []
    # jaxrl: a 1-epoch fit compiles the epoch; later fits of the same shapes reuse it.
    _, first = time_fit(MLPClassifier, x_train, y_train, 1, args)
    jax_times, jax_model = [], None
    for _ in range(args.repeats):
        jax_model, seconds = time_fit(MLPClassifier, x_train, y_train, args.epochs, args)
        jax_times.append(seconds / args.epochs)
    jax_epoch = statistics.median(jax_times)
    rows.append(("jaxrl (JAX, jit)", max(first - jax_epoch, 0.0), jax_epoch, jax_model.score(x_test, y_test)))
    if not args.skip_sklearn:
        sk_times, sk_model = [], None
        for _ in range(args.repeats):
            sk_model, seconds = time_fit(SkMLPClassifier, x_train, y_train, args.epochs, args)
            sk_times.append(seconds / args.epochs)
        sk_epoch = statistics.median(sk_times)
        rows.append(("scikit-learn", 0.0, sk_epoch, sk_model.score(x_test, y_test)))

    print()
    print(fair_blas.describe_blas())
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs visible, jax {jax.__version__} on {jax.devices()[0].platform}")
    print(f"model: hidden ({args.hidden},), relu, adam, batch {args.batch_size}, float32, "
          f"{args.epochs} epochs per fit, median of {args.repeats} fit(s)")
    print()
    print("| data | implementation | compile (s) | fit time / epoch (s) | test accuracy | speed-up |")
    print("|---|---|---|---|---|---|")
    sk_epoch = rows[-1][2]
    for impl, compile_s, epoch_s, accuracy in rows:
        compile_text = f"{compile_s:.2f}" if impl.startswith("jaxrl") else "-"
        print(f"| {data_name} | {impl} | {compile_text} | {epoch_s:.3f} | {accuracy:.4f} | {sk_epoch / epoch_s:.2f}x |")


if __name__ == "__main__":
    main()
