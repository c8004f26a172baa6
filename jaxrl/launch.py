"""``jaxrl launch``: run N local processes of one command as a multi-process JAX run.

    jaxrl launch --num-processes 2 --devices-per-process 2 -- python my_sweep.py
    jaxrl launch -n 4 --devices-per-process 2 --timeout 3600 -- python -m my_package.train

Each process gets the ``JAXRL_*`` variables that :func:`jaxrl.distributed.initialize` reads (the coordinator
on a free local port, the process count, its id, and with ``--devices-per-process K`` its K devices), so the
command only has to call ``jaxrl.distributed.initialize()`` before using JAX. Output lines are prefixed with
``[i] ``. When a process fails (non-zero exit code or killed by a signal) the others are stopped at once and
the launcher exits non-zero naming it; ``--timeout`` stops everything still running after that many seconds.

The launcher itself imports no JAX.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Mapping, NamedTuple, Sequence

from jaxrl.argtypes import positive_int

__all__ = ["EXIT_TIMEOUT", "Failure", "add_parser", "free_port", "process_environ", "run", "run_processes"]

EXIT_TIMEOUT = 124  # as coreutils' timeout
_POLL_SECONDS = 0.05
_GRACE_SECONDS = 5.0  # SIGTERM, then SIGKILL after this long


class Failure(NamedTuple):
    """Why a launch stopped early."""

    process_id: int | None  # the process that died (None for the watchdog timeout)
    message: str  # one line for stderr
    exit_code: int  # the launcher's exit code


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host`` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def process_environ(base: Mapping[str, str], *, coordinator: str, num_processes: int, process_id: int,
                    devices_per_process: int | None) -> dict[str, str]:
    """The environment of process ``process_id``: ``base`` plus the ``JAXRL_*`` run variables.

    With ``devices_per_process = K`` the process gets K CPU devices and this machine's accelerators
    ``process_id * K .. process_id * K + K - 1``.
    """
    from jaxrl import distributed

    environ = dict(base)
    environ.pop(distributed.DISTRIBUTED, None)  # explicit variables, no cluster detection
    environ.update({
        distributed.COORDINATOR: coordinator,
        distributed.NUM_PROCESSES: str(num_processes),
        distributed.PROCESS_ID: str(process_id),
        "PYTHONUNBUFFERED": "1",  # lines arrive as they are printed
    })
    for name in (distributed.DEVICES_PER_PROCESS, distributed.LOCAL_DEVICE_IDS):
        environ.pop(name, None)
    if devices_per_process is not None:
        first = process_id * devices_per_process
        environ[distributed.DEVICES_PER_PROCESS] = str(devices_per_process)
        environ[distributed.LOCAL_DEVICE_IDS] = ",".join(str(first + k) for k in range(devices_per_process))
    return environ


def _describe_exit(returncode: int) -> tuple[str, int]:
    """``("exited with code 3", 3)`` or ``("was killed by signal SIGKILL (9)", 137)``."""
    if returncode >= 0:
        return f"exited with code {returncode}", returncode
    number = -returncode
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    return f"was killed by signal {name} ({number})", 128 + number


def _pump(process_id: int, stream: IO[bytes], out: IO[str], lock: threading.Lock) -> None:
    """Copy ``stream`` to ``out`` line by line, each line prefixed with ``[process_id] ``."""
    prefix = f"[{process_id}] "
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip("\r\n")
        with lock:
            out.write(prefix + line + "\n")
            out.flush()
    stream.close()


def _wait(process_id: int, process: subprocess.Popen, exits: queue.Queue) -> None:
    """Report ``(process_id, returncode)`` on ``exits`` as soon as the process ends (in the order they end)."""
    exits.put((process_id, process.wait()))


def _stop(processes: Sequence[subprocess.Popen]) -> None:
    """SIGTERM every process group we started, SIGKILL the processes left after the grace period.

    Each process leads its own session (``start_new_session``), so what it started goes too. The group of a
    process that already ended is signalled as well: Linux keeps its id while a member is alive.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for process in processes:
            try:
                os.killpg(process.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + (_GRACE_SECONDS if sig == signal.SIGTERM else 30.0)
        while time.monotonic() < deadline and any(p.returncode is None for p in processes):
            time.sleep(_POLL_SECONDS)
        if all(p.returncode is not None for p in processes):
            return


def run_processes(command: Sequence[str], num_processes: int, *, devices_per_process: int | None = None,
                  timeout: float | None = None, out: IO[str] | None = None, err: IO[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> int:
    """Start ``num_processes`` copies of ``command`` as one multi-process run and wait for them.

    Args:
      command: the program and its arguments, e.g. ``["python", "sweep.py"]``.
      num_processes: N >= 1.
      devices_per_process: K devices per process (see :func:`process_environ`), or None.
      timeout: seconds after which every process still running is stopped, or None.
      out, err: where prefixed output lines and the launcher's messages go (default stdout / stderr).
      environ: the base environment (default ``os.environ``).

    Returns:
      0 when every process exits with 0; else the code of the first process to fail (128 + N for signal N;
      the others are stopped then) or :data:`EXIT_TIMEOUT` (124). The reason goes to ``err`` in one line.
    """
    if not command:
        raise ValueError("jaxrl launch needs a command after '--', e.g. -- python sweep.py")
    if num_processes < 1:
        raise ValueError(f"--num-processes must be >= 1, got {num_processes}.")
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    base = os.environ if environ is None else environ
    coordinator = f"127.0.0.1:{free_port()}"
    lock = threading.Lock()
    exits: queue.Queue = queue.Queue()
    processes: list[subprocess.Popen] = []
    pumps: list[threading.Thread] = []
    deadline = None if timeout is None else time.monotonic() + timeout
    failure: Failure | None = None

    def report(message: str) -> None:
        with lock:
            err.write(message + "\n")
            err.flush()

    try:
        for process_id in range(num_processes):
            env = process_environ(base, coordinator=coordinator, num_processes=num_processes,
                                  process_id=process_id, devices_per_process=devices_per_process)
            process = subprocess.Popen(list(command), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
            processes.append(process)
            pump = threading.Thread(target=_pump, args=(process_id, process.stdout, out, lock), daemon=True)
            pump.start()
            pumps.append(pump)
            threading.Thread(target=_wait, args=(process_id, process, exits), daemon=True).start()
        n_finished = 0
        while n_finished < num_processes and failure is None:
            wait = 0.5 if deadline is None else min(0.5, max(0.0, deadline - time.monotonic()))
            try:
                process_id, code = exits.get(timeout=wait)
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    still = [i for i, p in enumerate(processes) if p.returncode is None]
                    failure = Failure(None, f"jaxrl launch: timeout after {timeout:g} s; stopping process"
                                            f"{'es' if len(still) > 1 else ''} {', '.join(map(str, still))} "
                                            "(still running).", EXIT_TIMEOUT)
                    report(failure.message)
                continue
            if code == 0:
                n_finished += 1
                continue
            what, exit_code = _describe_exit(code)
            failure = Failure(process_id, f"jaxrl launch: process {process_id} {what}; stopping the others.",
                              exit_code)
            pumps[process_id].join(timeout=1.0)  # its last lines first
            report(failure.message)
    except KeyboardInterrupt:
        failure = Failure(None, "jaxrl launch: interrupted; stopping all processes.", 130)
        report(failure.message)
    finally:
        _stop(processes)
        for pump in pumps:
            pump.join(timeout=5.0)
    return 0 if failure is None else failure.exit_code


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """The ``jaxrl launch`` subcommand: :func:`run_processes` with the parsed flags (SIGTERM stops all)."""
    command = list(args.launch_command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print("jaxrl launch: give the command to run after '--', e.g. jaxrl launch -n 2 -- python sweep.py",
              file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        return run_processes(command, args.num_processes, devices_per_process=args.devices_per_process,
                             timeout=args.timeout)
    finally:
        signal.signal(signal.SIGTERM, previous)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``jaxrl launch`` on the ``jaxrl`` command's subparsers."""
    parser = subparsers.add_parser(
        "launch",
        help="run N local processes of a command as one multi-process JAX run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-n", "--num-processes", type=positive_int, required=True, help="processes to start")
    parser.add_argument("--devices-per-process", type=positive_int, default=None, metavar="K",
                        help="CPU: K CPU devices per process; GPU: process i uses GPUs i*K .. i*K+K-1")
    parser.add_argument("--timeout", type=_positive_seconds, default=None, metavar="S",
                        help="stop every process still running after S seconds (exit code 124)")
    parser.add_argument("launch_command", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                        help="the program to run in every process, after '--'")
    parser.set_defaults(func=run, compilation_cache=False)
    return parser
