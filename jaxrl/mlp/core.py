"""Pure functional core of scikit-learn's multi-layer perceptron, in JAX.

Everything here is a pure function of explicit values, safe under ``jax.jit``,
``jax.vmap`` and ``jax.grad``; nothing does I/O. The estimators in
``jaxrl.mlp.estimators`` are a thin shell over these functions.

Conventions (shapes): ``x: [B, n_features]``, ``y: [B, n_outputs]`` (float;
one-hot / indicator for classification), ``weight: [B]`` (sample weight times
the padding mask; 0 for padded rows). Parameters are a tuple of ``(W, b)`` per
layer with ``W: [fan_in, fan_out]`` and ``b: [fan_out]``, i.e. sklearn's
``coefs_[i]`` / ``intercepts_[i]``.

Reproduced scikit-learn behaviour (``sklearn/neural_network/_multilayer_perceptron.py``
and ``_base.py``):

* Glorot-uniform init with bound ``sqrt(6 / (fan_in + fan_out))`` (``2`` instead of
  ``6`` for the logistic activation), weights and biases drawn in the order
  W0, b0, W1, b1, ... (:func:`init_params_numpy`).
* Reported loss: half squared error (mean over outputs), half Poisson deviance,
  log-loss / binary log-loss with probabilities clipped to ``[eps, 1 - eps]``,
  all sample-weighted averages, plus ``0.5 * alpha * sum ||W||^2 / sum(weight)``,
  i.e. the L2 penalty divided by the *real* (weighted) batch size.
* Gradient: sklearn back-propagates ``delta = (output - y) * weight`` (canonical
  link) and divides by ``sum(weight)``. :func:`objective` is a surrogate whose
  autodiff gradient is exactly that (also for multi-output squared error, where
  sklearn's gradient is ``n_outputs`` times the gradient of its reported loss).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.scipy.special import xlogy

__all__ = [
    "Params",
    "Batch",
    "MLPSpec",
    "HIDDEN_ACTIVATIONS",
    "OUTPUT_ACTIVATIONS",
    "init_params",
    "init_params_numpy",
    "forward",
    "forward_logits",
    "loss",
    "objective",
    "train_step",
    "make_batches",
    "train_epoch",
    "params_to_numpy",
]

Params = tuple  # tuple of (W [fan_in, fan_out], b [fan_out]) per layer


class Batch(NamedTuple):
    """A (possibly padded) batch of training data."""

    x: jax.Array  # [B, n_features] float
    y: jax.Array  # [B, n_outputs] float (one-hot / indicator for classifiers)
    weight: jax.Array  # [B] float, sample weight * mask (0 for padding rows)


class MLPSpec(NamedTuple):
    """Static (hashable) description of the network's non-array choices."""

    activation: str = "relu"  # hidden: identity | logistic | tanh | relu
    out_activation: str = "softmax"  # identity | logistic | softmax | exp
    loss: str = "log_loss"  # log_loss | binary_log_loss | squared_error | poisson


HIDDEN_ACTIVATIONS = {
    "identity": lambda z: z,
    "logistic": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
}

OUTPUT_ACTIVATIONS = {
    "identity": lambda z: z,
    "logistic": jax.nn.sigmoid,
    "softmax": lambda z: jax.nn.softmax(z, axis=-1),
    "exp": jnp.exp,
}

# Per-row surrogate objective whose gradient w.r.t. the output pre-activation z is
# exactly ``out_activation(z) - y``, the canonical-link delta sklearn uses.
_SURROGATES = {
    "identity": lambda z, y: 0.5 * jnp.sum((z - y) ** 2, axis=-1),
    "logistic": lambda z, y: jnp.sum(jax.nn.softplus(z) - y * z, axis=-1),
    "softmax": lambda z, y: -jnp.sum(y * jax.nn.log_softmax(z, axis=-1), axis=-1),
    "exp": lambda z, y: jnp.sum(jnp.exp(z) - y * z, axis=-1),
}


def _glorot_bound(fan_in: int, fan_out: int, activation: str) -> float:
    factor = 2.0 if activation == "logistic" else 6.0
    return float(np.sqrt(factor / (fan_in + fan_out)))


def init_params(key: jax.Array, layer_units, activation: str = "relu", dtype=jnp.float32) -> Params:
    """Glorot-uniform parameters drawn with ``jax.random`` (sklearn's bound).

    Args:
      key: a PRNG key.
      layer_units: ``[n_features, *hidden_layer_sizes, n_outputs]``.
      activation: hidden activation; ``"logistic"`` uses factor 2 instead of 6.
      dtype: parameter dtype.

    Returns:
      ``((W0 [u0, u1], b0 [u1]), (W1 [u1, u2], b1 [u2]), ...)``.
    """
    params = []
    for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:]):
        key, w_key, b_key = jax.random.split(key, 3)
        bound = _glorot_bound(fan_in, fan_out, activation)
        w = jax.random.uniform(w_key, (fan_in, fan_out), dtype, -bound, bound)
        b = jax.random.uniform(b_key, (fan_out,), dtype, -bound, bound)
        params.append((w, b))
    return tuple(params)


def init_params_numpy(random_state: np.random.RandomState, layer_units, activation: str = "relu", dtype=np.float64):
    """sklearn's exact initial parameters from a NumPy ``RandomState``.

    Draws ``uniform(-bound, bound)`` in float64 in the order W0, b0, W1, b1, ...
    (as ``BaseMultilayerPerceptron._init_coef``) and casts to ``dtype``.

    Returns:
      tuple of ``(W [fan_in, fan_out], b [fan_out])`` NumPy arrays.
    """
    params = []
    for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:]):
        bound = np.sqrt((2.0 if activation == "logistic" else 6.0) / (fan_in + fan_out))
        w = random_state.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype, copy=False)
        b = random_state.uniform(-bound, bound, fan_out).astype(dtype, copy=False)
        params.append((w, b))
    return tuple(params)


def forward_logits(params: Params, x: jax.Array, activation: str = "relu") -> jax.Array:
    """Output-layer pre-activation ``z``.

    Args:
      params: tuple of ``(W, b)``.
      x: ``[B, n_features]``.
      activation: hidden activation name.

    Returns:
      ``[B, n_outputs]``.
    """
    hidden = HIDDEN_ACTIVATIONS[activation]
    h = x
    for w, b in params[:-1]:
        h = hidden(h @ w + b)
    w, b = params[-1]
    return h @ w + b


def forward(params: Params, x: jax.Array, activation: str = "relu", out_activation: str = "softmax") -> jax.Array:
    """Network output (sklearn's ``_forward_pass_fast``): ``[B, n_features] -> [B, n_outputs]``."""
    return OUTPUT_ACTIVATIONS[out_activation](forward_logits(params, x, activation))


def _l2_penalty(params: Params) -> jax.Array:
    return sum(jnp.sum(w * w) for w, _ in params)


def _data_loss(output: jax.Array, y: jax.Array, weight: jax.Array, loss_name: str) -> jax.Array:
    """sklearn's ``LOSS_FUNCTIONS[loss_name](y, output, weight)`` (weighted averages over rows)."""
    weight_sum = jnp.sum(weight)

    def average(values):  # np.average(values, weights=weight, axis=0) -> [n_outputs]
        return jnp.sum(weight[:, None] * values, axis=0) / weight_sum

    if loss_name == "squared_error":
        return 0.5 * jnp.mean(average((y - output) ** 2))
    if loss_name == "poisson":
        return jnp.sum(average(xlogy(y, y / output) - y + output))
    eps = jnp.finfo(output.dtype).eps
    prob = jnp.clip(output, eps, 1 - eps)
    if loss_name == "log_loss":
        if prob.shape[1] == 1:
            prob = jnp.concatenate([1 - prob, prob], axis=1)
            y = jnp.concatenate([1 - y, y], axis=1)
        return -jnp.sum(average(xlogy(y, prob)))
    if loss_name == "binary_log_loss":
        return -jnp.sum(average(xlogy(y, prob) + xlogy(1 - y, 1 - prob)))
    raise ValueError(f"unknown loss {loss_name!r}")


def loss(params: Params, batch: Batch, alpha, spec: MLPSpec = MLPSpec()) -> jax.Array:
    """sklearn's reported loss of one batch: data loss + ``0.5 alpha sum||W||^2 / sum(weight)``.

    Args:
      params: tuple of ``(W, b)``.
      batch: ``x [B, d]``, ``y [B, k]``, ``weight [B]`` (0 on padded rows).
      alpha: L2 strength (scalar, may be traced).
      spec: activations and loss name.

    Returns:
      ``()`` scalar, the value sklearn adds to ``loss_curve_`` bookkeeping.
    """
    output = forward(params, batch.x, spec.activation, spec.out_activation)
    penalty = 0.5 * alpha * _l2_penalty(params) / jnp.sum(batch.weight)
    return _data_loss(output, batch.y, batch.weight, spec.loss) + penalty


def objective(params: Params, batch: Batch, alpha, spec: MLPSpec = MLPSpec()):
    """Surrogate training objective whose gradient is sklearn's back-propagated gradient.

    ``sum_i weight_i * s(z_i, y_i) / sum(weight) + 0.5 alpha sum||W||^2 / sum(weight)``
    with ``ds/dz = out_activation(z) - y``. Its value equals sklearn's loss for
    single-output squared error, softmax log-loss and (up to clipping) binary
    log-loss; the reported loss is returned alongside.

    Returns:
      ``(objective (), reported_loss ())``.
    """
    logits = forward_logits(params, batch.x, spec.activation)
    weight_sum = jnp.sum(batch.weight)
    penalty = 0.5 * alpha * _l2_penalty(params) / weight_sum
    surrogate = jnp.sum(batch.weight * _SURROGATES[spec.out_activation](logits, batch.y)) / weight_sum
    output = OUTPUT_ACTIVATIONS[spec.out_activation](logits)
    reported = _data_loss(lax.stop_gradient(output), batch.y, batch.weight, spec.loss)
    return surrogate + penalty, reported + lax.stop_gradient(penalty)


def train_step(
    params: Params,
    opt_state: Any,
    batch: Batch,
    alpha,
    *,
    optimizer: optax.GradientTransformation,
    spec: MLPSpec = MLPSpec(),
):
    """One sklearn minibatch update.

    Args:
      params: tuple of ``(W, b)``.
      opt_state: ``optimizer``'s state.
      batch: ``x [B, d]``, ``y [B, k]``, ``weight [B]`` (padding rows have weight 0).
      alpha: L2 strength (scalar).
      optimizer: an optax transform, e.g. ``jaxrl.mlp.optim.make_optimizer("adam")``.
      spec: activations and loss.

    Returns:
      ``(params, opt_state, metrics)`` with ``metrics["loss"]`` the batch loss
      taken *before* the update (as sklearn records it).
    """
    grads, reported = jax.grad(objective, has_aux=True)(params, batch, alpha, spec)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    updates = jax.tree.map(lambda u, p: u.astype(p.dtype), updates, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, {"loss": reported}


def make_batches(order: np.ndarray, batch_size: int, n_batches_to: int | None = None, batch_size_to: int | None = None):
    """Cut a row order into sklearn's minibatches (``gen_batches``), padded and masked.

    Batch ``b`` holds ``order[b * batch_size:(b + 1) * batch_size]``; the ragged
    last batch, extra columns up to ``batch_size_to`` and extra (empty) batches up
    to ``n_batches_to`` are padded with row 0 and ``mask=False``. Padding to a few
    bucketed shapes lets many small fits share one compiled epoch.

    Args:
      order: ``[n]`` int row order for the epoch (a permutation when shuffling).
      batch_size: sklearn's minibatch size, ``1 <= batch_size``.
      n_batches_to: pad the number of batches to this (``>= ceil(n / batch_size)``).
      batch_size_to: pad each batch to this width (``>= batch_size``).

    Returns:
      ``(rows [n_batches_to, batch_size_to] int32, mask [n_batches_to, batch_size_to] bool)``.
    """
    n = len(order)
    n_batches = -(-n // batch_size)
    n_batches_to = n_batches if n_batches_to is None else n_batches_to
    batch_size_to = batch_size if batch_size_to is None else batch_size_to
    if n_batches_to < n_batches or batch_size_to < batch_size:
        raise ValueError("padding targets must not be smaller than the real batch layout")
    flat = np.zeros(n_batches * batch_size, np.int32)
    flat[:n] = order
    flat_mask = np.arange(n_batches * batch_size) < n
    rows = np.zeros((n_batches_to, batch_size_to), np.int32)
    mask = np.zeros((n_batches_to, batch_size_to), bool)
    rows[:n_batches, :batch_size] = flat.reshape(n_batches, batch_size)
    mask[:n_batches, :batch_size] = flat_mask.reshape(n_batches, batch_size)
    return rows, mask


def train_epoch(
    params: Params,
    opt_state: Any,
    x: jax.Array,
    y: jax.Array,
    sample_weight: jax.Array,
    batch_rows: jax.Array,
    batch_mask: jax.Array,
    alpha,
    *,
    optimizer: optax.GradientTransformation,
    spec: MLPSpec = MLPSpec(),
    unroll: int = 1,
    empty_batch_skip: str = "auto",
):
    """One epoch: ``lax.scan`` of :func:`train_step` over padded, masked minibatches.

    Masked rows get weight 0, which leaves each batch's loss, gradient and L2
    scaling (divided by the real batch size) exactly sklearn's; batches with no
    real row (shape padding) are skipped (no optimizer step).

    Args:
      params, opt_state: as in :func:`train_step`.
      x: ``[n, d]`` training inputs (on device once; batches are gathered inside).
      y: ``[n, k]`` targets.
      sample_weight: ``[n]`` (ones when unweighted).
      batch_rows: ``[n_batches, B]`` int32 rows of ``x`` per batch (:func:`make_batches`).
      batch_mask: ``[n_batches, B]`` bool, False on padding.
      alpha: L2 strength.
      unroll: minibatch steps per ``lax.scan`` iteration (results are the same).
      empty_batch_skip: how an empty batch is skipped: ``"cond"`` (``lax.cond``),
        ``"select"`` (compute the step, keep the old state: no conditional, which on
        a GPU costs a device-to-host sync per step) or ``"auto"`` (``cond`` on the
        CPU, ``select`` elsewhere). All give the same results.

    Returns:
      ``(params, opt_state, metrics)``: ``metrics["loss"]`` is sklearn's epoch
      loss (``sum_b batch_loss_b * len_b / n``), ``metrics["batch_loss"]``
      ``[n_batches]`` (0 for empty batches) and ``metrics["finite"]`` whether all
      parameters are finite.
    """
    assert batch_rows.shape == batch_mask.shape and batch_rows.ndim == 2, (batch_rows.shape, batch_mask.shape)
    if empty_batch_skip not in ("auto", "cond", "select"):
        raise ValueError(f"empty_batch_skip must be 'auto', 'cond' or 'select', got {empty_batch_skip!r}")
    x, y, sample_weight = jnp.asarray(x), jnp.asarray(y), jnp.asarray(sample_weight)

    def body(carry, inputs):
        rows, row_mask = inputs
        weight = jnp.where(row_mask, sample_weight[rows], 0).astype(x.dtype)
        batch = Batch(x=x[rows], y=y[rows], weight=weight)
        count = jnp.sum(row_mask)

        def step(carry):
            params, opt_state, metrics = train_step(*carry, batch, alpha, optimizer=optimizer, spec=spec)
            return (params, opt_state), metrics["loss"]

        def skip(carry):
            return carry, jnp.zeros((), x.dtype)

        def step_or_skip_cond(carry):
            return lax.cond(count > 0, step, skip, carry)

        def step_or_skip_select(carry):
            new_carry, loss = step(carry)
            keep = count > 0
            new_carry = jax.tree.map(lambda new, old: jnp.where(keep, new, old), new_carry, carry)
            return new_carry, jnp.where(keep, loss, jnp.zeros((), x.dtype))

        if empty_batch_skip == "auto":
            carry, batch_loss = lax.platform_dependent(carry, cpu=step_or_skip_cond, default=step_or_skip_select)
        else:
            carry, batch_loss = {"cond": step_or_skip_cond, "select": step_or_skip_select}[empty_batch_skip](carry)
        return carry, batch_loss

    (params, opt_state), batch_loss = lax.scan(body, (params, opt_state), (batch_rows, batch_mask), unroll=unroll)
    counts = jnp.sum(batch_mask, axis=1).astype(x.dtype)  # outside the loop: one kernel less per step on a GPU
    epoch_loss = jnp.sum(batch_loss * counts) / jnp.sum(counts)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(params)]))
    return params, opt_state, {"loss": epoch_loss, "batch_loss": batch_loss, "finite": finite}


def params_to_numpy(params: Params):
    """``(coefs_, intercepts_)`` lists of NumPy arrays from a parameter pytree."""
    coefs = [np.asarray(w) for w, _ in params]
    intercepts = [np.asarray(b) for _, b in params]
    return coefs, intercepts

