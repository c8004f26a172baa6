"""Benchmark: one compiled MLP epoch (``jaxrl.mlp.core.train_epoch``) on MNIST-shaped data, 1 or N models.

The functional core alone (no estimator bookkeeping, data on the device once): hidden (100,), relu, adam,
batch 200, float32, synthetic 60000 x 784 inputs (uniform) with labels from a random linear teacher. N models
(``--models``) are ``jax.vmap``-ed over their parameters, optimizer states and ``alpha`` and share the
minibatches (as ``fit_grid`` does for an alpha sweep). Each row times ``--epochs`` epochs after a compiling
warm-up epoch and reports ms per epoch, ms per epoch per model and µs per minibatch step, for every
combination of ``--unroll`` (minibatch steps per ``lax.scan`` iteration) and ``--skip`` (how empty padding
batches are skipped: see ``train_epoch``'s ``empty_batch_skip``). XLA flags (e.g. command buffers) are
compared by running it again with another ``XLA_FLAGS``.

    python experiments/bench_mlp_epoch.py --models 1 64 --unroll 1 4 --skip auto select
"""

from __future__ import annotations

import fair_blas  # noqa: F401  (first: drops the OpenBLAS pins before NumPy loads)

import argparse
import collections
import functools
import itertools
import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl.mlp import core, optim


def _data(n_samples: int, n_features: int, n_classes: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.random((n_samples, n_features), dtype=np.float32)
    teacher = rng.standard_normal((n_features, n_classes)).astype(np.float32)
    labels = np.argmax((x - 0.5) @ teacher, axis=1)
    return jnp.asarray(x), jnp.asarray(np.eye(n_classes, dtype=np.float32)[labels])


def _models(n_models: int, layer_units, optimizer):
    params = [core.init_params_numpy(np.random.RandomState(i), layer_units, "relu", np.float32) for i in range(n_models)]
    states = [optim.init_optimizer(optimizer, p, jnp.float32, learning_rate=1e-3) for p in params]
    stack = lambda trees: jax.tree.map(lambda *leaves: jnp.stack([jnp.asarray(a) for a in leaves]), *trees)
    return stack(params), stack(states), jnp.asarray(np.logspace(-5, 1, n_models), jnp.float32)


_NO_KERNEL = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast"}


def loop_body_ops(hlo_text: str) -> list[tuple[str, str]]:
    """``(opcode, name)`` of the largest ``while`` body's instructions in optimized HLO text, less those that
    launch nothing.

    On a GPU each listed instruction (a fusion, a cuBLAS ``custom-call``, a copy) is roughly one kernel launch
    per minibatch step, which is what bounds a step of this size; XLA names fusions after what they hold
    (``loop_add_fusion``, ``gemm_fusion_dot``, ``input_reduce_fusion``...).
    """
    bodies = set(re.findall(r"\bwhile\(.*?body=%?([\w.\-]+)", hlo_text))
    found = {}
    for name, block in re.findall(r"^(?:%)?([\w.\-]+) [^\n]*\{\n(.*?)^\}", hlo_text, flags=re.M | re.S):
        if name in bodies:
            ops = re.findall(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=.*?\s([a-z][a-z0-9\-]*)\(", block, flags=re.M)
            found[name] = [(op, instruction) for instruction, op in ops if op not in _NO_KERNEL]
    return max(found.values(), key=len, default=[])


def bench(x, y, n_models: int, unroll: int, skip: str, epochs: int, batch_size: int, hidden: int,
          hlo: bool = False):
    n_samples = x.shape[0]
    optimizer = optim.make_optimizer("adam")
    params, states, alphas = _models(n_models, [x.shape[1], hidden, y.shape[1]], optimizer)
    rows, mask = core.make_batches(np.random.RandomState(0).permutation(n_samples), batch_size)
    rows, mask, weight = jnp.asarray(rows), jnp.asarray(mask), jnp.ones(n_samples, jnp.float32)
    epoch = functools.partial(core.train_epoch, optimizer=optimizer, spec=core.MLPSpec(), unroll=unroll,
                              empty_batch_skip=skip)
    run = jax.jit(jax.vmap(lambda p, s, a: epoch(p, s, x, y, weight, rows, mask, a)))
    if hlo:
        ops = loop_body_ops(run.lower(params, states, alphas).compile().as_text())
        counts = collections.Counter(op for op, _ in ops)
        print(f"# models {n_models}, unroll {unroll}, skip {skip}: {len(ops)} launching ops in the loop "
              f"body: {dict(counts.most_common())}", flush=True)
        if unroll == 1:
            print("#   " + " ".join(name for _, name in ops), flush=True)
    start = time.perf_counter()
    params, states, metrics = jax.block_until_ready(run(params, states, alphas))
    compile_and_first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(epochs):
        params, states, metrics = run(params, states, alphas)
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - start) / epochs
    return compile_and_first, seconds, rows.shape[0], float(jnp.mean(metrics["loss"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--unroll", type=int, nargs="+", default=[1])
    parser.add_argument("--skip", nargs="+", default=["auto"], choices=["auto", "cond", "select"])
    parser.add_argument("--epochs", type=int, default=10, help="timed epochs per row (after a warm-up epoch)")
    parser.add_argument("--n-samples", type=int, default=60_000)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--hlo", action="store_true",
                        help="also print the compiled loop body's kernel-launching HLO ops per row")
    args = parser.parse_args(argv)
    if min(args.models) < 1 or min(args.unroll) < 1 or args.epochs < 1 or args.n_samples < args.batch_size:
        parser.error("--models, --unroll, --epochs must be >= 1 and --n-samples >= --batch-size")
    x, y = _data(args.n_samples, 784, 10, 0)
    device = jax.devices()[0]
    print("#", fair_blas.describe_blas())
    print(f"# {getattr(device, 'device_kind', device.platform)}, jax {jax.__version__}, {os.cpu_count()} CPUs, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(f"# synthetic {args.n_samples} x 784 float32, hidden ({args.hidden},), relu, adam, batch "
          f"{args.batch_size}; {args.epochs} timed epochs per row")
    print("| models | unroll | skip | compile + 1st epoch s | ms / epoch | ms / epoch / model | µs / step | mean loss |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for n_models, unroll, skip in itertools.product(args.models, args.unroll, args.skip):
        first, seconds, n_batches, loss = bench(x, y, n_models, unroll, skip, args.epochs, args.batch_size,
                                                args.hidden, args.hlo)
        print(f"| {n_models} | {unroll} | {skip} | {first:.2f} | {1e3 * seconds:.2f} | "
              f"{1e3 * seconds / n_models:.3f} | {1e6 * seconds / n_batches:.1f} | {loss:.4f} |", flush=True)


if __name__ == "__main__":
    main()
