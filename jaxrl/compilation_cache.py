"""A persistent XLA compilation cache, on by default for the `jaxrl` command line.

JAX compiles every jitted function once per process; our fits and training loops spend 0.3-2 s in each
compile. With JAX's persistent compilation cache the compiled executables are written to disk and a later
process with the same shapes, configuration, JAX version and device loads them instead of compiling again.

Where: ``$JAXRL_COMPILATION_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/jaxrl/xla``, else
``~/.cache/jaxrl/xla``. ``JAXRL_COMPILATION_CACHE=0`` (or ``false`` / ``no`` / ``off``) turns it off.

Only the command line (`jaxrl.cli.main`) calls :func:`enable`; importing `jaxrl` changes no JAX setting, so
library users and tests opt in by calling ``jaxrl.compilation_cache.enable()`` themselves, before their
first compilation (JAX reads the cache settings when it first compiles).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

__all__ = ["DEFAULT_MIN_COMPILE_TIME_SECS", "cache_dir", "enable", "is_enabled"]

ENABLE_VARIABLE = "JAXRL_COMPILATION_CACHE"
DIR_VARIABLE = "JAXRL_COMPILATION_CACHE_DIR"
_OFF_VALUES = ("0", "false", "no", "off")
# JAX's default (1 s) would skip most of our compilations; 0.1 s still skips the many tiny eager-op kernels.
DEFAULT_MIN_COMPILE_TIME_SECS = 0.1


def is_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the cache is wanted: False when ``JAXRL_COMPILATION_CACHE`` is 0 / false / no / off.

    Args:
      environ: the environment to read (default ``os.environ``).
    """
    environ = os.environ if environ is None else environ
    return environ.get(ENABLE_VARIABLE, "1").strip().lower() not in _OFF_VALUES


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The cache folder: ``$JAXRL_COMPILATION_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxrl/xla``, else ``~/.cache/...``.

    Args:
      environ: the environment to read (default ``os.environ``). Empty values count as unset.

    Returns:
      an absolute path (``~`` expanded); the folder is not created.
    """
    environ = os.environ if environ is None else environ
    override = environ.get(DIR_VARIABLE)
    if override:
        return Path(override).expanduser().absolute()
    xdg_cache_home = environ.get("XDG_CACHE_HOME")
    base = Path(xdg_cache_home).expanduser() if xdg_cache_home else Path.home() / ".cache"
    return (base / "jaxrl" / "xla").absolute()


def enable(
    path: str | os.PathLike | None = None,
    *,
    min_compile_time_secs: float = DEFAULT_MIN_COMPILE_TIME_SECS,
    environ: Mapping[str, str] | None = None,
) -> Path | None:
    """Turn on JAX's persistent compilation cache (unless ``JAXRL_COMPILATION_CACHE=0``).

    Sets ``jax_compilation_cache_dir``, ``jax_persistent_cache_min_compile_time_secs`` and
    ``jax_persistent_cache_min_entry_size_bytes`` (-1: entries of any size are kept). Call it before the
    first compilation of the process.

    Args:
      path: the cache folder (default :func:`cache_dir`); created if missing.
      min_compile_time_secs: compilations faster than this are not written (>= 0).
      environ: the environment to read (default ``os.environ``).

    Returns:
      the cache folder, or None when the cache is switched off.
    """
    if min_compile_time_secs < 0:
        raise ValueError(f"min_compile_time_secs must be >= 0, got {min_compile_time_secs}")
    if not is_enabled(environ):
        return None
    folder = Path(path).expanduser().absolute() if path is not None else cache_dir(environ)
    folder.mkdir(parents=True, exist_ok=True)

    import jax  # here, not at module level: `jaxrl --help` must not import JAX

    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return folder
