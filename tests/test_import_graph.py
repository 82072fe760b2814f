"""The import graph of our own packages: no circle, and no upward import from a lower layer.

Layers, lowest first: the ground floor (standard-library modules every layer may import: errors, limits, names,
the field declarations and their reader) -> primitives (the layers) -> the model core (spec, canonical form,
graph, model, costs) -> running one model (tasks, training, the trainer, run folders) -> the tools built on it
(search, export, report, confirm, scaling) -> the CLI and the package's public face (`composer/__init__.py`).
Imports inside functions count too; only `if TYPE_CHECKING:` blocks are skipped.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("composer", "primitives", "scaling")
GROUND = ("composer.errors", "composer.fields", "composer.limits", "composer.names", "composer.reader")
RUNNING = ("composer.tasks", "composer.training", "composer.trainer", "composer.runs", "composer.data", "composer.tracking")
TOOLS = ("composer.search", "composer.export", "composer.report", "composer.confirm", "composer.eval", "composer.overrides",
         "scaling")


def layer(module: str) -> int:
    def under(prefixes: tuple[str, ...]) -> bool:
        return any(module == p or module.startswith(p + ".") for p in prefixes)

    if module in GROUND:
        return -1
    if under(("primitives",)):
        return 0
    if module in ("composer", "composer.__main__") or module.startswith("composer.cli"):
        return 4
    if under(TOOLS):
        return 3
    if under(RUNNING):
        return 2
    return 1


def our_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for file in (ROOT / package).rglob("*.py"):
            name = ".".join(file.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = file
    return modules


def type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for n in ast.walk(node))
    return skipped


def import_graph() -> nx.DiGraph:
    modules = our_modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, file in modules.items():
        tree = ast.parse(file.read_text())
        skipped = type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import sub` imports the submodule when there is one, else a name of pkg
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph.add_edge(name, target, line=node.lineno)
    return graph


def test_no_import_circle():
    cycles = list(nx.simple_cycles(import_graph()))
    assert cycles == [], f"import circles: {cycles}"


def test_no_upward_import():
    graph = import_graph()
    upward = [f"{a}:{graph.edges[a, b]['line']} imports {b}" for a, b in graph.edges if layer(b) > layer(a)]
    assert upward == [], "upward imports:\n" + "\n".join(upward)


def test_the_checks_can_fail():
    graph = nx.DiGraph([("composer.spec", "composer.search.runner"), ("composer.search.runner", "composer.spec")])
    assert list(nx.simple_cycles(graph))
    assert layer("composer.spec") < layer("composer.search.runner") < layer("composer.cli_search")
    assert layer("primitives.ops.dispatch") == 0 and layer("composer.training.step") == 2
    assert layer("composer") == 4 and layer("scaling.ladder") == 3
    assert layer("composer.fields") < layer("primitives.base")


def test_the_ground_floor_imports_the_standard_library_only():
    """Ground-floor modules are inlined into the standalone export, which has nothing but torch and Python."""
    import sys

    outside = []
    for name in GROUND:
        tree = ast.parse((ROOT / (name.replace(".", "/") + ".py")).read_text())
        for node in ast.walk(tree):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                       [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            outside += [f"{name} imports {m}" for m in modules
                        if m.split(".")[0] not in sys.stdlib_module_names and m not in GROUND]
    assert outside == []
