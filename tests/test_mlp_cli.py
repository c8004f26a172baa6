"""`jaxrl mlp`: flags map onto MLPClassifier's constructor; tiny end-to-end runs write the table and figures."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from jaxrl.mlp import cli
from jaxrl.mlp.experiment import ExperimentConfig, prepare_features, run_experiment
from jaxrl import datasets

TINY = ["--hidden-layer-sizes", "8", "--max-iter", "3", "--max-train", "150", "--batch-size", "50"]


def parse(argv):
    parser = argparse.ArgumentParser(prog="jaxrl")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["mlp", *argv])


def test_flags_map_onto_constructor():
    args = parse(["--hidden-layer-sizes", "256", "128", "--solver", "sgd", "--alpha", "0.001",
                  "--learning-rate", "adaptive", "--batch-size", "auto", "--no-nesterovs-momentum",
                  "--early-stopping", "--random-state", "3"])
    assert cli.estimator_params_from_args(args) == {
        "hidden_layer_sizes": (256, 128), "solver": "sgd", "alpha": 0.001, "learning_rate": "adaptive",
        "batch_size": "auto", "nesterovs_momentum": False, "early_stopping": True, "random_state": 3}
    assert cli.estimator_params_from_args(parse(["--hidden-layer-sizes", "64,32"]))["hidden_layer_sizes"] == (64, 32)
    assert cli.estimator_params_from_args(parse([])) == {"random_state": 0}  # omitted flags: estimator defaults
    args = parse([])
    assert args.dataset == "digits" and args.func is cli.run and not args.compare_sklearn


def test_every_model_flag_is_a_constructor_parameter():
    from sklearn.neural_network import MLPClassifier

    names = set(MLPClassifier().get_params())
    assert {dest for _, dest, _ in cli._MODEL_FLAGS} | {"random_state"} <= names


@pytest.mark.parametrize("argv", [["--hidden-layer-sizes", "0"], ["--max-iter", "-5"], ["--alpha", "-1"],
                                  ["--batch-size", "big"], ["--dataset", "cifar"]])
def test_bad_flags_are_refused_by_argparse(argv, capsys):
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert info.value.code == 2 and "error" in capsys.readouterr().err


def test_cli_digits_compare_sklearn_end_to_end(tmp_path, capsys):
    out = tmp_path / "digits"
    args = parse([*TINY, "--compare-sklearn", "--out", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "| jaxrl | digits | 150 | 450 | 8 adam | 3 |" in printed
    assert "| sklearn | digits | 150 | 450 | 8 adam | 3 |" in printed
    record = json.loads((out / "results.json").read_text())
    assert [m["implementation"] for m in record["models"]] == ["jaxrl", "sklearn"]
    assert all(0.0 <= m["test_accuracy"] <= 1.0 and len(m["loss_curve"]) == 3 for m in record["models"])
    expected = {"loss_curve.png", "results.json", "results.md"} | {
        f"{impl}_{kind}.png" for impl in ("jaxrl", "sklearn") for kind in ("weights", "confusion", "misclassified")}
    assert {p.name for p in out.iterdir()} == expected


def test_experiment_with_sklearn_estimator(tmp_path):
    """The same experiment path with scikit-learn's class (runs whether or not jaxrl's estimator exists)."""
    config = ExperimentConfig(dataset="digits", estimator_params=dict(hidden_layer_sizes=(8,), max_iter=3,
                                                                      batch_size=50, random_state=0),
                              out=str(tmp_path / "run"), max_train=150, repeats=2, blas_threads=1)
    logged = []
    result = run_experiment(config, implementations=("sklearn",), log=logged.append)
    (model,) = result.models
    assert model.n_iter == 3 and len(model.fit_seconds) == 2 and model.y_pred.shape == (450,)
    assert model.estimator.coefs_[0].shape == (64, 8)
    assert "fit s (warm, best)" in result.table and any("sklearn" in line for line in logged)
    assert "BLAS threads capped at 1 during the fits" in logged
    assert (tmp_path / "run" / "sklearn_weights.png").is_file()


def test_prepare_features_scaling():
    data = datasets.load_digits(flatten=True)
    x_train, x_test, index = prepare_features(data, scale="pixel", max_train=100)
    assert x_train.shape == (100, 64) and x_train.dtype == np.float32 and x_train.max() == 1.0
    np.testing.assert_array_equal(x_train * 16, data.x_train[index])
    x_train, x_test, _ = prepare_features(data, scale="standard", dtype="float64")
    assert x_train.dtype == np.float64 and abs(x_train.mean()) < 1e-9


def test_missing_dataset_offline_is_one_clear_error(tmp_path, capsys):
    out = tmp_path / "out"
    args = parse(["--dataset", "kmnist", "--data-dir", str(tmp_path / "data"), "--no-download", "--out", str(out),
                  "--max-iter", "1"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Kuzushiji-MNIST") and "train-images-idx3-ubyte.gz" in err
    assert "kmnist-train-imgs.npz" in err and not out.exists()


def test_kmnist_from_hand_placed_npz(tmp_path, capsys):
    """`--data-dir` reads Kaggle-style npz files (tiny ones here) and runs end to end with sklearn's class."""
    rng = np.random.default_rng(0)
    arrays = (rng.integers(0, 256, (60, 28, 28), dtype=np.uint8), np.arange(60) % 10,
              rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), np.arange(20) % 10)
    for name, array in zip(datasets.KMNIST_SPEC.npz_files, arrays):
        np.savez(tmp_path / name, array)
    config = ExperimentConfig(dataset="kmnist", data_dir=str(tmp_path), download=False,
                              estimator_params=dict(hidden_layer_sizes=(4,), max_iter=2, random_state=0),
                              out=str(tmp_path / "out"))
    result = run_experiment(config, implementations=("sklearn",), log=lambda line: None)
    assert result.dataset.class_names[3] == "tsu" and result.n_train == 60
    assert (tmp_path / "out" / "sklearn_weights.png").is_file()


def test_bad_estimator_parameter_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    args = parse([*TINY, "--validation-fraction", "1.5", "--early-stopping", "--out", str(out)])
    assert args.func(args) == 2
    assert "validation_fraction" in capsys.readouterr().err and not out.exists()


def test_main_job_shows_warm_refit_compile_time_and_an_alpha_sweep(tmp_path, capsys):
    """The main job's honest view: first fit (with compilation) apart from a warm refit, and an alpha sweep
    in one fit_grid call next to the same models fitted serially by scikit-learn, accuracies side by side."""
    out = tmp_path / "digits"
    args = parse([*TINY, "--compare-sklearn", "--repeats", "2", "--sweep", "3", "--no-figures", "--out", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "compile s (1st - warm)" in printed and "| 3 alphas |" in printed
    record = json.loads((out / "results.json").read_text())
    sides = [row["side"] for row in record["sweep"]]
    assert len(sides) == 3 and sides[-1] == "scikit-learn, serial fits"
    assert all(0.0 < row["mean_test_accuracy"] <= 1.0 and row["seconds"] > 0 for row in record["sweep"])
    assert record["sweep"][0]["compile_seconds"] >= 0 and record["sweep"][1]["compile_seconds"] == 0
    # the sweep fits the same models on both sides: fit_grid's warm and cold calls agree exactly
    assert record["sweep"][0]["mean_test_accuracy"] == record["sweep"][1]["mean_test_accuracy"]
    with pytest.raises(ValueError, match="sweep must be >= 0"):
        ExperimentConfig(sweep=-1)
