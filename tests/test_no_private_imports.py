"""Composer depends on the documented surfaces of Ray and Optuna and on the public names of its own packages.

The scan reads every Python file of composer/, primitives/, scaling/ and benchmarks/ (with `ast`, so strings,
comments and multi-line imports are read right) and reports:

- an import of a private name (`_x`) or through a private module from ray or optuna
  (`from ray.air._internal import ...`, `from optuna.study._tell import ...`);
- an import of a private name from our own packages (`from composer.x import _y`, `from primitives.x import _y`,
  `from scaling.x import _y`, or a relative import of one);
- private attribute access on ray or optuna (`optuna.x._y`), on a study or trial (`study._storage`,
  `trial._trial_id`, `frozen_trial._x`, `self.study._x`) or on a distribution or sampler (`dist._contains`);
- in a class that subclasses a ray or optuna class, `self._x` that the class does not define itself (private
  state inherited from the library, such as OptunaSearch's `self._ot_trials`).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("composer", "primitives", "scaling", "benchmarks")
OURS = ("composer", "primitives", "scaling")
LIBRARIES = ("ray", "optuna")
# the last name of an object whose private members belong to the library: study, trial, ot_trial, frozen_trial,
# param_distribution, sampler, ...
LIBRARY_OBJECT = re.compile(r"(^|_)(study|trial|distribution|dist|sampler|searcher|storage)$")


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def dotted(node: ast.AST) -> str | None:
    """`a.b.c` for a chain of names and attributes; None for anything else (a call, a subscript)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def module_of(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an import reads from (a relative import resolved against the file's package)."""
    if not node.level:
        return node.module or ""
    package = list(path.relative_to(ROOT).with_suffix("").parts)
    package = package[:len(package) - node.level]
    return ".".join(package + ([node.module] if node.module else []))


def import_offences(path: Path, tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = module_of(path, node)
            root = module.split(".")[0]
            if root in LIBRARIES + OURS:
                if root in LIBRARIES and any(private(part) for part in module.split(".")):
                    out.append((node.lineno, f"import from the private module {module}"))
                for alias in node.names:
                    if private(alias.name):
                        out.append((node.lineno, f"import of the private name {alias.name} from {module}"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in LIBRARIES + OURS and any(private(p) for p in parts):
                    out.append((node.lineno, f"import of the private module {alias.name}"))
    return out


def attribute_offences(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            base = dotted(node.value)
            if base is None:
                continue
            if base.split(".")[0] in LIBRARIES or LIBRARY_OBJECT.search(base.split(".")[-1]):
                out.append((node.lineno, f"private attribute {base}.{node.attr}"))
    return out


def library_names(tree: ast.AST) -> set[str]:
    """Names bound by `from ray... import X` / `from optuna... import X` (and `import ray`, `import optuna`)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] in LIBRARIES:
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names
                         if alias.name.split(".")[0] in LIBRARIES)
    return names


def inherited_state_offences(tree: ast.AST) -> list[tuple[int, str]]:
    """`self._x` in a subclass of a ray/optuna class, where the class itself neither assigns `self._x` nor
    defines a method or class attribute `_x`."""
    imported = library_names(tree)
    out = []
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        bases = [dotted(b) or "" for b in cls.bases]
        if not any(b.split(".")[0] in imported for b in bases):
            continue
        own = {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        own |= {t.id for n in cls.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
        uses = []
        for node in ast.walk(cls):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self" \
                    and private(node.attr):
                if isinstance(node.ctx, ast.Store):
                    own.add(node.attr)
                else:
                    uses.append(node)
        out += [(n.lineno, f"{cls.name} reads self.{n.attr}, private state of its base {', '.join(bases)}")
                for n in uses if n.attr not in own]
    return out


def offences() -> list[str]:
    found = []
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for line, what in sorted(import_offences(path, tree) + attribute_offences(tree)
                                     + inherited_state_offences(tree)):
                found.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    return found


def test_no_private_names_from_ray_optuna_or_across_our_packages():
    found = offences()
    assert not found, "private names used:\n" + "\n".join(found)


def test_the_scan_finds_each_kind_of_offence(tmp_path):
    """The scan itself: each pattern above is caught, and the public forms beside them are not."""
    source = '''
from optuna.study._tell import tell
from ray.tune.search.optuna import OptunaSearch
from composer.search.trial import _helper, cache_key
from .space import _parse
import optuna
study._storage.set_trial_state_values(trial._trial_id, 1)
dist._contains(1)
optuna.samplers._grid.GridSampler
study.tell(trial.number, state=None)
text = "study._storage"   # study._storage in a comment

class Search(OptunaSearch):
    limit = 3
    def __init__(self):
        self._mine = {}
    def _helper(self):
        return self._mine, self._helper, self._ot_trials
'''
    tree = ast.parse(source)
    path = ROOT / "composer" / "search" / "example.py"
    found = [what for _, what in import_offences(path, tree) + attribute_offences(tree)
             + inherited_state_offences(tree)]
    assert found.count("import from the private module optuna.study._tell") == 1
    assert "import of the private name _helper from composer.search.trial" in found
    assert "import of the private name _parse from composer.search.space" in found
    assert {"private attribute study._storage", "private attribute trial._trial_id",
            "private attribute dist._contains", "private attribute optuna.samplers._grid"} <= set(found)
    assert [w for w in found if "reads self." in w] == [
        "Search reads self._ot_trials, private state of its base OptunaSearch"]
    assert len(found) == 8, found
