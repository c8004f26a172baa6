"""Benchmark: one vmapped ``fit_grid`` vs serial scikit-learn fits vs ``GridSearchCV(n_jobs=2)``.

Default (digits, the offline bundled set): 16 alphas (log-spaced), MLP (100,),
adam, batch "auto", the same ``max_iter`` / ``tol`` / ``random_state`` on both
sides, measured in the same run:

1. no cross-validation: ``fit_grid(est, X_train, y_train, alpha=alphas)`` vs 16
   serial ``sklearn.neural_network.MLPClassifier(alpha=a).fit`` calls; mean test
   accuracy of the 16 models on the held-out 25 %.
2. cross-validation: ``fit_grid(..., cv=k)`` (k folds x 16 alphas + 16 refits, all
   vmapped) vs ``GridSearchCV(sklearn MLPClassifier, {"alpha": alphas}, cv=k,
   n_jobs=2)`` (k x 16 fits + 1 refit); mean and best cv accuracy.

``fit_grid`` times are split into compile (XLA, reported apart), the rest of
the first (cold) call, and a second (warm, compiled) call.

``--mnist-sized``: MNIST-shaped data (``--npz`` with x_train/y_train/x_test/y_test,
else synthetic 60,000 x 784 float32, 10 classes): per-epoch time of a 1-model and
an N-model (``--models``) ``fit_grid``, and the N-model sweep vs serial
scikit-learn (``--sklearn-fits`` of them measured, the rest extrapolated and
marked so). Meant for a GPU run.

Usage:
  python experiments/bench_mlp_grid.py [--max-iter 100] [--cv 3] [--n-alphas 16]
  python experiments/bench_mlp_grid.py --mnist-sized --models 64 --max-iter 5 [--npz FILE]
"""

from __future__ import annotations

import fair_blas  # noqa: F401  (first: drops the OpenBLAS pins before NumPy loads)

import argparse
import os
import platform
import time
import warnings

import numpy as np


def _machine() -> str:
    import jax

    device = jax.devices()[0]
    kind = getattr(device, "device_kind", device.platform)
    return f"{platform.machine()}, {os.cpu_count()} CPUs visible, JAX {jax.__version__} on {kind} x{jax.device_count()}"


def _quiet():
    warnings.simplefilter("ignore")  # ConvergenceWarning on both sides: both run exactly max_iter or stop by tol


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _table(rows, headers):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


def bench_digits(args):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import GridSearchCV, train_test_split
    from sklearn.neural_network import MLPClassifier as SklearnMLPClassifier

    from jaxrl import MLPClassifier
    from jaxrl.mlp.grid import fit_grid

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    alphas = [float(a) for a in np.logspace(-5, 1, args.n_alphas)]
    common = dict(hidden_layer_sizes=(100,), solver="adam", max_iter=args.max_iter, tol=args.tol, random_state=0)
    sk_dtype = np.dtype(args.sklearn_dtype)
    print(f"digits: train {X_train.shape}, test {X_test.shape}; {len(alphas)} alphas in [{alphas[0]:.0e}, "
          f"{alphas[-1]:.0e}]; {common}; jaxrl float32, scikit-learn {sk_dtype.name}")
    print("machine:", _machine())
    print(fair_blas.describe_blas())
    rows = []

    # 1. no cv
    if not args.skip_serial:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=args.sklearn_blas_threads or None):  # None: the library default
            serial, serial_seconds = _timed(lambda: [
                SklearnMLPClassifier(alpha=a, **common).fit(X_train.astype(sk_dtype), y_train) for a in alphas])
        serial_acc = np.mean([m.score(X_test.astype(sk_dtype), y_test) for m in serial])
        serial_iter = np.mean([m.n_iter_ for m in serial])
    template = MLPClassifier(**common)
    cold_grid, cold = _timed(lambda: fit_grid(template, X_train.astype(np.float32), y_train, alpha=alphas))
    grid, warm = _timed(lambda: fit_grid(template, X_train.astype(np.float32), y_train, alpha=alphas))
    compile_s = cold_grid.timings["compile"]
    grid_acc = np.mean([m.score(X_test.astype(np.float32), y_test) for m in grid.estimators])
    grid_iter = np.mean([m.n_iter_ for m in grid.estimators])
    if not args.skip_serial:
        threads = args.sklearn_blas_threads or "default"
        rows.append([f"{len(alphas)} fits, no cv", f"scikit-learn, serial (BLAS threads: {threads})",
                     f"{serial_seconds:.2f}", "-", "1.0x",
                     f"{serial_acc:.4f}", f"{serial_iter:.1f}"])
        agreement = np.mean([np.mean(a.predict(X_test.astype(np.float32)) == b.predict(X_test.astype(sk_dtype)))
                             for a, b in zip(grid.estimators, serial)])
    rows.append([f"{len(alphas)} fits, no cv", "jaxrl fit_grid, cold (incl. compile)", f"{cold:.2f}",
                 f"{compile_s:.2f}", _speedup(serial_seconds, cold) if not args.skip_serial else "-",
                 f"{grid_acc:.4f}", f"{grid_iter:.1f}"])
    rows.append([f"{len(alphas)} fits, no cv", "jaxrl fit_grid, warm (compiled)", f"{warm:.2f}", "0",
                 _speedup(serial_seconds, warm) if not args.skip_serial else "-", f"{grid_acc:.4f}",
                 f"{grid_iter:.1f}"])
    n_devices = len(__import__("jax").devices())
    if n_devices > 1:  # the runs split over the host devices (one per core)
        sharded_cold_grid, sharded_cold = _timed(lambda: fit_grid(template, X_train.astype(np.float32), y_train,
                                                                  alpha=alphas, shard_runs=True))
        sharded, sharded_warm = _timed(lambda: fit_grid(template, X_train.astype(np.float32), y_train, alpha=alphas,
                                                        shard_runs=True))
        sharded_acc = np.mean([m.score(X_test.astype(np.float32), y_test) for m in sharded.estimators])
        for label, seconds, compile_seconds in (("cold (incl. compile)", sharded_cold,
                                                 sharded_cold_grid.timings["compile"]), ("warm", sharded_warm, 0)):
            rows.append([f"{len(alphas)} fits, no cv", f"jaxrl fit_grid, runs on {n_devices} devices, {label}",
                         f"{seconds:.2f}", f"{compile_seconds:.2f}",
                         _speedup(serial_seconds, seconds) if not args.skip_serial else "-", f"{sharded_acc:.4f}",
                         f"{np.mean([m.n_iter_ for m in sharded.estimators]):.1f}"])

    # 2. cv
    if args.cv:
        if not args.skip_gridsearch:
            search, search_seconds = _timed(lambda: GridSearchCV(
                SklearnMLPClassifier(**common), {"alpha": alphas}, cv=args.cv, n_jobs=args.n_jobs
            ).fit(X_train.astype(sk_dtype), y_train))
            sk_mean = float(np.mean(search.cv_results_["mean_test_score"]))
            rows.append([f"{len(alphas)} alphas x {args.cv}-fold cv", f"GridSearchCV(n_jobs={args.n_jobs})",
                         f"{search_seconds:.2f}", "-", "1.0x", f"{sk_mean:.4f} (best {search.best_score_:.4f})",
                         f"{args.cv * len(alphas) + 1} fits"])
        cv_grid, cv_cold = _timed(lambda: fit_grid(template, X_train.astype(np.float32), y_train, alpha=alphas,
                                                  cv=args.cv))
        cv_compile = cv_grid.timings["compile"]
        cv_mean = float(np.mean(cv_grid.cv_results["mean_test_score"]))
        base = None if args.skip_gridsearch else search_seconds
        if not args.skip_gridsearch:
            cv_agreement = np.max(np.abs(cv_grid.cv_results["mean_test_score"] - search.cv_results_["mean_test_score"]))
        rows.append([f"{len(alphas)} alphas x {args.cv}-fold cv", "jaxrl fit_grid(cv), cold (incl. compile)",
                     f"{cv_cold:.2f}", f"{cv_compile:.2f}", _speedup(base, cv_cold),
                     f"{cv_mean:.4f} (best {cv_grid.best_score:.4f})", f"{cv_grid.n_runs} runs"])
        if n_devices > 1:
            cv_sharded, cv_sharded_s = _timed(lambda: fit_grid(template, X_train.astype(np.float32), y_train,
                                                               alpha=alphas, cv=args.cv, shard_runs=True))
            rows.append([f"{len(alphas)} alphas x {args.cv}-fold cv",
                         f"jaxrl fit_grid(cv), runs on {n_devices} devices, cold", f"{cv_sharded_s:.2f}",
                         f"{cv_sharded.timings['compile']:.2f}", _speedup(base, cv_sharded_s),
                         f"{float(np.mean(cv_sharded.cv_results['mean_test_score'])):.4f} "
                         f"(best {cv_sharded.best_score:.4f})", f"{cv_sharded.n_runs} runs"])
    print()
    print(_table(rows, ["task", "side", "wall s", "of which compile s", "speed-up", "mean accuracy", "mean n_iter"]))
    if not args.skip_serial:
        print(f"\nper-model test-prediction agreement jaxrl vs scikit-learn: {agreement:.4f}")
    if args.cv and not args.skip_gridsearch:
        print(f"max |mean cv accuracy jaxrl - GridSearchCV| over the {len(alphas)} alphas: {cv_agreement:.4f}")
    print(f"fit_grid phases (warm call): {({k: round(v, 3) for k, v in grid.timings.items()})}")


def _speedup(base, ours):
    return "-" if base is None else f"{base / ours:.1f}x"


def _mnist_like(args):
    if args.npz:
        data = np.load(args.npz)
        X_train, y_train = data["x_train"], data["y_train"]
        X_test, y_test = data["x_test"], data["y_test"]
        X_train = X_train.reshape(len(X_train), -1).astype(np.float32)
        X_test = X_test.reshape(len(X_test), -1).astype(np.float32)
        scale = 255.0 if X_train.max() > 1.5 else 1.0
        return X_train / scale, y_train.astype(int), X_test / scale, y_test.astype(int), args.npz
    rng = np.random.RandomState(0)
    centers = rng.rand(10, 784).astype(np.float32)

    def draw(n):
        labels = rng.randint(0, 10, n)
        noise = rng.rand(n, 784).astype(np.float32)
        return np.clip(0.5 * centers[labels] + 0.5 * noise, 0, 1), labels

    X_train, y_train = draw(args.n_samples)
    X_test, y_test = draw(max(args.n_samples // 6, 10))
    return X_train, y_train, X_test, y_test, f"synthetic {args.n_samples:,} x 784 float32, 10 classes"


def bench_mnist_sized(args):
    from sklearn.neural_network import MLPClassifier as SklearnMLPClassifier

    from jaxrl import MLPClassifier
    from jaxrl.mlp.grid import fit_grid

    X_train, y_train, X_test, y_test, source = _mnist_like(args)
    common = dict(hidden_layer_sizes=(100,), solver="adam", batch_size=200, max_iter=args.max_iter, tol=0.0,
                  n_iter_no_change=args.max_iter + 1, random_state=0)
    alphas = [float(a) for a in np.logspace(-5, 1, args.models)]
    print(f"data: {source}; {common}; {args.models} models")
    print("machine:", _machine())
    print(fair_blas.describe_blas())
    template = MLPClassifier(**common)
    rows = []
    for n_models in (1, args.models):
        grid_alphas = alphas[:n_models]
        cold_result, cold = _timed(lambda: fit_grid(template, X_train, y_train, alpha=grid_alphas))
        result, warm = _timed(lambda: fit_grid(template, X_train, y_train, alpha=grid_alphas))
        epochs = max(m.n_iter_ for m in result.estimators)
        train_s = result.timings["train"]
        acc = np.mean([m.score(X_test, y_test) for m in result.estimators])
        rows.append([f"jaxrl fit_grid, {n_models} model(s)", f"{cold_result.timings['compile']:.2f}",
                     f"{warm:.2f}", f"{1000 * train_s / epochs:.1f}", f"{1000 * train_s / epochs / n_models:.2f}",
                     f"{acc:.4f}"])
        if n_models == args.models:
            sweep_seconds, sweep_acc, sweep_timings = warm, acc, result.timings
    from threadpoolctl import threadpool_limits

    measured = []
    for alpha in alphas[: args.sklearn_fits]:
        with threadpool_limits(limits=args.sklearn_blas_threads or None):
            model, seconds = _timed(lambda: SklearnMLPClassifier(alpha=alpha, **common).fit(X_train, y_train))
        measured.append((seconds, model.score(X_test, y_test), model.n_iter_))
    per_fit = float(np.mean([m[0] for m in measured]))
    serial_total = per_fit * args.models
    threads = args.sklearn_blas_threads or "default"
    rows.append([f"scikit-learn, serial, BLAS threads {threads} ({args.sklearn_fits} measured, x{args.models} "
                 "extrapolated)", "-",
                 f"{serial_total:.2f}", f"{1000 * per_fit / args.max_iter:.1f}",
                 f"{1000 * per_fit / args.max_iter:.1f}",
                 f"{np.mean([m[1] for m in measured]):.4f} (measured fits)"])
    print()
    print(_table(rows, ["side", "compile s", "wall s (warm)", "ms / epoch (all models)", "ms / epoch / model",
                        "mean test accuracy"]))
    print(f"\n{args.models}-model sweep: {serial_total / sweep_seconds:.1f}x faster than serial scikit-learn "
          f"(warm; mean test accuracy jaxrl {sweep_acc:.4f})")
    print(f"fit_grid phases, {args.models} models (warm call, s): "
          + ", ".join(f"{k} {v:.3f}" for k, v in sweep_timings.items()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--n-alphas", type=int, default=16)
    parser.add_argument("--cv", type=int, default=3, help="folds for the cv comparison (0: skip it)")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--sklearn-dtype", default="float32", choices=["float32", "float64"],
                        help="scikit-learn's input dtype (float32, as jaxrl's, is also its faster path with 1 thread)")
    parser.add_argument("--sklearn-blas-threads", type=int, default=1,
                        help="BLAS threads for the serial scikit-learn fits (0: the library's default). 1 is "
                             "scikit-learn's fastest here: OpenBLAS with 2 threads on these small matrices on a "
                             "shared 2-core machine was 20-50x slower; GridSearchCV's loky workers use "
                             "cpu_count // n_jobs = 1")
    parser.add_argument("--compilation-cache", default=None, metavar="DIR",
                        help="enable JAX's persistent compilation cache in DIR (a second process then loads the "
                             "compiled fit_grid loop instead of compiling it; reported as compile s)")
    parser.add_argument("--host-devices", type=int, default=1,
                        help="split the CPU into N JAX devices and add fit_grid(shard_runs=True) rows")
    parser.add_argument("--skip-serial", action="store_true")
    parser.add_argument("--skip-gridsearch", action="store_true")
    parser.add_argument("--mnist-sized", action="store_true")
    parser.add_argument("--models", type=int, default=64)
    parser.add_argument("--npz", default=None, help="MNIST-like .npz (x_train, y_train, x_test, y_test)")
    parser.add_argument("--sklearn-fits", type=int, default=1, help="--mnist-sized: scikit-learn fits measured")
    parser.add_argument("--n-samples", type=int, default=60000, help="--mnist-sized synthetic training rows")
    args = parser.parse_args(argv)
    if args.max_iter < 1 or args.n_alphas < 1 or args.models < 1 or args.cv < 0 or args.cv == 1:
        parser.error("--max-iter, --n-alphas and --models must be >= 1, --cv 0 or >= 2")
    if args.sklearn_fits < 1 or args.n_samples < 10:
        parser.error("--sklearn-fits must be >= 1 and --n-samples >= 10")
    _quiet()
    if args.host_devices > 1:  # before JAX is imported (nothing above imports it)
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={args.host_devices}").strip()
    if args.compilation_cache:
        import jax

        jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        print(f"persistent compilation cache: {args.compilation_cache}")
    if args.mnist_sized:
        bench_mnist_sized(args)
    else:
        bench_digits(args)


if __name__ == "__main__":
    main()
