"""Reading YAML with the line of every value kept, so errors can name `layers[3].n_heads` and its line.

Documents are bounded (composer/limits.py): the size in bytes is checked before parsing, and the number of
values (an alias counted each time it is used) and the nesting depth while the document is composed, so an
alias bomb or a deeply nested document is refused before any data is built. A recursive alias, a duplicate
key and text that is not UTF-8 are refused too. Only safe YAML is read (`yaml.SafeLoader` types).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer

from composer.errors import UserError
from composer.limits import MAX_DOCUMENT_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES
from composer.reader import Source, join


class LimitError(yaml.YAMLError):
    """A document past one of the limits; `line` is where composing stopped."""

    def __init__(self, message: str, mark: yaml.Mark | None):
        super().__init__(message)
        self.problem = message
        self.problem_mark = mark


# libyaml's parser (C) when installed, with PyYAML's composer (Python) on top so the bounds are checked as
# each node is composed; else PyYAML's own parser.
MERGE_TAG = "tag:yaml.org,2002:merge"
_BASES = (Composer, yaml.CSafeLoader) if yaml.__with_libyaml__ else (yaml.SafeLoader,)


class BoundedLoader(*_BASES):
    """A safe loader that counts composed values (aliases expanded) and nesting depth against the limits."""

    def __init__(self, stream: str):
        _BASES[-1].__init__(self, stream)
        Composer.__init__(self)
        self.values = 0                  # values so far, each alias counted as the values it stands for
        self.depth = 0
        self.sizes: dict[int, int] = {}  # id(node) -> its value count, once the node is complete

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        alias = isinstance(event, yaml.AliasEvent)
        self.depth += 1
        if self.depth > MAX_YAML_DEPTH:
            raise LimitError(f"nested more than {MAX_YAML_DEPTH} levels deep (limit MAX_YAML_DEPTH)", event.start_mark)
        before = self.values
        node = super().compose_node(parent, index)
        self.depth -= 1
        if alias:
            if id(node) not in self.sizes:
                raise LimitError("an alias refers to a value that contains it (a recursive alias)", event.start_mark)
            self.values += self.sizes[id(node)]
        else:
            self.values += 1
            self.sizes[id(node)] = self.values - before
        if self.values > MAX_YAML_NODES:
            raise LimitError(f"the document expands to more than {MAX_YAML_NODES:,} values, an alias counted "
                             "each time it is used (limit MAX_YAML_NODES)", event.start_mark)
        return node

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        seen: dict[tuple[str, str], int] = {}
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != MERGE_TAG:
                if (key.tag, key.value) in seen:
                    raise LimitError(f"duplicate key {key.value!r} (first given on line "
                                     f"{seen[key.tag, key.value]})", key.start_mark)
                seen[key.tag, key.value] = key.start_mark.line + 1
        return node


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


def load_yaml(text: str) -> tuple[Any, yaml.Node | None]:
    """(data, root node) of one bounded, safe YAML document; yaml.YAMLError on a syntax error or a limit."""
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > MAX_DOCUMENT_BYTES:
        raise LimitError(f"the document is {size:,} bytes, more than {MAX_DOCUMENT_BYTES:,} "
                         "(limit MAX_DOCUMENT_BYTES)", None)
    loader = BoundedLoader(text)
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    finally:
        loader.dispose()


def parse_yaml(text: str, filename: str | None = None) -> Source:
    """Safe-load bounded YAML text; a syntax error or a limit becomes a UserError with its line."""
    try:
        data, node = load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or getattr(e, "reason", None) or str(e)
        kind = "" if isinstance(e, LimitError) else "invalid YAML: "
        raise UserError(kind + " ".join(str(problem).split()), line=mark.line + 1 if mark else None,
                        source=filename) from None
    lines: dict[str, int] = {}
    if node is not None:
        _record_lines(node, "", lines)
    return Source(data, lines, filename)


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of a regular file of at most MAX_DOCUMENT_BYTES; a UserError naming the file otherwise."""
    path = Path(path)
    if not _exists(path):
        raise UserError(f"{what} not found: {path}")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected a {what}")
    if not path.is_file():
        raise UserError(f"{path}: not a regular file")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror}") from None
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise UserError(f"{path}: larger than {MAX_DOCUMENT_BYTES:,} bytes (limit MAX_DOCUMENT_BYTES)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})") from None


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long, or with a NUL byte
        return False


def is_path(obj: Any) -> bool:
    """Whether `obj` names a file rather than holding YAML text: a Path, or a one-line string ending in
    .yaml/.yml or naming something that exists."""
    if isinstance(obj, Path):
        return True
    return isinstance(obj, str) and "\n" not in obj and (obj.endswith((".yaml", ".yml")) or _exists(Path(obj)))


def read_source(obj: Any) -> Source:
    """A path, a YAML string, a dict (or a Source) -> Source."""
    if isinstance(obj, Source):
        return obj
    if isinstance(obj, dict):
        return Source(obj)
    if is_path(obj):
        return parse_yaml(read_text(obj), filename=str(obj))
    if isinstance(obj, str):
        return parse_yaml(obj)
    raise UserError(f"expected a path, a YAML string or a mapping, got {type(obj).__name__}")
