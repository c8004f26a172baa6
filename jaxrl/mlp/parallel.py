"""Data parallelism for the MLP core over several devices with ``jax.sharding``.

The pattern is plain data parallelism written as shardings, not as new
training code: a 1-D :class:`jax.sharding.Mesh` named ``"batch"`` over the local
devices; the training data and the parameters are *replicated* (placed once on
every device); the minibatch row indices ``batch_rows [n_batches, B]`` are split
over the mesh on their batch axis ``B``. Under ``jax.jit`` XLA's SPMD
partitioner then gathers each device's rows locally, runs the forward and
backward pass on its slice of the batch and all-reduces the gradient sums, so
:func:`jaxrl.mlp.core.train_epoch` itself is unchanged. Results equal one
device's up to the order of float additions.

``B`` must be a multiple of the device count: pad it with
``core.make_batches(..., batch_size_to=...)`` (padding rows are masked).

On CPU, several devices are simulated with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` set before JAX is imported.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxrl.mlp import core

__all__ = [
    "BATCH_AXIS",
    "RUNS_AXIS",
    "batch_mesh",
    "runs_mesh",
    "replicated",
    "leading_axis_sharding",
    "batch_sharding",
    "constrain_batch_axis",
    "padded_batch_width",
    "make_data_parallel_epoch",
]

BATCH_AXIS = "batch"
RUNS_AXIS = "runs"


def batch_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``"batch"`` over ``devices`` (default: all local devices)."""
    devices = jax.local_devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("batch_mesh needs at least one device.")
    return Mesh(np.array(devices), (BATCH_AXIS,))


def runs_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``"runs"``: independent models (a vmapped sweep) split over devices, no communication."""
    devices = jax.local_devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("runs_mesh needs at least one device.")
    return Mesh(np.array(devices), (RUNS_AXIS,))


def leading_axis_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding that splits an array's leading axis over the (1-D) mesh."""
    return NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that places a full copy on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, ndim: int, axis: int) -> NamedSharding:
    """Sharding that splits dimension ``axis`` of an ``ndim``-d array over the mesh."""
    spec = [None] * ndim
    spec[axis] = BATCH_AXIS
    return NamedSharding(mesh, PartitionSpec(*spec))


def constrain_batch_axis(array: jax.Array, mesh: Mesh, axis: int) -> jax.Array:
    """Inside ``jit``: ask XLA to split ``array``'s dimension ``axis`` over the mesh."""
    return jax.lax.with_sharding_constraint(array, batch_sharding(mesh, array.ndim, axis))


def padded_batch_width(batch_size: int, mesh: Mesh) -> int:
    """Smallest multiple of the mesh size that holds ``batch_size`` rows."""
    return -(-int(batch_size) // mesh.size) * mesh.size


def make_data_parallel_epoch(mesh: Mesh, *, optimizer, spec: core.MLPSpec = core.MLPSpec()):
    """``core.train_epoch`` jitted with data-parallel shardings over ``mesh``.

    Returns a function with ``core.train_epoch``'s positional signature
    ``(params, opt_state, x, y, sample_weight, batch_rows, batch_mask, alpha)``.
    It places ``x``, ``y``, ``sample_weight``, params and optimizer state
    replicated (a no-op when they already are: put the data once with
    ``jax.device_put(x, replicated(mesh))``) and ``batch_rows`` / ``batch_mask``
    ``[n_batches, B]`` split on ``B`` (``B % mesh.size == 0``).
    """
    rep = replicated(mesh)
    rows_sharding = batch_sharding(mesh, 2, 1)
    epoch = jax.jit(
        functools.partial(core.train_epoch, optimizer=optimizer, spec=spec),
        in_shardings=(rep, rep, rep, rep, rep, rows_sharding, rows_sharding, rep),
        out_shardings=rep,
    )

    def data_parallel_epoch(params, opt_state, x, y, sample_weight, batch_rows, batch_mask, alpha):
        if batch_rows.shape[1] % mesh.size:
            raise ValueError(
                f"the batch width {batch_rows.shape[1]} must be a multiple of the {mesh.size} devices; pad it with "
                "core.make_batches(..., batch_size_to=padded_batch_width(batch_size, mesh))."
            )
        return epoch(params, opt_state, x, y, sample_weight, batch_rows, batch_mask, alpha)

    return data_parallel_epoch
