"""The module import graph of jaxrl, read from the source: no cycles, and the DQN core never imports a shell.

Every ``import`` statement counts, those inside functions too, so a function-local import cannot hide a cycle.
``from package import name`` is an edge to ``package.name`` when that is a module, else to ``package``.
"""
import ast
from pathlib import Path

import jaxrl

ROOT = Path(jaxrl.__file__).parent
# The DQN shells: the command line, the run and its files, the env backends (host envs, envpool's XLA step).
DQN_SHELLS = ("jaxrl.dqn.run", "jaxrl.dqn.envs.host", "jaxrl.dqn.envs.xla")
# The pure core and the config: functions of explicit state, no I/O.
DQN_CORE = ("jaxrl.dqn.agent", "jaxrl.dqn.buffers", "jaxrl.dqn.config", "jaxrl.dqn.encoders", "jaxrl.dqn.envs.atari",
            "jaxrl.dqn.envs.frame_stack", "jaxrl.dqn.envs.toy", "jaxrl.dqn.games", "jaxrl.dqn.learner", "jaxrl.dqn.learner_base",
            "jaxrl.dqn.losses", "jaxrl.dqn.network", "jaxrl.dqn.on_policy", "jaxrl.dqn.ppo", "jaxrl.dqn.pqn")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the jaxrl modules it imports (anywhere in its source)."""
    modules = {_module_name(path): path for path in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    edges.add(child if child in modules else node.module)
        graph[name] = {edge for edge in edges if edge in modules and edge != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search)."""
    state = {}  # module -> "open" while on the current path, "done" after
    path = []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def _reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def _under(module, prefixes):
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_jaxrl_has_no_import_cycle():
    graph = import_graph()
    assert {"jaxrl.dqn.agent", "jaxrl.dqn.buffers.prioritized", "jaxrl.dqn.run.train"} <= set(graph)
    assert "jaxrl.dqn.run.train" in graph["jaxrl.dqn.run.cli"]  # function-local imports are edges too
    assert find_cycle(graph) is None


def test_dqn_core_imports_no_shell():
    graph = import_graph()
    core = [module for module in graph if _under(module, DQN_CORE)]
    assert len(core) >= 17, core
    for module in core:
        shells = sorted(target for target in _reachable(graph, module) if _under(target, DQN_SHELLS))
        assert not shells, f"{module} imports the shells {shells}"
