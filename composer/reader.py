"""The one reader: plain data (from YAML, with the line of every value kept) -> checked values and dataclasses.

    reader = Reader(source)                              # a Source: data + YAML path -> line (composer/yaml_source.py)
    config = reader.read(ConfirmConfig, data, "confirm")  # unknown keys refused (did you mean), each field checked
    rank = reader.value(data["rank"], int, "adapter.rank", {"ge": 1})

A field is checked against its declaration (composer/fields.py): its type (and the choices of a `Literal`), its
bounds, a registry of `names`, or the `parse` classmethod of its type. Every mistake is one error (a
`UserError`, or the `error` class given) naming the YAML path and, from a file, the line.

Two styles, one grammar: a document of model sizes (the spec, a primitive's Config: `spec_style=True`) takes
numbers only as numbers, holds every integer to MAX_INTEGER and says bounds in symbols
("an integer >= 1", "a number in [0, 1)"); a document of settings (training settings, a search space's and a
ladder's sections, a confirmation) also takes numbers written as text (YAML 1.1 reads `3e-3` as a string) and
integral floats for integers, and says bounds in words ("a positive number below 1e+30").

A ground-floor module: the standard library and the other ground-floor modules only (see composer/fields.py).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from composer.errors import UserError
from composer.fields import (
    NO_METADATA,
    as_float,
    bounds_of,
    expected,
    has_default,
    help_of,
    in_bounds,
    key_of,
    number_text,
    without_none,
)
from composer.limits import MAX_INTEGER
from composer.names import brief, unknown_name_message


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


def shown(value: Any) -> str:
    """A value as a message quotes it: `null` for None, else briefly."""
    return "null" if value is None else brief(value)


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


class Reader:
    """Checks plain data against declared types and fields; see the module docstring."""

    def __init__(self, source: Source | None = None, error: type[UserError] = UserError, spec_style: bool = False):
        self.source = source if source is not None else Source(None)
        self.error = error
        self.spec_style = spec_style

    def fail(self, message: str, path: str | None) -> UserError:
        return self.source.error(message, path or None, self.error)

    def relay(self, error: UserError, path: str | None = None) -> UserError:
        """A UserError raised without this document's lines (by a task, a nested parser), with them: its path
        under `path` when given."""
        where = join(path, error.path) if path and error.path else (error.path or path)
        return self.fail(error.message, where)

    # -- containers -------------------------------------------------------------------------------
    def mapping(self, value: Any, path: str, allowed: tuple[str, ...] | list[str] | None = None,
                what: str = "field") -> dict:
        """`value` as a mapping with string keys, each of them `allowed` (when given)."""
        if not isinstance(value, dict):
            raise self.fail(f"expected a mapping, got {type(value).__name__}", path)
        for key in value:
            if not isinstance(key, str):
                raise self.fail(f"keys must be strings, got {key!r}", path)
            if allowed is not None and key not in allowed:
                raise self.fail(unknown_name_message(what, key, list(allowed)), join(path, key))
        return value

    def read(self, cls: type, data: Any, path: str = "", what: str = "field", skip: tuple[str, ...] = (),
             **given: Any) -> Any:
        """`cls(**fields)` from a mapping: every key a field of `cls` (but `skip`), each value checked, required
        ones present; `given` are values the caller read itself."""
        data = self.mapping({} if data is None else data, path, keys_of(cls, skip) + tuple(given), what)
        values = self.fields(cls, data, path, skip=(*skip, *given))
        for f in dataclasses.fields(cls):
            if f.init and f.name not in values and f.name not in given and f.name not in skip and not has_default(f):
                gloss = f" ({help_of(f)})" if help_of(f) else ""
                raise self.fail(f"missing required field{gloss}", join(path, key_of(f)))
        return cls(**values, **given)

    def fields(self, cls: type, data: Mapping[str, Any], path: str = "", skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """The fields of `cls` (but `skip`) given in `data`, each checked against its declaration."""
        hints = type_hints(cls)
        return {f.name: self.value(data[key_of(f)], hints[f.name], join(path, key_of(f)), f.metadata)
                for f in dataclasses.fields(cls) if key_of(f) in data and f.name not in skip}

    # -- one value --------------------------------------------------------------------------------
    def value(self, value: Any, hint: Any, path: str, meta: Mapping[str, Any] = NO_METADATA) -> Any:
        """`value` checked against a type and a field's metadata (bounds, `names`), converted where the type
        says (an integer to a float, a list to a tuple)."""
        bare, nullable = without_none(hint)
        if value is None and nullable:
            return None
        if meta.get("parse") is not None:                            # a field that says how it is read
            return meta["parse"](self, value, path)
        if isinstance(bare, type) and hasattr(bare, "parse"):        # a type that reads itself (TaskRef)
            return bare.parse(self, value, path)
        if isinstance(bare, type) and dataclasses.is_dataclass(bare):  # a section
            return self.read(bare, value, path)
        if value is None:
            raise self.fail(f"expected {expected(hint, bounds_of(meta), not self.spec_style)}, got null", path)
        origin, args = typing.get_origin(bare), typing.get_args(bare)
        if origin in (typing.Union, types.UnionType):
            for arg in args:
                try:
                    return self.value(value, arg, path, meta)
                except UserError:
                    continue
            raise self.fail(f"expected {expected(hint, bounds_of(meta), not self.spec_style)}, got {shown(value)}",
                            path)
        if origin is Literal:
            if value in args and type(value) in {type(a) for a in args}:
                return value
            raise self.fail(f"expected {expected(bare)}, got {shown(value)}", path)
        if origin in (list, tuple):
            return self.sequence(value, bare, path, meta)
        if bare in (int, float):
            return self.number(value, path, bare, **bounds_of(meta))
        if bare is bool:
            if not isinstance(value, bool):
                raise self.fail(f"expected true or false, got {shown(value)}", path)
            return value
        if bare is str:
            if not isinstance(value, str):
                raise self.fail(f"expected a string, got {shown(value)}", path)
            if meta.get("names") is not None and value not in meta["names"]:
                raise self.fail(unknown_name_message(path.rpartition(".")[2], value, list(meta["names"])), path)
            return value
        if bare is dict or typing.get_origin(bare) is dict:
            return self.mapping(value, path)
        if bare is Any:
            return value
        raise TypeError(f"{path}: no check for a field of type {hint}: declare it with a type composer.reader knows")

    def sequence(self, value: Any, hint: Any, path: str, meta: Mapping[str, Any]) -> list | tuple:
        """A list (or a tuple, when the type says so) whose items are each checked; a tuple type of fixed length
        (`tuple[float, float]`) holds the length, a settings-style list may not be empty and is refused whole
        (the spec style names the item's own problem)."""
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        fixed = len(args) if origin is tuple and args and args[-1] is not Ellipsis else None
        if (not isinstance(value, (list, tuple)) or (fixed is not None and len(value) != fixed)
                or (not value and not self.spec_style)):
            raise self.fail(f"expected {expected(hint, bounds_of(meta), not self.spec_style)}, got {shown(value)}",
                            path)
        inner = args[0] if args else Any
        try:
            items = [self.value(item, inner, path, meta) for item in value]
        except UserError:
            if self.spec_style:         # the item's own message ("expected a finite number, got inf")
                raise
            raise self.fail(f"expected {expected(hint, bounds_of(meta), True)}, got {shown(value)}", path) from None
        return tuple(items) if origin is tuple else items

    def number(self, value: Any, path: str, kind: type = float, **bounds: Any) -> int | float:
        """An integer or a float within `bounds` (ge, gt, le, lt); floats always finite."""
        number = self._as_number(value, kind)
        if number is None:
            raise self.fail(f"expected {number_text(kind, bounds, not self.spec_style)}, got {shown(value)}", path)
        cap = self.spec_style and kind is int
        if not in_bounds(number, bounds, max_integer=cap):
            if cap and abs(number) > MAX_INTEGER:
                raise self.fail(f"expected an integer of at most {MAX_INTEGER:,} (limit MAX_INTEGER), "
                                f"got {brief(value)}", path)
            finite = kind is float and not math.isfinite(number)
            raise self.fail(f"expected {number_text(kind, bounds, not self.spec_style, finite)}, got "
                            f"{brief(number if self.spec_style else value)}", path)
        return number

    def integer(self, value: Any, path: str, **bounds: Any) -> int:
        return self.number(value, path, int, **bounds)

    def _as_number(self, value: Any, kind: type) -> int | float | None:
        """`value` as a number of `kind`, or None when it is not one (a bool is not a number)."""
        if isinstance(value, bool):
            return None
        if isinstance(value, str) and not self.spec_style:
            try:
                value = float(value)
            except ValueError:
                return None
        if kind is int:
            if isinstance(value, int):
                return value
            if isinstance(value, float) and not self.spec_style and value.is_integer():
                return int(value)
            return None
        return as_float(value) if isinstance(value, (int, float)) else None


def keys_of(cls: type, skip: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The document keys of a dataclass's fields (but `skip`)."""
    return tuple(key_of(f) for f in dataclasses.fields(cls) if f.name not in skip)
