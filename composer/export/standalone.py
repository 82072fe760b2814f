"""Generate `modeling.py`: one standalone source file (torch + stdlib only) that rebuilds an exported model.

The file is made by inlining Composer's own modules rather than by a second implementation, so the
exported model runs the very code Composer trained: `primitives.base` and Composer's ground floor it imports
(`GROUND_MODULES`: the field declarations and their reader, standard library only), the primitive families the
spec uses and the shared modules they import (`primitives.common`, `primitives.ops`), `composer.spec`,
`composer.blocks`, `composer.model`, plus the export helpers `spec_data` (plain data -> ArchSpec) and
`weights` (a torch-only safetensors reader that checks the file's header before it builds a tensor).

Inlining rests on the import rule every family module (`primitives/<family>.py`) and `primitives.common`
follow: they import only the standard library, torch, the ground floor, `primitives.base`, `primitives.common`
and `primitives.ops` (never `primitives.ops.kernels`, nor another family), so the file holds exactly the
families a model uses and needs nothing but torch. `import_rule_violations` checks a module's source
against it (tests/test_export_import_rule.py runs it over every registered primitive's module).

How a module is inlined: its docstring and `from __future__` line are dropped, its stdlib/torch imports
are hoisted (deduplicated) to the top of the file, imports of other inlined modules are removed (their
names now live in the same namespace), and imports inside functions become `pass`. The kernels package is
never inlined: the standalone file always runs the chunked PyTorch forms. Two inlined modules binding the
same top-level name differently would silently shadow each other, so that is an error here.

The architecture is embedded as a Python literal of `spec.to_dict()` (checked with `ast.literal_eval`),
so nothing in a spec (names, descriptions) can become code.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import math
import pprint
import sys
from pathlib import Path
from typing import Any

from composer.spec import ArchSpec, iter_layers
from primitives.base import get_primitive

INTERNAL_PACKAGES = ("primitives", "composer")
# Never inlined: the fla kernels (CUDA only) and the YAML spec parser (needed only by `build_model`).
SKIPPED_PACKAGES = ("primitives.ops.kernels", "composer.spec_parse")
# Values for names a skipped package would have provided to an import inside a function.
SKIPPED_NAME_VALUES = {"FLA_AVAILABLE": "False"}
# Top-level definitions left out of the standalone file (they need the YAML parser).
DROPPED_DEFINITIONS = {"composer.model": {"build_model"}}
HEAD_MODULES = ("primitives.base",)
# Composer's ground floor: standard-library modules that everything may import, the primitives included.
GROUND_MODULES = ("composer.errors", "composer.fields", "composer.limits", "composer.names", "composer.reader")
# What a family module may import besides the standard library and torch (and what it may not).
FAMILY_IMPORTS = (*GROUND_MODULES, "primitives.base", "primitives.common", "primitives.ops")
FAMILY_IMPORTS_EXCLUDED = ("primitives.ops.kernels",)
TAIL_MODULES = ("composer.spec", "composer.blocks", "composer.model", "composer.export.spec_data",
                "composer.export.weights")


class InlineError(RuntimeError):
    """The sources cannot be inlined safely (a broken import rule or a name clash)."""


def within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def is_internal(module: str) -> bool:
    return within(module, INTERNAL_PACKAGES)


def is_skipped(module: str) -> bool:
    return within(module, SKIPPED_PACKAGES)


def import_rule_violations(source: str) -> list[str]:
    """The imports in a family module's source that break the import rule (see the module docstring)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            modules = ["." * node.level + (node.module or "")]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        for module in modules:
            root = module.split(".")[0]
            allowed = root in sys.stdlib_module_names or root == "torch" or (
                within(module, FAMILY_IMPORTS) and not within(module, FAMILY_IMPORTS_EXCLUDED))
            if not allowed:
                out.append(f"line {node.lineno}: imports {module}")
    return out


def primitive_modules(spec: ArchSpec) -> list[str]:
    """The modules defining the primitives a spec uses, in first-use order."""
    out: list[str] = []
    for layer in iter_layers(spec.layers):
        module = get_primitive(layer.op).__module__
        if module not in out:
            out.append(module)
    return out


class _Module:
    """One module's source, parsed, with where its imported names come from."""

    def __init__(self, name: str):
        self.name = name
        module = importlib.import_module(name)
        self.is_package = hasattr(module, "__path__")
        self.source = inspect.getsource(module)
        self.tree = ast.parse(self.source)
        self.path = Path(inspect.getfile(module))

    def internal_imports(self) -> list[tuple[ast.stmt, bool]]:
        """(import statement of an internal module, whether it is at the top level)."""
        top = set(map(id, self.tree.body))
        out = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                raise InlineError(f"{self.name}: relative imports cannot be inlined")
            if isinstance(node, ast.ImportFrom) and node.module and is_internal(node.module):
                out.append((node, id(node) in top))
            elif isinstance(node, ast.Import) and any(is_internal(a.name) for a in node.names):
                out.append((node, id(node) in top))
        return out


class Inliner:
    """Collects modules in dependency order and writes them out as one source."""

    def __init__(self):
        self.modules: dict[str, _Module] = {}
        self.order: list[str] = []
        self._visiting: set[str] = set()

    def add(self, name: str) -> None:
        if name in self.modules or name in self._visiting or is_skipped(name):
            return
        self._visiting.add(name)
        module = _Module(name)
        for node, _ in module.internal_imports():
            if isinstance(node, ast.Import):
                continue  # only `from ... import` statements name inlined modules
            if is_skipped(node.module):
                continue
            for dep in self.providers(node.module, [a.name for a in node.names]):
                self.add(dep)
        self._visiting.discard(name)
        self.modules[name] = module
        if not module.is_package:
            self.order.append(name)

    def providers(self, module_name: str, names: list[str]) -> list[str]:
        """The modules that define `names` imported from `module_name` (resolving package re-exports)."""
        module = importlib.import_module(module_name)
        if not hasattr(module, "__path__"):
            return [module_name]
        out = []
        for name in names:
            obj = getattr(module, name, None)
            if inspect.ismodule(obj):
                raise InlineError(f"`from {module_name} import {name}` imports a module; import its names")
            if inspect.isfunction(obj) or inspect.isclass(obj):
                owner = obj.__module__
            else:  # a constant does not know its module: find the submodule that assigns it
                owner = assigning_module(module_name, name)
            if not owner or not owner.startswith(module_name):
                raise InlineError(f"cannot tell which module defines {module_name}.{name}")
            out.append(owner)
        return out

    # -- writing ---------------------------------------------------------------------------------
    def render(self) -> tuple[list[str], list[str]]:
        """(hoisted import lines, body sections). A top-level name that an earlier module already binds
        differently is renamed in the later module (and in modules importing it from there)."""
        hoisted: list[str] = []
        bindings: dict[str, tuple[str, str]] = {}
        renames: dict[str, dict[str, str]] = {name: {} for name in self.order}
        sections = []
        for name in self.order:
            module = self.modules[name]
            edits = _Edits(module.source)
            body = module.tree.body
            internal = module.internal_imports()
            internal_ids = {id(node) for node, _ in internal}
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                edits.drop(body[0])
            for node, top_level in internal:
                if top_level:
                    self._inherit_renames(node, renames[name])
                    edits.drop(node, [f"{a.asname} = {renames[name].get(a.name, a.name)}"
                                      for a in getattr(node, "names", [])
                                      if isinstance(node, ast.ImportFrom) and a.asname and a.asname != a.name])
                else:
                    edits.drop(node, [_nested_import_replacement(node)])
            for node in body:
                if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in internal_ids:
                    edits.drop(node)
                    if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                        continue
                    for line, bound in _import_lines(node):
                        self._bind(bindings, bound, line, name)
                        if line not in hoisted:
                            hoisted.append(line)
                elif name in DROPPED_DEFINITIONS and getattr(node, "name", None) in DROPPED_DEFINITIONS[name]:
                    edits.drop(node)
                else:
                    for bound in _bound_names(node):
                        text = ast.get_source_segment(module.source, node) or ""
                        if bound in bindings and bindings[bound][0] != text:
                            renames[name][bound] = f"{bound}__{name.rsplit('.', 1)[-1]}"
                            bound = renames[name][bound]
                        self._bind(bindings, bound, text, name)
            for old, new in renames[name].items():
                _rename_globals(module, old, new, edits)
            relative = module.name.replace(".", "/") + ".py"
            sections.append(f"# {'-' * 90}\n# Inlined from {relative}\n\n{edits.apply().strip(chr(10))}\n")
        return hoisted, sections

    def _inherit_renames(self, node: ast.stmt, renames: dict[str, str]) -> None:
        """Names imported from a module that renamed them are renamed here too."""
        if not isinstance(node, ast.ImportFrom) or is_skipped(node.module):
            return
        for alias in node.names:
            (provider,) = self.providers(node.module, [alias.name])
            source = self.modules[provider]
            for old, new in getattr(source, "renamed", {}).items():
                if alias.name == old and not alias.asname:
                    renames[old] = new

    @staticmethod
    def _bind(bindings: dict[str, tuple[str, str]], bound: str, source: str, module: str) -> None:
        if bound in bindings and bindings[bound][0] != source:
            raise InlineError(f"`{bound}` is defined differently in {bindings[bound][1]} and {module}; "
                              f"rename one of them so that export can inline both")
        bindings.setdefault(bound, (source, module))


def assigning_module(package: str, name: str) -> str | None:
    """The loaded module inside `package` whose top level binds `name` other than by an import."""
    for module_name, module in sorted(sys.modules.items()):
        if not module_name.startswith(package + ".") or hasattr(module, "__path__") or is_skipped(module_name):
            continue
        if any(name in _bound_names(node) for node in ast.parse(inspect.getsource(module)).body):
            return module_name
    return None


class _Edits:
    """Line removals/replacements and in-line renames on one module's source."""

    def __init__(self, source: str):
        self.lines = source.splitlines()
        self.remove: set[int] = set()
        self.replace: dict[int, list[str]] = {}
        self.spans: list[tuple[int, int, int, str]] = []  # (line index, start col, end col, text)

    def drop(self, node: ast.AST, replacement: list[str] | None = None) -> None:
        start = node.lineno - 1
        if getattr(node, "decorator_list", None):
            start = node.decorator_list[0].lineno - 1
        self.remove.update(range(start, node.end_lineno))
        if replacement:
            self.replace[start] = replacement

    def apply(self) -> str:
        lines = list(self.lines)
        for index, start, end, text in sorted(self.spans, reverse=True):
            line = lines[index].encode("utf-8")
            lines[index] = (line[:start] + text.encode("utf-8") + line[end:]).decode("utf-8")
        out = []
        for i, line in enumerate(lines):
            out.extend(self.replace.get(i, []))
            if i not in self.remove:
                out.append(line)
        return "\n".join(out)


def _rename_globals(module: _Module, old: str, new: str, edits: _Edits) -> None:
    """Rename the module-level name `old` to `new` wherever this module refers to it.

    Refuses when some function also has a local or parameter called `old` (scopes would need resolving).
    """
    for node in ast.walk(module.tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            params = [a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)]
            stores = [n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
            if old in params or (old in stores and not isinstance(node, ast.Lambda)
                                 and not any(isinstance(n, ast.Global) and old in n.names for n in ast.walk(node))):
                raise InlineError(f"{module.name}: `{old}` clashes with another module and is also a local "
                                  f"name; rename it so that export can inline it")
    module.renamed = {**getattr(module, "renamed", {}), old: new}
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Name) and node.id == old:
            edits.spans.append((node.lineno - 1, node.col_offset, node.end_col_offset, new))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == old:
            line = edits.lines[node.lineno - 1].encode("utf-8")
            keyword = b"class " if isinstance(node, ast.ClassDef) else b"def "
            start = line.index(keyword + old.encode("utf-8")) + len(keyword)
            edits.spans.append((node.lineno - 1, start, start + len(old.encode("utf-8")), new))


def _nested_import_replacement(node: ast.stmt) -> str:
    """What an import inside a function becomes: `pass` (the names are global now), or for the skipped
    kernels package a known value or an ImportError."""
    indent = " " * node.col_offset
    if isinstance(node, ast.ImportFrom) and is_skipped(node.module):
        names = [a.asname or a.name for a in node.names]
        if all(n in SKIPPED_NAME_VALUES for n in names):
            return "; ".join(f"{indent if i == 0 else ''}{n} = {SKIPPED_NAME_VALUES[n]}" for i, n in enumerate(names))
        return f'{indent}raise ImportError("{node.module} is not part of the standalone export")'
    return f"{indent}pass"


def _import_lines(node: ast.Import | ast.ImportFrom) -> list[tuple[str, str]]:
    """One `(import line, bound name)` per alias of an external import."""
    out = []
    for alias in node.names:
        if isinstance(node, ast.ImportFrom):
            line = f"from {node.module} import {alias.name}"
        else:
            line = f"import {alias.name}"
        if alias.asname:
            line += f" as {alias.asname}"
        out.append((line, alias.asname or alias.name.split(".")[0]))
    return out


def _bound_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    names = []
    for target in targets:
        names.extend(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def architecture_literal(data: Any) -> str:
    """`data` (plain JSON-like values) as Python literal source; refuses anything else."""
    _check_plain(data, "architecture")
    text = pprint.pformat(data, indent=1, width=100, sort_dicts=False)
    if ast.literal_eval(text) != data:
        raise InlineError("the architecture does not round-trip as a Python literal")
    return text


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InlineError(f"{where}: keys must be strings, got {key!r}")
            _check_plain(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InlineError(f"{where}: {value} cannot be exported")
    elif value is not None and not isinstance(value, (str, int, bool)):
        raise InlineError(f"{where}: unexpected value of type {type(value).__name__}")


HEADER = '''"""A language model exported by Composer: standalone PyTorch source (torch + the standard library only).

    from modeling import load_model
    model = load_model()                    # reads model.safetensors next to this file
    logits = model(tokens).logits           # tokens: LongTensor [batch, time] -> [batch, time, vocab]
    out = model.generate(prompt, 20, temperature=0)

or from a shell: `python modeling.py --tokens 1 2 3 --new 20` (greedy).
The architecture is `ARCHITECTURE` at the end of this file; the code above it is Composer's own, inlined.
This file was generated; edit the architecture in Composer and export again rather than editing it.
"""

from __future__ import annotations
'''

FOOTER = '''
# {rule}
# The exported model

ARCHITECTURE = {architecture}

WEIGHTS_FILE = "model.safetensors"


def build_model() -> HybridLM:
    """The model with freshly initialised weights."""
    return HybridLM(spec_from_data(ARCHITECTURE))


def load_model(directory: str | None = None, device: str = "cpu") -> HybridLM:
    """The model with the weights in `directory` (default: this file's folder), in eval mode."""
    import os

    directory = directory or os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(directory, WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{{path}}: no weights in this bundle (build_model() gives untrained ones)")
    model = build_model()
    tensors, _ = read_safetensors(path)
    try:
        load_weights(model, tensors)
    except ValueError as e:
        raise ValueError(f"{{path}}: the weights do not fit this model: {{e}}") from None
    return model.to(device).eval()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Greedy generation with the exported model.")
    parser.add_argument("--tokens", type=int, nargs="+", required=True, help="prompt token ids")
    parser.add_argument("--new", type=int, default=20, help="tokens to generate")
    args = parser.parse_args()
    result = load_model().generate(torch.tensor([args.tokens]), args.new, temperature=0)
    print(" ".join(str(t) for t in result[0].tolist()))
'''


def generate_modeling_source(spec: ArchSpec) -> str:
    """The standalone `modeling.py` text for `spec`."""
    inliner = Inliner()
    for name in (*HEAD_MODULES, *primitive_modules(spec), *TAIL_MODULES):
        inliner.add(name)
    hoisted, sections = inliner.render()
    stdlib = sorted(line for line in hoisted if not line.split()[1].startswith("torch"))
    torch_lines = sorted(line for line in hoisted if line.split()[1].startswith("torch"))
    imports = "\n".join(stdlib) + "\n\n" + "\n".join(torch_lines) + "\n"
    footer = FOOTER.format(rule="-" * 90, architecture=architecture_literal(spec.to_dict()))
    source = HEADER + "\n" + imports + "\n\n" + "\n\n".join(sections) + footer
    ast.parse(source)
    return source
