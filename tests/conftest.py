"""Settings for the whole test session.

The persistent XLA compilation cache stays off unless asked for: tests that call `jaxrl.cli.main` in-process
or run the `jaxrl` command in a subprocess (which inherits this environment) then change no JAX setting and
write nothing under ~/.cache. tests/test_compilation_cache.py turns it on explicitly, into tmp folders.
Run the suite with JAXRL_COMPILATION_CACHE=1 to use the cache anyway.
"""
import os

os.environ.setdefault("JAXRL_COMPILATION_CACHE", "0")
