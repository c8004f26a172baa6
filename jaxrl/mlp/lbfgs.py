"""Full-batch L-BFGS for the MLP, in JAX (scikit-learn's ``solver="lbfgs"``).

scikit-learn minimizes the full-batch loss with SciPy's L-BFGS-B
(``maxiter=max_iter``, ``maxfun=max_fun``, ``gtol=tol``). Here the same objective
is minimized by ``optax.lbfgs`` (memory 10, as SciPy) with its zoom line search
(strong Wolfe conditions), the whole run inside one jitted ``lax.while_loop``.
Stopping rules follow SciPy's: projected-gradient max-norm ``<= tol``, relative
reduction ``(f_k - f_k+1) / max(|f_k|, |f_k+1|, 1) <= ftol`` (SciPy's default
``2.22e-9``), at most ``max_iter`` iterations, and the ``max_fun`` budget of
function evaluations. As in SciPy, the limits are checked at each new iterate,
before the convergence tests: the run stops at the first iterate where
``n_iter >= max_iter`` or ``n_fun > max_fun`` (so ``n_iter <= max_fun``; the last
line search may take ``n_fun`` past ``max_fun``, by at most its 20 steps), and a
stop there counts as not converged even if the tolerances hold.
The iterates are not SciPy's (different line search), so only the reached loss is
comparable, not the parameters.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
import optax.tree_utils as otu
from jax import lax

from jaxrl.mlp.core import Batch, MLPSpec, Params, loss, objective

__all__ = ["LBFGSResult", "lbfgs_fit"]

SCIPY_FTOL = 2.2204460492503131e-09  # scipy.optimize L-BFGS-B default ftol (factr=1e7)


class LBFGSResult(NamedTuple):
    """Outcome of :func:`lbfgs_fit`."""

    params: Params  # tuple of (W, b), the minimizer
    loss: jax.Array  # () sklearn's reported loss at ``params``
    n_iter: jax.Array  # () int32, L-BFGS iterations done
    n_fun: jax.Array  # () int32, objective evaluations done
    grad_max: jax.Array  # () max |gradient| at ``params``
    converged: jax.Array  # () bool, stopped by ``tol`` or ``ftol``, not by ``max_iter`` / ``max_fun``


class _Carry(NamedTuple):
    """The while-loop state of `lbfgs_fit`."""

    params: Params
    state: optax.OptState  # optax L-BFGS state (holds f and its gradient at params)
    value: jax.Array  # () objective at params
    grad_max: jax.Array  # () max |gradient|
    rel_decrease: jax.Array  # () SciPy's relative decrease of the last iteration
    n_iter: jax.Array  # () int32 iterations
    n_fun: jax.Array  # () int32 objective evaluations


def _grad_max(grad) -> jax.Array:
    return jnp.max(jnp.stack([jnp.max(jnp.abs(g)) for g in jax.tree.leaves(grad)]))


def _lbfgs_iteration(c: _Carry, *, fun, optimizer) -> _Carry:
    """One L-BFGS iteration (zoom line search) with SciPy's bookkeeping of evaluations and decrease."""
    value, grad = optax.value_and_grad_from_state(fun)(c.params, state=c.state)
    updates, state = optimizer.update(grad, c.state, c.params, value=value, grad=grad, value_fn=fun)
    new_value = otu.tree_get(state, "value")
    steps = otu.tree_get(state, "num_linesearch_steps")
    rel = (value - new_value) / jnp.maximum(jnp.maximum(jnp.abs(value), jnp.abs(new_value)), 1.0)
    return _Carry(params=optax.apply_updates(c.params, updates), state=state, value=new_value,
                  grad_max=_grad_max(otu.tree_get(state, "grad")), rel_decrease=rel, n_iter=c.n_iter + 1,
                  n_fun=c.n_fun + jnp.maximum(steps, 1).astype(jnp.int32))


@functools.partial(jax.jit, static_argnames=("spec",))
def lbfgs_fit(
    params: Params,
    batch: Batch,
    alpha,
    tol,
    max_iter,
    max_fun,
    *,
    spec: MLPSpec,
) -> LBFGSResult:
    """Minimize the full-batch MLP objective with L-BFGS.

    Args:
      params: initial tuple of ``(W, b)``.
      batch: the whole training set, ``x [n, d]``, ``y [n, k]``, ``weight [n]``.
      alpha: L2 strength.
      tol: gradient tolerance (sklearn's ``tol`` = SciPy's ``gtol``).
      spec: activations and loss.
      max_iter: iteration limit (traced: no recompilation per value).
      max_fun: objective-evaluation budget (traced); no new iteration starts once
        ``n_fun > max_fun`` (SciPy's L-BFGS-B rule).

    Returns:
      :class:`LBFGSResult`.
    """

    def fun(p):
        return objective(p, batch, alpha, spec)[0]

    optimizer = optax.lbfgs(
        memory_size=10,
        linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one"),
    )

    def limit_reached(c: _Carry):
        return (c.n_iter >= max_iter) | (c.n_fun > max_fun)

    def cond(c: _Carry):
        return ~limit_reached(c) & (c.grad_max > tol) & (c.rel_decrease > SCIPY_FTOL) & jnp.isfinite(c.value)

    value0, grad0 = jax.value_and_grad(fun)(params)
    # The state holds f and its gradient at ``params``, so the first iteration does not evaluate them again.
    init = _Carry(params=params, state=otu.tree_set(optimizer.init(params), value=value0, grad=grad0), value=value0,
                  grad_max=_grad_max(grad0), rel_decrease=jnp.asarray(jnp.inf, value0.dtype),
                  n_iter=jnp.asarray(0, jnp.int32), n_fun=jnp.asarray(1, jnp.int32))
    final = lax.while_loop(cond, functools.partial(_lbfgs_iteration, fun=fun, optimizer=optimizer), init)
    converged = ~limit_reached(final) & ((final.grad_max <= tol) | (final.rel_decrease <= SCIPY_FTOL))
    return LBFGSResult(params=final.params, loss=loss(final.params, batch, alpha, spec), n_iter=final.n_iter,
                       n_fun=final.n_fun, grad_max=final.grad_max, converged=converged)
