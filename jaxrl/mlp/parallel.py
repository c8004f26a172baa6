"""Data parallelism for the MLP core over several devices with ``jax.sharding``.

The pattern is plain data parallelism written as shardings, not as new
training code: a 1-D :class:`jax.sharding.Mesh` named ``"batch"`` over the
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

Several processes (``jaxrl.distributed.initialize()``, ``jaxrl launch``): the meshes span every device of
every process (``jax.devices()``). :func:`put` places a host array that every process holds in full (each
process copies only its own devices' slices), :func:`to_host` brings a sharded result back whole to every
process (one all-gather), and :func:`local_replica` is one process-local copy of a
replicated array. With one process they are ``jax.device_put``, ``np.asarray`` and the array itself.
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
    "put",
    "to_host",
    "local_replica",
]

BATCH_AXIS = "batch"
RUNS_AXIS = "runs"


def batch_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``"batch"`` over ``devices`` (default: all devices, of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("batch_mesh needs at least one device.")
    return Mesh(np.array(devices), (BATCH_AXIS,))


def runs_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``"runs"``: independent models (a vmapped sweep) split over devices, no communication.

    Default devices: all devices, of every process.
    """
    devices = jax.devices() if devices is None else list(devices)
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


def put(array, sharding: NamedSharding) -> jax.Array:
    """Place a host array with ``sharding``; with several processes every process must pass the same value.

    Each process copies only the slices its own devices hold (``jax.make_array_from_callback``), without
    comparing the processes' values first (``jax.device_put`` would, at the cost of a collective per call).

    Args:
      array: a NumPy array (or array-like), the same on every process.
      sharding: where it goes; may span devices of other processes.

    Returns:
      a ``jax.Array`` of ``array``'s shape and dtype.
    """
    if sharding.is_fully_addressable:
        return jax.device_put(array, sharding)
    array = np.asarray(array)
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def to_host(tree):
    """The whole value of every array in ``tree`` as NumPy, on every process.

    Arrays sharded over devices of several processes are all-gathered together, in one compiled call
    (cached by shapes and mesh); process-local or replicated arrays are read directly.

    Args:
      tree: a pytree of ``jax.Array`` (possibly sharded over several processes' devices) or host arrays.

    Returns:
      the same pytree of ``np.ndarray`` with the global shapes. With several processes, all of them must call
      this together (it is a collective when some array spans other processes).
    """
    leaves, treedef = jax.tree.flatten(tree)
    spread = [i for i, leaf in enumerate(leaves)
              if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable and not leaf.is_fully_replicated]
    if spread:
        sharding = leaves[spread[0]].sharding
        if isinstance(sharding, NamedSharding) and all(leaves[i].sharding.mesh == sharding.mesh for i in spread):
            gathered = _replicate_on(replicated(sharding.mesh))([leaves[i] for i in spread])
        else:  # other shardings: JAX's own gather, one array at a time
            from jax.experimental import multihost_utils

            gathered = [multihost_utils.process_allgather(leaves[i], tiled=True) for i in spread]
        for i, value in zip(spread, gathered):
            leaves[i] = value
    return jax.tree.unflatten(treedef, [np.asarray(leaf) for leaf in leaves])


@functools.lru_cache(maxsize=None)
def _replicate_on(sharding: NamedSharding):
    """A jitted identity whose outputs are ``sharding`` (replicated): XLA all-gathers the inputs."""
    return jax.jit(lambda arrays: arrays, out_shardings=sharding)


def local_replica(array: jax.Array) -> jax.Array:
    """This process's copy of a replicated ``array`` on one local device (the array itself when it is local).

    Lets a process compute on a replicated input alone, e.g. score fitted models without the other processes.
    """
    if array.is_fully_addressable:
        return array
    if not array.is_fully_replicated:
        raise ValueError("local_replica needs a replicated array; use to_host for a sharded one.")
    return array.addressable_data(0)


def make_data_parallel_epoch(mesh: Mesh, *, optimizer, spec: core.MLPSpec = core.MLPSpec()):
    """``core.train_epoch`` jitted with data-parallel shardings over ``mesh``.

    Returns a function with ``core.train_epoch``'s positional signature
    ``(params, opt_state, x, y, sample_weight, batch_rows, batch_mask, alpha)``.
    It places ``x``, ``y``, ``sample_weight``, params and optimizer state
    replicated (a no-op when they already are: put the data once with
    ``jax.device_put(x, replicated(mesh))``) and ``batch_rows`` / ``batch_mask``
    ``[n_batches, B]`` split on ``B`` (``B % mesh.size == 0``).

    Over a mesh spanning several processes, every process calls it with the same arguments (host arrays
    are placed with :func:`put`); the results are replicated, readable on every process.
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
        if not rows_sharding.is_fully_addressable:  # several processes: jit takes host arrays replicated only
            batch_rows, batch_mask = (a if isinstance(a, jax.Array) else put(a, rows_sharding)
                                      for a in (batch_rows, batch_mask))
        return epoch(params, opt_state, x, y, sample_weight, batch_rows, batch_mask, alpha)

    return data_parallel_epoch
