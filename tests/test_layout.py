"""The code base's shape, read from the source (imports inside functions and under TYPE_CHECKING included):

- no import circles between modules of trainer/ or search/, subpackages included;
- search/'s role packages import only the floors below them: ``store`` and ``spec`` (side by side, neither
  importing the other) over the base modules, then ``strategy``, ``results``, ``execution``,
  then ``api``, ``cli`` over it; no group imports a group above it;
- every use of Optuna's private attributes is in search/_optuna.py;
- the trainer never imports Optuna or the service.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = {"attrs", "errors", "registries", "_optuna", "_lazy"}
FLOORS = {"": 0, "store": 1, "spec": 1, "strategy": 2, "results": 3, "execution": 4, "api": 5, "cli": 6, "search": 7}


def _modules(pkg: str) -> dict[str, Path]:
    out = {}
    for p in (ROOT / pkg).rglob("*.py"):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _graph(pkg: str) -> dict[str, set[str]]:
    modules = _modules(pkg)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            # `from search.store import proxy` names the submodule; `from search.store import heartbeat_x` the package
            found = {t for t in targets if t in modules}
            graph[name] |= {t for t in found if not any(o != t and o.startswith(t + ".") for o in found)} - {name}
    return graph


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module, [module])):
            return found
    return None


def _group(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "search"
    return "" if parts[1] in BASE else parts[1]


def test_no_module_imports_back_up() -> None:
    for pkg in ("trainer", "search"):
        circle = _circle(_graph(pkg))
        assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_layout_test_sees_a_circle_and_the_subpackages() -> None:
    assert _circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    graph = _graph("search")
    assert "search.execution.worker" in graph and "search.store.heartbeat" in graph["search.execution.worker"]


def test_no_group_imports_a_group_above_it() -> None:
    graph = _graph("search")
    groups = {_group(m) for m in graph}
    assert groups == set(FLOORS), f"every package of search/ has a floor: {groups ^ set(FLOORS)}"
    wrong = []
    for module, deps in graph.items():
        src = _group(module)
        for dep in deps:
            dst = _group(dep)
            if dst != src and FLOORS[dst] >= FLOORS[src]:
                wrong.append(f"{module} ({src or 'base'}) imports {dep} ({dst or 'base'})")
    assert not wrong, "\n".join(wrong)


def test_optunas_private_attributes_are_touched_in_one_module() -> None:
    private = re.compile(r"\._(storage|study_id|trial_id|backend|get_trials|read_trials_from_remote_storage|contains|"
                         r"datetime_start_utc)\b|storages\._rdb")
    touched = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "search").rglob("*.py") if p.name != "_optuna.py"
               for i, line in enumerate(p.read_text().splitlines(), 1) if private.search(line)]
    assert not touched, touched


def test_the_trainer_knows_nothing_of_optuna_or_the_service() -> None:
    for path in (ROOT / "trainer").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [n for n in names if n.split(".")[0] in ("optuna", "search")], path.name


def test_every_package_offers_what_its_init_names() -> None:
    """Each role package's ``__init__`` lists what it offers; every listed name loads (no stale entry)."""
    import importlib

    for pkg in ("search", "search.store", "search.spec", "search.strategy", "search.results", "search.execution"):
        module = importlib.import_module(pkg)
        missing = [name for name in module.__all__ if getattr(module, name, None) is None]
        assert not missing, f"{pkg} names what it does not offer: {missing}"
