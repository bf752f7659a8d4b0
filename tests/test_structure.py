"""The package's shape, checked rather than hand-kept: every module imports, no import cycles,
functions of a screen or so, and every DVC stage's ``deps`` cover the code it runs."""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

SRC = REPO / "src"
PACKAGE = SRC / "zfnet"
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported: at module level (also inside
    module-level ``if``/``try``/``with``), not in functions or classes' methods, not under
    ``if TYPE_CHECKING``."""
    found, todo = [], list(tree.body)
    while todo:
        node = todo.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            todo += node.body + node.orelse
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody + [n for h in node.handlers for n in h.body]
        elif isinstance(node, ast.With):
            todo += node.body
    return found


def imported_modules(node: ast.Import | ast.ImportFrom, importer: str) -> set[str]:
    """The zfnet modules an import statement loads: the named one, its parent packages, and each
    ``from package import name`` that is a submodule. The importer's own parent packages are not
    counted (they are being imported already when it runs) unless it takes a name from one
    (``from zfnet.viz import Deconvnet`` inside ``zfnet.viz``: a real dependency on its ``__init__``)."""
    ancestors = {".".join(importer.split(".")[:i]) for i in range(1, importer.count(".") + 1)}
    needed = set()
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            base = ".".join(importer.split(".")[: -node.level] + ([base] if base else []))
        names = [base] + [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
        if any(f"{base}.{a.name}" not in MODULES for a in node.names):
            needed.add(base)
    loaded = set()
    for name in names:
        parts = name.split(".")
        loaded |= {".".join(parts[: i + 1]) for i in range(len(parts))}
    return {m for m in loaded if m in MODULES and (m not in ancestors or m in needed)}


def all_imports(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: at module level or inside functions, not under ``if TYPE_CHECKING``."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [node]
    if isinstance(node, ast.If) and _is_type_checking(node):
        return [n for child in node.orelse for n in all_imports(child)]
    return [n for child in ast.iter_child_nodes(node) for n in all_imports(child)]


def import_graph(top_level_only: bool) -> dict[str, set[str]]:
    """``{module: the zfnet modules its imports load}``, at import time only or also inside functions."""
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        nodes = top_level_imports(tree) if top_level_only else all_imports(tree)
        graph[name] = set().union(*(imported_modules(n, name) for n in nodes)) - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_imports():
    import zfnet

    names = [m.name for m in pkgutil.walk_packages(zfnet.__path__, "zfnet.")]
    assert set(names) | {"zfnet"} == set(MODULES)
    for name in names:
        if not name.endswith(".__main__"):  # `python -m zfnet.cli`: runs the command
            importlib.import_module(name)


def test_no_import_cycles_at_import_time():
    """No module imports (at module level) one that imports it back, directly or around a loop."""
    assert cycles(import_graph(top_level_only=True)) == []


def test_no_import_cycles_hidden_in_functions():
    """Nor through imports inside functions: a function-level import must not be what keeps a
    cycle from failing at import time (as config -> experiments.variants -> config once did)."""
    assert cycles(import_graph(top_level_only=False)) == []


def function_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """A function's lines from ``def`` to its end, its docstring not counted (documentation is
    never what makes a function too long to read)."""
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1
    return lines


def test_no_function_is_longer_than_80_lines():
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and function_lines(node) > MAX_FUNCTION_LINES:
                long.append(f"{name}.{node.name} (line {node.lineno}): {function_lines(node)} lines")
    assert long == [], long


# --- the pipeline's wiring --------------------------------------------------------------------------------

def stage_modules() -> dict[str, tuple[str, list[str]]]:
    """``{dvc.yaml stage: (the zfnet.stages module its cmd runs, its deps)}`` (``foreach`` stages once)."""
    stages = {}
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        body = stage.get("do", stage)
        argv = body["cmd"].split()
        assert argv[:2] == ["python", "-m"] and argv[2].startswith("zfnet.stages."), (name, body["cmd"])
        stages[name] = (argv[2], [d for d in body.get("deps", []) if d.startswith("src/")])
    return stages


def uncovered(modules: list[str], deps: list[str]) -> list[str]:
    """The source files of ``modules`` that no dep (a file, or a folder holding it) names."""
    files = [MODULES[m].relative_to(REPO).as_posix() for m in modules if m in MODULES]
    return sorted(f for f in files if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps))


LOADED = """
import ast, importlib, inspect, json, sys
stage = importlib.import_module(sys.argv[1])
for node in ast.walk(ast.parse(inspect.getsource(stage))):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("zfnet"):
        importlib.import_module(node.module)
        for alias in node.names:
            try:
                importlib.import_module(f"{node.module}.{alias.name}")
            except ImportError:
                pass  # a name, not a module
    elif isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.startswith("zfnet"):
                importlib.import_module(alias.name)
print(json.dumps(sorted(m for m in sys.modules if m == "zfnet" or m.startswith("zfnet."))))
"""


@pytest.mark.parametrize("stage", sorted(stage_modules()))
def test_stage_deps_cover_what_its_entry_point_loads(stage):
    """The zfnet modules a stage loads when its entry point is imported and its functions' own
    imports run (the stage module's function-level imports, e.g. ``main``'s), each with everything
    it imports at module level: a fresh interpreter's ``sys.modules`` after that. Each one's file
    must be a dep of the stage (itself or a folder above it), or editing it would not rerun the
    stage. What library functions import inside themselves at run time is checked on a real run:
    :func:`test_stage_deps_cover_what_a_real_run_loads`."""
    module, deps = stage_modules()[stage]
    proc = subprocess.run([sys.executable, "-c", LOADED, module], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert uncovered(json.loads(proc.stdout), deps) == [], f"dvc.yaml stage {stage!r}: add these to its deps"


@pytest.mark.slow
def test_stage_deps_cover_what_a_real_run_loads(tiny_pipeline):
    """Every zfnet module imported by a stage's process (worker processes included) during the tiny
    profile's ``dvc repro`` (recorded by an import audit hook, :data:`conftest.IMPORT_RECORDER`)
    is a dep of that stage."""
    root = tiny_pipeline[0]
    records = [json.loads(line) for f in (root.parent / "imports").glob("*.jsonl") for line in f.read_text().splitlines()]
    stages = stage_modules()
    by_module = {module: name for name, (module, _) in stages.items()}
    loaded: dict[str, set[str]] = {name: set() for name in stages}
    for argv0, imported in records:
        path = Path(argv0)
        if path.parent.name == "stages" and path.suffix == ".py" and f"zfnet.stages.{path.stem}" in by_module:
            loaded[by_module[f"zfnet.stages.{path.stem}"]].add(imported)
    assert all(loaded.values()), {name for name, mods in loaded.items() if not mods}
    missing = {name: uncovered(sorted(mods), stages[name][1]) for name, mods in loaded.items()}
    assert {name: files for name, files in missing.items() if files} == {}
