"""Settings in sections, addressed by flat key: a setting is a field declared once (composer.fields.option: its
type, default, help text and bounds) and checked everywhere by the one reader (composer/reader.py).

`settings_of(Config)` turns a dataclass of section dataclasses into a table keyed by field name (the flat key);
`flatten` reads user data written flat (`lr: 1e-3`), by section (`optimizer: {lr: 1e-3}`) or both, and
`Setting.check` converts and checks one value. Errors are UserErrors naming `path.key`, with a "did you mean"
for unknown keys.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

from composer.errors import UserError
from composer.fields import choices_of, help_of
from composer.names import unknown_name_message
from composer.reader import Reader, join


@dataclass(frozen=True)
class Setting:
    """One setting: its flat key, the section holding it, and its field's declaration (type, default, help,
    bounds: composer.fields.option)."""

    key: str
    section: str
    type: Any                       # the field's annotation, e.g. int | None, tuple[float, float]
    default: Any
    field: dataclasses.Field

    @property
    def help(self) -> str:
        return help_of(self.field)

    @property
    def choices(self) -> tuple[str, ...] | None:
        return choices_of(self.type) or self.field.metadata.get("names")

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

    def check(self, value: Any, path: str) -> Any:
        """`value` converted to the setting's type and checked against its declaration (the reader's settings
        style: numbers given as text, like YAML's `3e-3`, included); a UserError naming `path` otherwise."""
        return Reader().value(value, self.type, path, self.field.metadata)


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
            table[f.name] = Setting(f.name, section.name, hints[f.name], getattr(getattr(default, section.name),
                                    f.name), f)
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


def _kind(annotation: Any) -> tuple[type, bool, Any]:
    """(base type, whether None is allowed, the annotation without None)."""
    args = typing.get_args(annotation)
    optional = (typing.get_origin(annotation) in (typing.Union, types.UnionType)) and type(None) in args
    if optional:
        annotation = next(a for a in args if a is not type(None))
    origin = typing.get_origin(annotation)
    return (origin or annotation), optional, annotation
