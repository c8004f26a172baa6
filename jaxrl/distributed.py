"""Join a multi-process JAX run (``jax.distributed``) when the environment configures one; a no-op otherwise.

JAX's multi-controller model: every process runs the same program, sees the devices of all processes
(``jax.devices()``; its own are ``jax.local_devices()``), and arrays sharded over a global
``jax.sharding.Mesh`` are computed by all processes together, with XLA's collectives between them (NCCL on
GPUs, gloo over TCP on CPUs). :func:`initialize` must run before anything starts a JAX backend (no
computation, ``jax.devices()`` or ``device_put`` first).

Environment variables (``jaxrl launch`` sets them for each local process it starts):

=============================  ======================================================================
``JAXRL_COORDINATOR``          ``host:port`` of process 0's coordinator service (the same on all processes)
``JAXRL_NUM_PROCESSES``        number of processes N (>= 1)
``JAXRL_PROCESS_ID``           this process's id, ``0 .. N - 1``
``JAXRL_DEVICES_PER_PROCESS``  optional K: on CPU, each process gets K CPU devices (``jax_num_cpu_devices``)
``JAXRL_LOCAL_DEVICE_IDS``     optional ``2,3``: the accelerators of this machine this process uses
                               (``local_device_ids``; ``jaxrl launch --devices-per-process K`` gives
                               process i the ids ``i*K .. i*K + K - 1``)
``JAXRL_DISTRIBUTED``          ``auto``: let ``jax.distributed.initialize()`` detect the cluster (SLURM,
                               Open MPI, Cloud TPU pods); the three variables above may still override
                               what it detects
=============================  ======================================================================

With none of ``JAXRL_COORDINATOR``, ``JAXRL_NUM_PROCESSES``, ``JAXRL_PROCESS_ID`` set and no
``JAXRL_DISTRIBUTED=auto``, :func:`initialize` does nothing and JAX runs as one process.
"""

from __future__ import annotations

import os
from typing import Mapping, NamedTuple

__all__ = [
    "COORDINATOR",
    "DEVICES_PER_PROCESS",
    "DISTRIBUTED",
    "LOCAL_DEVICE_IDS",
    "NUM_PROCESSES",
    "PROCESS_ID",
    "DistributedConfig",
    "config_from_env",
    "initialize",
]

COORDINATOR = "JAXRL_COORDINATOR"
NUM_PROCESSES = "JAXRL_NUM_PROCESSES"
PROCESS_ID = "JAXRL_PROCESS_ID"
DEVICES_PER_PROCESS = "JAXRL_DEVICES_PER_PROCESS"
LOCAL_DEVICE_IDS = "JAXRL_LOCAL_DEVICE_IDS"
DISTRIBUTED = "JAXRL_DISTRIBUTED"

# Finite defaults: a process that cannot reach the coordinator, or a peer that stops answering, ends the run
# with an error instead of hanging it.
INITIALIZATION_TIMEOUT_SECONDS = 300  # waiting for every process to join
HEARTBEAT_TIMEOUT_SECONDS = 60  # a process silent this long is declared dead and the others stop
SHUTDOWN_TIMEOUT_SECONDS = 60  # a finishing process waits this long for the others at exit


class DistributedConfig(NamedTuple):
    """A multi-process run as read from the environment (None fields: left to JAX's cluster detection)."""

    coordinator_address: str | None  # "host:port" of process 0's coordinator
    num_processes: int | None  # N >= 1
    process_id: int | None  # 0 .. N - 1
    devices_per_process: int | None  # CPU devices per process (CPU backend only)
    local_device_ids: tuple[int, ...] | None  # this machine's accelerators that this process uses
    auto: bool  # JAXRL_DISTRIBUTED=auto: jax.distributed detects what is unset


def _int_variable(environ: Mapping[str, str], name: str, minimum: int) -> int | None:
    text = environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {text!r}.") from None
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}.")
    return value


def _coordinator(environ: Mapping[str, str]) -> str | None:
    text = environ.get(COORDINATOR, "").strip()
    if not text:
        return None
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{COORDINATOR} must be host:port with a port in 1..65535, e.g. 10.0.0.1:1234, got {text!r}.")
    return text


def _device_ids(environ: Mapping[str, str]) -> tuple[int, ...] | None:
    text = environ.get(LOCAL_DEVICE_IDS, "").strip()
    if not text:
        return None
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in parts) or len(set(map(int, parts))) != len(parts):
        raise ValueError(f"{LOCAL_DEVICE_IDS} must be distinct device numbers separated by commas, e.g. 0,1, "
                         f"got {text!r}.")
    return tuple(int(part) for part in parts)


def config_from_env(environ: Mapping[str, str] | None = None) -> DistributedConfig | None:
    """Read and validate the ``JAXRL_*`` variables (see the module docstring); imports no JAX.

    Args:
      environ: the environment to read (default ``os.environ``); empty values count as unset.

    Returns:
      the run's :class:`DistributedConfig`, or None when no multi-process run is configured.

    Raises:
      ValueError: a malformed value, ``JAXRL_PROCESS_ID >= JAXRL_NUM_PROCESSES``, only some of the three
        required variables (without ``JAXRL_DISTRIBUTED=auto``), or device variables without a run; the
        message names the variable.
    """
    environ = os.environ if environ is None else environ
    mode = environ.get(DISTRIBUTED, "").strip().lower()
    if mode not in ("", "auto", "0", "off"):
        raise ValueError(f"{DISTRIBUTED} must be 'auto' (detect SLURM / Open MPI / TPU pods) or unset, "
                         f"got {environ[DISTRIBUTED]!r}.")
    auto = mode == "auto"
    coordinator = _coordinator(environ)
    num_processes = _int_variable(environ, NUM_PROCESSES, 1)
    process_id = _int_variable(environ, PROCESS_ID, 0)
    devices_per_process = _int_variable(environ, DEVICES_PER_PROCESS, 1)
    local_device_ids = _device_ids(environ)
    if num_processes is not None and process_id is not None and process_id >= num_processes:
        raise ValueError(f"{PROCESS_ID} must be in 0..{num_processes - 1} ({NUM_PROCESSES}={num_processes}), "
                         f"got {process_id}.")
    required = {COORDINATOR: coordinator, NUM_PROCESSES: num_processes, PROCESS_ID: process_id}
    given = [name for name, value in required.items() if value is not None]
    if not auto and not given:
        extra = [name for name in (DEVICES_PER_PROCESS, LOCAL_DEVICE_IDS) if environ.get(name, "").strip()]
        if extra:
            raise ValueError(f"{extra[0]} is set but no multi-process run is configured: set {COORDINATOR}, "
                             f"{NUM_PROCESSES} and {PROCESS_ID}, or {DISTRIBUTED}=auto.")
        return None
    if not auto and len(given) < len(required):
        missing = [name for name, value in required.items() if value is None]
        raise ValueError(f"{', '.join(missing)} must be set too: a multi-process run needs {COORDINATOR}, "
                         f"{NUM_PROCESSES} and {PROCESS_ID} (or {DISTRIBUTED}=auto on SLURM / Open MPI / TPU pods).")
    return DistributedConfig(coordinator, num_processes, process_id, devices_per_process, local_device_ids, auto)


def initialize(
    environ: Mapping[str, str] | None = None,
    *,
    initialization_timeout: int = INITIALIZATION_TIMEOUT_SECONDS,
    heartbeat_timeout_seconds: int = HEARTBEAT_TIMEOUT_SECONDS,
    shutdown_timeout_seconds: int = SHUTDOWN_TIMEOUT_SECONDS,
) -> DistributedConfig | None:
    """Join the multi-process run the environment configures (``jax.distributed.initialize``), else do nothing.

    Call it first thing, before any JAX computation. On CPU it also selects gloo for collectives between
    processes (``jax_cpu_collectives_implementation``) and, with ``JAXRL_DEVICES_PER_PROCESS=K``, gives the
    process K CPU devices (``jax_num_cpu_devices``). A second call in the same process changes nothing.

    Args:
      environ: the environment to read (default ``os.environ``).
      initialization_timeout: seconds to wait for all processes to join before failing.
      heartbeat_timeout_seconds: seconds without a heartbeat after which a process counts as dead (the
        others then stop with an error instead of waiting forever in a collective).
      shutdown_timeout_seconds: seconds a finished process waits for the others at exit.

    Returns:
      the :class:`DistributedConfig` joined, or None (single process; JAX untouched, not even imported).

    Raises:
      ValueError: bad variables (see :func:`config_from_env`) or non-positive timeouts.
      RuntimeError: from JAX, when a backend was started before this call.
    """
    config = config_from_env(environ)
    if config is None:
        return None
    for name, value in (("initialization_timeout", initialization_timeout),
                        ("heartbeat_timeout_seconds", heartbeat_timeout_seconds),
                        ("shutdown_timeout_seconds", shutdown_timeout_seconds)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}.")

    import jax  # here: reading the configuration must not import JAX

    if jax.distributed.is_initialized():
        return config
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if config.devices_per_process is not None:
        jax.config.update("jax_num_cpu_devices", config.devices_per_process)
    jax.distributed.initialize(
        coordinator_address=config.coordinator_address,
        num_processes=config.num_processes,
        process_id=config.process_id,
        local_device_ids=list(config.local_device_ids) if config.local_device_ids is not None else None,
        # explicit variables: no cluster detection (it could override them from a surrounding SLURM job)
        cluster_detection_method=None if config.auto else "deactivate",
        initialization_timeout=initialization_timeout,
        heartbeat_timeout_seconds=heartbeat_timeout_seconds,
        shutdown_timeout_seconds=shutdown_timeout_seconds,
    )
    return config
