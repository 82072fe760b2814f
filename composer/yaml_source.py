"""Reading YAML with the line of every value kept, so errors can name `layers[3].n_heads` and its line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from composer.errors import UserError


class Source:
    """Parsed plain data plus a map from YAML path (`layers[3].body[1]`) to its 1-based line."""

    def __init__(self, data: Any, lines: dict[str, int] | None = None, filename: str | None = None):
        self.data = data
        self.lines = lines or {}
        self.filename = filename

    def line(self, path: str) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None

    def error(self, message: str, path: str | None, cls: type[UserError] = UserError) -> UserError:
        return cls(message, path=path, line=self.line(path) if path else None, source=self.filename)


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _record_lines(node: yaml.Node, path: str, lines: dict[str, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                child = join(path, key_node.value)
                lines[child] = key_node.start_mark.line + 1
                _record_lines(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _record_lines(item, join(path, i), lines)


def parse_yaml(text: str, filename: str | None = None) -> Source:
    """Safe-load YAML text; a syntax error becomes a UserError with its line."""
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise UserError(f"invalid YAML: {problem}", line=mark.line + 1 if mark else None,
                        source=filename) from None
    lines: dict[str, int] = {}
    if node is not None:
        _record_lines(node, "", lines)
    return Source(data, lines, filename)


def read_source(obj: Any) -> Source:
    """A path, a YAML string, a dict (or a Source) -> Source."""
    if isinstance(obj, Source):
        return obj
    if isinstance(obj, dict):
        return Source(obj)
    if isinstance(obj, Path) or (isinstance(obj, str) and "\n" not in obj and obj.endswith((".yaml", ".yml"))):
        path = Path(obj)
        if not path.is_file():
            raise UserError(f"file not found: {path}")
        return parse_yaml(path.read_text(encoding="utf-8"), filename=str(path))
    if isinstance(obj, str):
        return parse_yaml(obj)
    raise UserError(f"expected a path, a YAML string or a mapping, got {type(obj).__name__}")
