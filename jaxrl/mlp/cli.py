"""`jaxrl mlp`: train jaxrl's MLPClassifier on an image dataset, print a results table, draw figures.

    jaxrl mlp --dataset digits --compare-sklearn --out results/digits
    jaxrl mlp --dataset kmnist --data-dir ~/data --hidden-layer-sizes 256 128 --max-iter 30 --early-stopping

Model flags map one-to-one onto `MLPClassifier`'s constructor (scikit-learn's names with dashes); a flag left
out keeps the estimator's default. Heavy imports (JAX, scikit-learn, matplotlib) happen inside `run`.
"""
from __future__ import annotations

import argparse
import sys

from jaxrl.argtypes import positive_int

__all__ = ["add_parser", "run", "estimator_params_from_args"]

DATASETS = ("digits", "mnist", "fashion", "kmnist")


def _hidden_sizes(text: str) -> list[int]:
    return [positive_int(part) for part in text.replace(",", " ").split()] or [positive_int(text)]


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a positive number, got 0")
    return value


def _batch_size(text: str):
    return "auto" if text == "auto" else positive_int(text)


# (flag, estimator parameter, argparse keyword arguments); default None = the estimator's own default.
_MODEL_FLAGS = (
    ("--hidden-layer-sizes", "hidden_layer_sizes",
     dict(type=_hidden_sizes, nargs="+", metavar="N", help="units per hidden layer, e.g. 256 128 (default 100)")),
    ("--activation", "activation", dict(choices=("identity", "logistic", "tanh", "relu"))),
    ("--solver", "solver", dict(choices=("lbfgs", "sgd", "adam"))),
    ("--alpha", "alpha", dict(type=_non_negative_float, help="L2 penalty (default 1e-4)")),
    ("--batch-size", "batch_size", dict(type=_batch_size, help="'auto' (= min(200, n)) or a positive integer")),
    ("--learning-rate", "learning_rate", dict(choices=("constant", "invscaling", "adaptive"))),
    ("--learning-rate-init", "learning_rate_init", dict(type=_positive_float)),
    ("--power-t", "power_t", dict(type=float)),
    ("--max-iter", "max_iter", dict(type=positive_int, help="epochs (sgd/adam) or iterations (lbfgs)")),
    ("--shuffle", "shuffle", dict(action=argparse.BooleanOptionalAction)),
    ("--tol", "tol", dict(type=_non_negative_float)),
    ("--momentum", "momentum", dict(type=_non_negative_float)),
    ("--nesterovs-momentum", "nesterovs_momentum", dict(action=argparse.BooleanOptionalAction)),
    ("--early-stopping", "early_stopping", dict(action=argparse.BooleanOptionalAction)),
    ("--validation-fraction", "validation_fraction", dict(type=_positive_float)),
    ("--beta-1", "beta_1", dict(type=_non_negative_float)),
    ("--beta-2", "beta_2", dict(type=_non_negative_float)),
    ("--epsilon", "epsilon", dict(type=_positive_float)),
    ("--n-iter-no-change", "n_iter_no_change", dict(type=positive_int)),
    ("--max-fun", "max_fun", dict(type=positive_int)),
    ("--verbose", "verbose", dict(action="store_true", default=None)),
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `jaxrl mlp` on the `jaxrl` command's subparsers."""
    parser = subparsers.add_parser(
        "mlp",
        help="train an MLP classifier on digits / MNIST / Fashion-MNIST / KMNIST",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, default="digits",
                      help="digits is bundled with scikit-learn (offline); the others are downloaded once")
    data.add_argument("--data-dir", default=None,
                      help="dataset cache folder (default: $JAXRL_DATA_DIR, else ~/.cache/jaxrl/datasets)")
    data.add_argument("--source", choices=("official", "openml"), default="official",
                      help="official IDX/npz files (md5-verified), or OpenML via sklearn's fetch_openml")
    data.add_argument("--no-download", dest="download", action="store_false",
                      help="only use files already in the data folder")
    data.add_argument("--max-train", type=positive_int, default=None,
                      help="train on this many images (a seeded random subset) for quick runs")
    data.add_argument("--scale", choices=("pixel", "standard"), default="pixel",
                      help="pixel: x / max pixel value, in [0, 1] (default); standard: StandardScaler")
    data.add_argument("--dtype", choices=("float32", "float64"), default="float32")

    model = parser.add_argument_group("model (MLPClassifier's parameters; omitted = its default)")
    for flag, dest, kwargs in _MODEL_FLAGS:
        kwargs = dict(kwargs)
        kwargs.setdefault("default", None)
        model.add_argument(flag, dest=dest, **kwargs)
    model.add_argument("--random-state", dest="random_state", type=int, default=0,
                       help="seed for weight init, shuffling and the validation split (default 0)")

    run_group = parser.add_argument_group("run")
    run_group.add_argument("--compare-sklearn", action="store_true",
                           help="also fit scikit-learn's MLPClassifier with the same parameters, same table")
    run_group.add_argument("--repeats", type=positive_int, default=1,
                           help="fit each model this many times; the table shows the first fit (with jit "
                                "compilation) and the best later one")
    run_group.add_argument("--sweep", type=positive_int, default=None, metavar="N",
                           help="also fit N models over log-spaced alphas in one vmapped fit_grid call (cold and "
                                "warm), vs N serial scikit-learn fits with --compare-sklearn")
    run_group.add_argument("--blas-threads", type=positive_int, default=None,
                           help="cap the BLAS threads of NumPy/SciPy (scikit-learn's matrix products) during the "
                                "fits; on a busy machine 1 avoids oversubscription (default: library default)")
    run_group.add_argument("--out", default=None,
                           help="folder for results.json, results.md and the figures (default results/<dataset>)")
    run_group.add_argument("--no-figures", dest="figures", action="store_false", help="skip the figures")
    parser.set_defaults(func=run)
    return parser


def estimator_params_from_args(args: argparse.Namespace) -> dict:
    """The `MLPClassifier(**params)` keyword arguments given on the command line (omitted flags left out)."""
    params = {}
    for _, dest, _ in _MODEL_FLAGS:
        value = getattr(args, dest, None)
        if value is None:
            continue
        if dest == "hidden_layer_sizes":
            value = tuple(size for group in value for size in group)
        params[dest] = value
    params["random_state"] = args.random_state
    return params


def run(args: argparse.Namespace) -> int:
    """Run the experiment; problems with data or parameters print one `error:` line and return 2."""
    from jaxrl.datasets import ChecksumError, DatasetError, DatasetNotFoundError
    from jaxrl.mlp.experiment import ExperimentConfig, run_experiment

    try:
        config = ExperimentConfig(
            dataset=args.dataset,
            data_dir=args.data_dir,
            source=args.source,
            download=args.download,
            estimator_params=estimator_params_from_args(args),
            compare_sklearn=args.compare_sklearn,
            out=args.out if args.out is not None else f"results/{args.dataset}",
            max_train=args.max_train,
            scale=args.scale,
            dtype=args.dtype,
            figures=args.figures,
            repeats=args.repeats,
            blas_threads=args.blas_threads,
            sweep=args.sweep or 0,
        )
        run_experiment(config)
    except (DatasetNotFoundError, ChecksumError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as error:  # bad estimator parameters (scikit-learn-style messages)
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
