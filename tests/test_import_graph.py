"""The import graph of our own packages: no circle, and every import goes down the layers.

`LAYERS` lists the units of the code, lowest first (the ground floor, primitives, the model core, running one model,
the tools, the CLI, the public face), as fine as the packages: each layer holds one or more units side by side. A
module may import its own unit and the units of lower layers, never a unit of its own layer or of a higher one: so
two tools side by side (search and confirm's reader of it aside, export and report, ...) never import each other, a
subcommand of the CLI never imports another (what they share is composer/cli/common.py), and the run folder, the
data and the Ray cluster stay apart. A unit is named by module prefixes (a package, or a group of single modules);
every module belongs to the unit of its longest prefix, and one that belongs to none fails
`test_every_module_has_a_layer`, so a new module is placed on purpose. Imports inside functions count too; only `if
TYPE_CHECKING:` blocks are skipped.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("composer", "primitives", "scaling")
SUBCOMMANDS = ("spec", "train", "search", "scale", "export", "report", "primitives", "eval", "confirm", "bench",
               "zoo")
# the ground floor: standard-library modules every layer may import, the primitives included (so the standalone
# export inlines them): errors, limits, names, the field declarations and their reader
GROUND = ("composer.errors", "composer.fields", "composer.limits", "composer.names", "composer.reader")
LAYERS: tuple[dict[str, tuple[str, ...]], ...] = (
    {"ground": GROUND, "atomic writes": ("composer.atomic",), "signals": ("composer.interrupt",),
     "units": ("composer.units",), "version": ("composer.version",)},
    {"primitives": ("primitives",)},
    {"model core": ("composer.yaml_source", "composer.spec", "composer.spec_parse", "composer.canonical_form",
                    "composer.blocks", "composer.model", "composer.costs")},
    {"run folders": ("composer.runs",), "provenance": ("composer.provenance",), "data": ("composer.data",),
     "ray cluster": ("composer.ray_cluster", "composer.ray_watchdog"), "zoo": ("composer.zoo",)},
    {"tasks": ("composer.tasks",), "tracking": ("composer.tracking",)},
    {"training": ("composer.training", "composer.trainer")},
    # measured inference costs (composer bench, measured objectives): read by export's card, the report and search
    {"measure": ("composer.measure",)},
    # the tools: confirm reads what a search found (its space, ranking and stages), so it sits above search
    {"overrides": ("composer.overrides",), "scaling": ("scaling",), "export": ("composer.export",),
     "report": ("composer.report",)},
    {"search": ("composer.search",), "eval": ("composer.eval",)},
    {"confirm": ("composer.confirm",)},
    {"cli common": ("composer.cli.common",)},
    {f"composer {name}": (f"composer.cli.{name}",) for name in SUBCOMMANDS},
    {"the command": ("composer.cli",)},
    {"public face": ("composer", "composer.__main__")},
)
EXACT = ("composer", "composer.__main__", "composer.cli")     # these name one module, not a prefix


def unit_of(module: str) -> tuple[int, str] | None:
    """(layer, unit) of a module: the unit of its longest prefix; None when no unit holds it."""
    best: tuple[int, int, str] | None = None
    for level, units in enumerate(LAYERS):
        for unit, prefixes in units.items():
            for prefix in prefixes:
                if module == prefix or (prefix not in EXACT and module.startswith(prefix + ".")):
                    if best is None or len(prefix) > best[0]:
                        best = (len(prefix), level, unit)
    return None if best is None else (best[1], best[2])


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


def wrong_imports(graph: nx.DiGraph) -> list[str]:
    """Every import that does not go down: into a unit of the same layer (a sibling) or of a higher one."""
    wrong = []
    for a, b in graph.edges:
        (level_a, unit_a), (level_b, unit_b) = unit_of(a), unit_of(b)
        if unit_a != unit_b and level_b >= level_a:
            way = "beside it" if level_b == level_a else "above it"
            wrong.append(f"{a}:{graph.edges[a, b].get('line', '?')} imports {b} ({unit_b}, {way}; {a} is {unit_a})")
    return wrong


def test_every_module_has_a_layer():
    assert [m for m in our_modules() if unit_of(m) is None] == [], "add these modules to a unit of LAYERS"


def test_the_subcommands_are_the_cli_s():
    from composer.cli import SUBCOMMAND_MODULES

    assert SUBCOMMAND_MODULES == tuple(f"composer.cli.{name}" for name in SUBCOMMANDS)


def test_no_import_circle():
    cycles = list(nx.simple_cycles(import_graph()))
    assert cycles == [], f"import circles: {cycles}"


def test_no_upward_import():
    wrong = wrong_imports(import_graph())
    assert wrong == [], "imports that do not go down the layers:\n" + "\n".join(wrong)


def test_the_checks_can_fail():
    graph = nx.DiGraph([("composer.spec", "composer.search.runner"), ("composer.search.runner", "composer.spec")])
    assert list(nx.simple_cycles(graph))
    # what the layers were written to catch: the search running and reading the confirmation, the ladder's Ray
    # runner reaching into the search, one subcommand importing another, the data writing through the run folder
    before = nx.DiGraph([("composer.search.runner", "composer.confirm"),
                         ("composer.search.space_parse_search", "composer.confirm.config"),
                         ("scaling.ray_runner", "composer.search.ray_cluster"),
                         ("composer.cli.spec", "composer.cli.primitives"), ("composer.cli.scale", "composer.cli.spec"),
                         ("composer.data.tokenizer", "composer.runs"), ("composer.spec", "composer.search.runner")])
    assert [w.split(" (")[0] for w in wrong_imports(before)] == [f"{a}:? imports {b}" for a, b in before.edges]
    allowed = nx.DiGraph([("composer.confirm.candidates", "composer.search.space_parse"),
                          ("composer.cli.confirm", "composer.cli.common"), ("primitives.ops.dispatch", "composer.errors"),
                          ("composer.__main__", "composer.cli"), ("composer.cli", "composer.version")])
    assert wrong_imports(allowed) == []
    assert unit_of("composer.cli.search")[1] == "composer search" and unit_of("composer.cli")[1] == "the command"
    assert unit_of("composer.search.runner")[1] == "search" and unit_of("scaling.ladder")[1] == "scaling"
    assert unit_of("composer.cli.nonsense") is None and unit_of("composer.nonsense") is None
    assert unit_of("composer.fields")[0] < unit_of("primitives.base")[0]


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
