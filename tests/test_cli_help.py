"""`jaxrl --help` and the subcommands' help are quick: building the parsers imports neither JAX nor
scikit-learn. Each check runs in a fresh interpreter (this test process has JAX loaded already)."""
import json
import subprocess
import sys

import pytest

HEAVY = ("jax", "jaxlib", "sklearn", "flax", "optax", "scipy")

# Run `code`, then print which heavy modules it loaded (as JSON on the last line).
_TEMPLATE = """
import contextlib, io, json, sys
help_text = io.StringIO()
with contextlib.redirect_stdout(help_text):
{code}
print(json.dumps({{"loaded": [m for m in {heavy!r} if m in sys.modules], "help": help_text.getvalue()}}))
"""


def _loaded_after(code: str) -> dict:
    body = "\n".join("    " + line for line in code.strip().splitlines())
    script = _TEMPLATE.format(code=body, heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_jaxrl_is_light_and_names_resolve_on_access():
    result = _loaded_after("import jaxrl, jaxrl.cli, jaxrl.mlp, jaxrl.compilation_cache")
    assert result["loaded"] == []
    import jaxrl
    from jaxrl import MLPClassifier, MLPRegressor, fit_grid  # resolved lazily (PEP 562)
    from jaxrl.mlp.estimators import MLPClassifier as defined

    assert MLPClassifier is defined and jaxrl.mlp.MLPClassifier is defined
    assert callable(fit_grid) and MLPRegressor.__name__ == "MLPRegressor"
    assert set(jaxrl.__all__) <= set(dir(jaxrl))
    with pytest.raises(AttributeError, match="no_such_name"):
        jaxrl.no_such_name


def test_mlp_help_builds_without_jax():
    result = _loaded_after(
        """
import argparse
from jaxrl.mlp import cli
parser = argparse.ArgumentParser(prog="jaxrl")
cli.add_parser(parser.add_subparsers(dest="command", required=True))
try:
    parser.parse_args(["mlp", "--help"])
except SystemExit as exit:
    assert exit.code == 0
"""
    )
    assert result["loaded"] == []
    assert "usage: jaxrl mlp" in result["help"] and "--hidden-layer-sizes" in result["help"]


@pytest.mark.parametrize("argv", [["--help"], ["mlp", "--help"], ["dqn", "--help"], ["dqn", "train", "--help"]])
def test_command_line_help_does_not_import_jax(argv):
    result = _loaded_after(
        f"""
from jaxrl.cli import main
try:
    main({argv!r})
except SystemExit as exit:
    assert exit.code == 0
"""
    )
    assert "usage: jaxrl" in result["help"]
    assert result["loaded"] == []
