"""The compiled loop of :func:`jaxrl.mlp.grid.fit_grid`: epochs of ``R`` stacked runs in one XLA program.

:func:`_train_chunk` is a jitted ``lax.while_loop`` over epochs; each epoch is the core's
:func:`jaxrl.mlp.core.train_epoch` ``jax.vmap``-ed over runs, then (``early_stopping``) every run's
validation score (:func:`validation_score`) and sklearn's epoch-end bookkeeping
(:func:`jaxrl.mlp.epoch_end.epoch_end`, on ``[R]`` arrays), masking the runs that have stopped.
:func:`_compile` compiles it ahead of time, once per shapes, shardings and static settings.
"""

from __future__ import annotations

import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxrl.mlp import core
from jaxrl.mlp import parallel as mlp_parallel
from jaxrl.mlp.epoch_end import EpochEndConfig, EpochEndState, epoch_end

__all__ = ["GridState", "validation_score"]


class GridState(NamedTuple):
    """Training state of ``R`` stacked runs (leading axis of every leaf is ``R``)."""

    params: Any  # tuple of (W [R, fan_in, fan_out], b [R, fan_out])
    opt_state: Any  # the optimizer state, leaves [R, ...]; its learning rate is ends.learning_rate
    best_params: Any  # like params: the best-validation parameters (early_stopping), else None
    ends: EpochEndState  # sklearn's epoch-end bookkeeping (n_iter_, best_loss_, ...), fields [R]
    active: jax.Array  # [R] bool, False once the run has stopped
    diverged: jax.Array  # [R] bool, a non-finite loss or weight stopped the run


class _RunConfig(NamedTuple):
    """Per-run constants (traced, leading axis ``R``)."""

    alpha: jax.Array  # [R] float
    learning_rate_init: jax.Array  # [R] float
    n_train: jax.Array  # [R] int32, training rows (sklearn's t_ increment per epoch)
    batch_mask: jax.Array  # [R, n_batches, batch_width] bool
    val_rows: jax.Array  # [R, n_val] int32 validation rows of x (early_stopping; padding rows weigh 0)
    val_weight: jax.Array  # [R, n_val] float, validation sample weights, 0 on padding


class _SharedConfig(NamedTuple):
    """Settings shared by all runs, traced (not static) so that one compile serves many grids."""

    tol: jax.Array  # () float
    n_iter_no_change: jax.Array  # () float (may be inf)
    max_iter: jax.Array  # () int32
    power_t: jax.Array  # () float
    schedule: jax.Array  # () int32, jaxrl.mlp.epoch_end.SCHEDULES code (0 for adam)


def validation_score(params, x, y, rows, weight, spec: core.MLPSpec) -> jax.Array:
    """sklearn's early-stopping score of one run: ``accuracy_score`` (classifiers) or ``r2_score``.

    Args:
      params: one run's parameters.
      x: ``[n, d]``; y: ``[n, k]`` (one-hot / indicator for classifiers).
      rows: ``[n_val]`` int32 validation rows; weight: ``[n_val]`` (0 on padding rows).
      spec: softmax output -> argmax accuracy; logistic -> 0.5-threshold exact-match
        accuracy (binary, multi-label, as ``LabelBinarizer.inverse_transform``);
        identity / exp -> ``r2_score`` averaged over outputs (``force_finite``).

    Returns:
      ``()`` the score, ``nan`` when the output is not finite (as the estimator).
    """
    output = core.forward(params, x[rows], spec.activation, spec.out_activation)
    target = y[rows]
    weight_sum = jnp.sum(weight)
    if spec.out_activation == "softmax":
        score = jnp.sum(weight * (jnp.argmax(output, -1) == jnp.argmax(target, -1))) / weight_sum
    elif spec.out_activation == "logistic":
        score = jnp.sum(weight * jnp.all((output > 0.5) == (target > 0.5), axis=-1)) / weight_sum
    else:
        mean = jnp.sum(weight[:, None] * target, 0) / weight_sum
        numerator = jnp.sum(weight[:, None] * (target - output) ** 2, 0)
        denominator = jnp.sum(weight[:, None] * (target - mean) ** 2, 0)
        safe = jnp.where(denominator != 0, denominator, 1)
        r2 = jnp.where(denominator != 0, 1 - numerator / safe, jnp.where(numerator == 0, 1.0, 0.0))
        score = jnp.mean(r2)
    return jnp.where(jnp.all(jnp.isfinite(output)), score, jnp.nan).astype(x.dtype)



def _epoch_end(state: GridState, new_params, new_opt_state, metrics, val_score, config: _RunConfig,
               shared: _SharedConfig):
    """:func:`jaxrl.mlp.epoch_end.epoch_end` for all runs, masking those that did not train this epoch.

    A run trains while it is active and its loss and weights stay finite; a run whose epoch is not finite
    is marked diverged and keeps its last finite parameters (where the estimator raises).

    Args:
      val_score: ``[R]`` validation scores of ``new_params`` (early_stopping), or None.

    Returns:
      ``(state, epoch_loss [R], val_score [R])``, ``nan`` for runs that did not train.
    """
    epoch_loss = metrics["loss"]
    stepped = state.active & jnp.isfinite(epoch_loss) & metrics["finite"]

    def where_runs(mask, new, old):  # mask [R], new / old [R, ...]
        return jnp.where(mask.reshape(mask.shape + (1,) * (new.ndim - 1)), new, old)

    ends_config = EpochEndConfig(tol=shared.tol, n_iter_no_change=shared.n_iter_no_change, schedule=shared.schedule,
                                 learning_rate_init=config.learning_rate_init, power_t=shared.power_t)
    ends = epoch_end(state.ends, epoch_loss, config.n_train, ends_config, val_score)
    ends = jax.tree.map(functools.partial(where_runs, stepped), ends, state.ends)
    ends = ends._replace(n_iter=state.ends.n_iter + state.active.astype(jnp.int32), improved=stepped & ends.improved)
    params = jax.tree.map(functools.partial(where_runs, stepped), new_params, state.params)
    opt_state = jax.tree.map(functools.partial(where_runs, stepped), new_opt_state, state.opt_state)
    opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": ends.learning_rate})
    best_params = state.best_params
    if val_score is not None:
        best_params = jax.tree.map(functools.partial(where_runs, ends.improved), params, state.best_params)
    state = GridState(
        params=params,
        opt_state=opt_state,
        best_params=best_params,
        ends=ends,
        active=stepped & ~ends.stopped & (ends.n_iter < shared.max_iter),
        diverged=state.diverged | (state.active & ~stepped),
    )
    val_out = jnp.full_like(epoch_loss, jnp.nan) if val_score is None else jnp.where(stepped, val_score, jnp.nan)
    return state, jnp.where(stepped, epoch_loss, jnp.nan), val_out


def _train_chunk(state: GridState, x, y, weight, batch_rows, config: _RunConfig, shared: _SharedConfig, *,
                 optimizer, spec, mesh, early_stopping):
    """Up to ``E`` epochs of all ``R`` runs: ``while_loop`` over epochs of a vmapped ``core.train_epoch``.

    Args:
      state: :class:`GridState`, leaves ``[R, ...]``.
      x: ``[n, d]``, y: ``[n, k]``, weight: ``[n]`` (shared by all runs, on device once).
      batch_rows: ``[R, E, n_batches, batch_width]`` int32 rows of ``x`` per run, epoch and batch, or
        ``[1, E, n_batches, batch_width]`` when every run draws the same minibatches (same training rows,
        batch size and shuffle seed, e.g. an ``alpha`` sweep): each batch is then gathered once and the
        first layer of all runs is one matrix product ``[B, d] @ [d, R * h]`` instead of R small ones.
      config: per-run constants; shared: settings common to all runs.

    Returns:
      ``(state, (loss_curve [E, R], validation_curve [E, R]))``; the loop exits early once every run stopped.
    """
    n_epochs = batch_rows.shape[1]
    n_runs = config.alpha.shape[0]
    assert config.batch_mask.shape[0] == n_runs and batch_rows.shape[0] in (1, n_runs), batch_rows.shape
    shared_rows = batch_rows.shape[0] == 1
    epoch = functools.partial(core.train_epoch, optimizer=optimizer, spec=spec)
    batch_axis = None if shared_rows else 0
    epoch_all = jax.vmap(epoch, in_axes=(0, 0, None, None, None, batch_axis, batch_axis, 0))
    score_all = jax.vmap(functools.partial(validation_score, spec=spec), in_axes=(0, None, None, 0, 0))
    curve = jnp.full((2, n_epochs, n_runs), jnp.nan, x.dtype)

    def cond(carry):
        e, state, _ = carry
        return (e < n_epochs) & jnp.any(state.active)

    def body(carry):
        e, state, curve = carry
        rows = lax.dynamic_index_in_dim(batch_rows, e, axis=1, keepdims=False)  # [R or 1, n_batches, width]
        mask = config.batch_mask[:1] if shared_rows else config.batch_mask
        if mesh is not None:
            rows = mlp_parallel.constrain_batch_axis(rows, mesh, axis=2)
            mask = mlp_parallel.constrain_batch_axis(mask, mesh, axis=2)
        if shared_rows:
            rows, mask = rows[0], mask[0]
        new_params, new_opt_state, metrics = epoch_all(
            state.params, state.opt_state, x, y, weight, rows, mask, config.alpha
        )
        val_score = score_all(new_params, x, y, config.val_rows, config.val_weight) if early_stopping else None
        state, epoch_loss, val_score = _epoch_end(state, new_params, new_opt_state, metrics, val_score, config,
                                                  shared)
        return e + 1, state, curve.at[:, e].set(jnp.stack([epoch_loss, val_score]))

    _, state, curve = lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), state, curve))
    return state, curve


_STATIC = ("optimizer", "spec", "mesh", "early_stopping")
_train_chunk_jit = jax.jit(_train_chunk, static_argnames=_STATIC, donate_argnums=(0,))
_compiled: dict = {}


def _compile(args, static):
    """AOT-compile :func:`_train_chunk` (cached by shapes, dtypes, shardings and static config)."""
    leaves = jax.tree.leaves(args)
    key = (
        jax.tree.structure(args),
        tuple((leaf.shape, leaf.dtype, getattr(leaf, "sharding", None)) for leaf in leaves),
        tuple(sorted(static.items(), key=lambda kv: kv[0])),
        jax.config.jax_enable_x64,
    )
    if key in _compiled:
        return _compiled[key], 0.0
    start = time.perf_counter()
    compiled = _train_chunk_jit.lower(*args, **static).compile()
    seconds = time.perf_counter() - start
    _compiled[key] = compiled
    return compiled, seconds
