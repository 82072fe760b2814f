"""Typed settings read from dataclass fields, so a setting is declared once and checked everywhere.

A field declared with `setting(default, help, ...)` carries its help text and bounds; its annotation gives its
type. `settings_of(Config)` turns a dataclass of section dataclasses into a table keyed by field name (the
flat key); `flatten` reads user data written flat (`lr: 1e-3`), by section (`optimizer: {lr: 1e-3}`) or
both, and `check` converts and checks one value. Errors are UserErrors naming `path.key`, with a "did you
mean" for unknown keys.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from composer.errors import UserError
from composer.names import unknown_name_message
from composer.yaml_source import join


def setting(default: Any, help: str, *, choices: tuple[str, ...] | None = None, minimum: float | None = None,
            positive: bool = False, below: float | None = None) -> Any:
    """A dataclass field with its help text and the bounds its values are checked against (`below`: an exclusive
    upper bound)."""
    return field(default=default, metadata={"help": help, "choices": choices, "minimum": minimum,
                                            "positive": positive, "below": below})


@dataclass(frozen=True)
class Setting:
    """One setting: its flat key, the section holding it, and how its values are checked."""

    key: str
    section: str
    type: Any                       # the field's annotation, e.g. int | None, tuple[float, float]
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    positive: bool = False
    below: float | None = None

    @property
    def kind(self) -> type:
        """The value type without `None`: bool, int, float, str or tuple."""
        return _kind(self.type)[0]

    @property
    def optional(self) -> bool:
        return _kind(self.type)[1]

    @property
    def length(self) -> int | None:
        """How many items a tuple setting takes (None: any number)."""
        args = typing.get_args(_kind(self.type)[2])
        return None if not args or args[-1] is Ellipsis else len(args)


def settings_of(config: Any) -> dict[str, Setting]:
    """Flat key -> Setting for every field of every section of the dataclass `config`."""
    table: dict[str, Setting] = {}
    default = config()
    sections = dataclasses.fields(config)
    for section in sections:
        cls = type(getattr(default, section.name))
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in table or f.name in {s.name for s in sections}:
                raise TypeError(f"setting {f.name!r} of {cls.__name__} is not a unique name")
            meta = f.metadata
            table[f.name] = Setting(f.name, section.name, hints[f.name], getattr(getattr(default, section.name),
                                    f.name), meta.get("help", ""), meta.get("choices"), meta.get("minimum"),
                                    meta.get("positive", False), meta.get("below"))
    return table


def flatten(data: Any, table: dict[str, Setting], path: str,
            reserved: dict[str, str] | None = None) -> dict[str, tuple[Any, str]]:
    """Flat key -> (value as given, its path) from flat keys and/or sections; unknown or repeated keys and
    `reserved` ones (key -> why) are errors."""
    if not isinstance(data, dict):
        raise UserError(f"expected a mapping of settings, got {type(data).__name__}", path or None)
    sections = {s.section for s in table.values()}
    out: dict[str, tuple[Any, str]] = {}

    def add(key: str, value: Any, where: str) -> None:
        if key in out:
            raise UserError(f"given twice (also at {out[key][1]})", where)
        if reserved and key in reserved:
            raise UserError(reserved[key], where)
        out[key] = (value, where)

    for key, value in data.items():
        where = join(path, str(key))
        if key in table:
            add(key, value, where)
        elif key in sections:
            if not isinstance(value, dict):
                raise UserError(f"expected a mapping (the {key} section), got {value!r}", where)
            members = [k for k, s in table.items() if s.section == key]
            for inner, item in value.items():
                if inner not in members:
                    raise UserError(unknown_name_message(f"{key} setting", inner, members), join(where, str(inner)))
                add(inner, item, join(where, str(inner)))
        else:
            raise UserError(unknown_name_message("field", key, sorted(table) + sorted(sections)), where)
    return out


def check(s: Setting, value: Any, path: str) -> Any:
    """`value` converted to the setting's type (numbers given as strings, like YAML's `3e-3`, included)."""
    if value is None:
        if s.optional:
            return None
        raise UserError(f"expected {describe(s)}, got null", path)
    if s.kind is tuple:
        if not isinstance(value, (list, tuple)) or not value or (s.length and len(value) != s.length):
            raise UserError(f"expected {describe(s)}, got {value!r}", path)
        items = tuple(_number(v, float) for v in value)
        if any(v is None or not _in_bounds(s, v) for v in items):
            raise UserError(f"expected {describe(s)}, got {value!r}", path)
        return items
    if s.kind is bool:
        if not isinstance(value, bool):
            raise UserError(f"expected {describe(s)}, got {value!r}", path)
        return value
    if s.kind is str:
        if not isinstance(value, str):
            raise UserError(f"expected {describe(s)}, got {value!r}", path)
        if s.choices and value not in s.choices:
            raise UserError(unknown_name_message(s.key, value, list(s.choices)), path)
        return value
    number = _number(value, s.kind)
    if number is None or not _in_bounds(s, number):
        raise UserError(f"expected {describe(s)}, got {value!r}", path)
    return number


def describe(s: Setting) -> str:
    """What a value must be, in words: "an integer >= 0", "a positive number", "one of cosine, wsd"."""
    if s.kind is bool:
        return "true or false"
    if s.kind is str:
        return f"one of {', '.join(s.choices)}" if s.choices else "a string"
    number = "integer" if s.kind is int else "number"
    if s.kind is tuple:
        count = f"{s.length} " if s.length else ""
        bound = "positive " if s.positive else ""
        tail = f" >= {s.minimum:g}" if s.minimum is not None else ""
        return f"a list of {count}{bound}numbers{tail}{_below(s)}"
    if s.positive:
        return f"a positive {number}{_below(s)}"
    article = "an" if number == "integer" else "a"
    return f"{article} {number}" + (f" >= {s.minimum:g}" if s.minimum is not None else "") + _below(s)


def _below(s: Setting) -> str:
    return f" below {s.below:g}" if s.below is not None else ""


def _kind(annotation: Any) -> tuple[type, bool, Any]:
    """(base type, whether None is allowed, the annotation without None)."""
    args = typing.get_args(annotation)
    optional = (typing.get_origin(annotation) in (typing.Union, types.UnionType)) and type(None) in args
    if optional:
        annotation = next(a for a in args if a is not type(None))
    origin = typing.get_origin(annotation)
    return (origin or annotation), optional, annotation


def _number(value: Any, kind: type) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or value != value or value in (float("inf"), float("-inf")):
        return None
    if kind is int:
        return int(value) if float(value).is_integer() else None
    return float(value)


def _in_bounds(s: Setting, value: float) -> bool:
    if s.positive and not value > 0:
        return False
    if s.below is not None and not value < s.below:
        return False
    return s.minimum is None or value >= s.minimum
