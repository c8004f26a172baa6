"""jaxrl.compilation_cache: the switch, the folder rules, and a real cache hit in a second process."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxrl import compilation_cache


@pytest.mark.parametrize("value", ["0", "false", "No", " off "])
def test_switched_off_by_the_environment_variable(value):
    assert not compilation_cache.is_enabled({"JAXRL_COMPILATION_CACHE": value})
    assert compilation_cache.enable(environ={"JAXRL_COMPILATION_CACHE": value}) is None


@pytest.mark.parametrize("environ", [{}, {"JAXRL_COMPILATION_CACHE": "1"}, {"JAXRL_COMPILATION_CACHE": ""}])
def test_on_by_default(environ):
    assert compilation_cache.is_enabled(environ)


def test_default_folder_is_under_the_home_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert compilation_cache.cache_dir({}) == tmp_path / ".cache" / "jaxrl" / "xla"
    assert compilation_cache.cache_dir({"XDG_CACHE_HOME": ""}) == tmp_path / ".cache" / "jaxrl" / "xla"


def test_xdg_cache_home_and_the_override_variable(tmp_path):
    xdg = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert compilation_cache.cache_dir(xdg) == tmp_path / "xdg" / "jaxrl" / "xla"
    override = {**xdg, "JAXRL_COMPILATION_CACHE_DIR": str(tmp_path / "mine")}
    assert compilation_cache.cache_dir(override) == tmp_path / "mine"


def test_negative_min_compile_time_is_refused():
    with pytest.raises(ValueError, match="min_compile_time_secs"):
        compilation_cache.enable(min_compile_time_secs=-1.0, environ={})


def _stub_command_line(monkeypatch, enable):
    """`jaxrl.cli` with one subcommand, `noop`, and `compilation_cache.enable` replaced; returns the call log."""
    from jaxrl import cli

    calls = []

    def build_parser():
        parser = argparse.ArgumentParser(prog="jaxrl")
        subparsers = parser.add_subparsers(dest="command", required=True)
        subparsers.add_parser("noop").set_defaults(func=lambda args: calls.append("run") or 0)
        return parser

    monkeypatch.setattr(cli, "build_parser", build_parser)
    monkeypatch.setattr(cli.compilation_cache, "enable", lambda: enable(calls))
    return cli, calls


def test_command_line_enables_the_cache_before_the_subcommand(monkeypatch):
    cli, calls = _stub_command_line(monkeypatch, lambda calls: calls.append("enable"))
    assert cli.main(["noop"]) == 0
    assert calls == ["enable", "run"]


def test_command_line_runs_without_the_cache_when_the_folder_cannot_be_made(monkeypatch, capsys):
    def enable(calls):
        raise PermissionError(13, "Permission denied", "/read-only/jaxrl/xla")

    cli, calls = _stub_command_line(monkeypatch, enable)
    assert cli.main(["noop"]) == 0
    assert calls == ["run"]
    assert "warning: persistent compilation cache off: [Errno 13] Permission denied" in capsys.readouterr().err


# One small jitted function, compiled with the cache on; prints the cache hits / misses JAX reports.
_SCRIPT = """
import json, jax, jax.numpy as jnp
from jaxrl import compilation_cache
counts = {"hits": 0, "misses": 0}
def listener(event, **kwargs):
    if event == "/jax/compilation_cache/cache_hits":
        counts["hits"] += 1
    elif event == "/jax/compilation_cache/cache_misses":
        counts["misses"] += 1
jax.monitoring.register_event_listener(listener)
folder = compilation_cache.enable(min_compile_time_secs=0.0)
value = jax.jit(lambda x: jnp.tanh(x @ x.T).sum() + 1.0)(jnp.arange(12.0).reshape(3, 4) / 10)
print(json.dumps({**counts, "folder": str(folder), "value": float(value)}))
"""


def _run_script(cache_folder: Path) -> dict:
    env = {**os.environ, "JAXRL_COMPILATION_CACHE": "1", "JAXRL_COMPILATION_CACHE_DIR": str(cache_folder),
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_what_the_first_compiled(tmp_path):
    folder = tmp_path / "xla"
    first = _run_script(folder)
    assert first["folder"] == str(folder)
    assert first["hits"] == 0 and first["misses"] >= 1
    written = sorted(p.name for p in folder.rglob("*") if p.is_file())
    assert written, "the first process wrote no cache entry"

    second = _run_script(folder)
    assert second["hits"] >= 1 and second["misses"] == 0
    assert second["value"] == first["value"]
    assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == written
