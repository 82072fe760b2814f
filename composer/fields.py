"""One declaration for every field a user writes, and the words for what a value of it must be.

Every dataclass read from a document (a primitive's `Config`, the spec's nodes, the training settings, a search
space's sections, a confirmation, a ladder) declares its fields the same way:

    rope_base: float = option(10000.0, "RoPE frequency base", gt=1)
    norm: Literal["rmsnorm", "layernorm"] = option("rmsnorm", "the normalisation of every sub-layer")

The annotation is the type (bool, int, float, str, a `Literal` of choices, a list or tuple of them, a class with
a `parse` classmethod such as `composer.tasks.TaskRef`, any of them `| None`); the choices come from the
`Literal`, never from a second list. `option` puts the help text and the numeric bounds (`ge`, `gt`, `le`, `lt`)
in the field's metadata, with `names` (a name from an open registry, refused with "did you mean"), `key` (the
document's key when it differs from the field's name) and `parse` (a function `(reader, value, path) -> value`
for a field whose form no type says, such as confirm's sizes `[1M, 10x]`). `composer.reader.Reader` reads
documents into these dataclasses, and the same checks hold for a Config built in Python
(`primitives.base.Primitive.validate`).

This is a ground-floor module, like composer/names.py, composer/errors.py and composer/limits.py: it imports the
standard library only, so the primitives may import it and the standalone export inlines it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from composer.limits import MAX_INTEGER

BOUND_CHECKS = {"ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt}
NO_METADATA: Mapping[str, Any] = types.MappingProxyType({})


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING,
           ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
           names: tuple[str, ...] | None = None, key: str | None = None, parse: Any = None, label: bool = False,
           requires: str | None = None) -> Any:
    """A dataclass field with its help text and what its values are held to (see the module docstring).
    Without `default` or `factory` the field is required. `label` and `requires` are the spec's (composer/spec.py)."""
    given = {"ge": ge, "gt": gt, "le": le, "lt": lt, "names": None if names is None else tuple(names), "key": key,
             "parse": parse, "label": label or None, "requires": requires}
    metadata = {"help": help, **{name: value for name, value in given.items() if value is not None}}
    return dataclasses.field(default=default, default_factory=factory, metadata=metadata)


def bounds_of(f: dataclasses.Field | Mapping[str, Any]) -> dict[str, Any]:
    """The numeric bounds of a field (or of a metadata mapping): {"ge": 1}, {"gt": 0, "lt": 1}, {}."""
    meta = f.metadata if isinstance(f, dataclasses.Field) else f
    return {key: meta[key] for key in BOUND_CHECKS if meta.get(key) is not None}


def help_of(f: dataclasses.Field) -> str:
    return f.metadata.get("help") or ""


def key_of(f: dataclasses.Field) -> str:
    """The field's key in a document: its name, or the `key` it was declared with."""
    return f.metadata.get("key") or f.name


def has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def without_none(hint: Any) -> tuple[Any, bool]:
    """(the type without `None`, whether `None` is allowed): `int | None` -> (int, True)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint):
        rest = tuple(arg for arg in typing.get_args(hint) if arg is not type(None))
        return (rest[0] if len(rest) == 1 else functools.reduce(operator.or_, rest)), True
    return hint, False


def choices_of(hint: Any) -> tuple[Any, ...] | None:
    """The choices of a `Literal` type (through `| None`), else None."""
    hint, _ = without_none(hint)
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else None


# ----------------------------------------------------------------------------------------------
# Numbers


def as_float(value: int | float) -> float:
    """`float(value)`, or inf for an integer past the float range (which the finite check then refuses)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def finite_number(value: Any) -> bool:
    """Whether `value` is an int or float (not a bool) with a finite float value."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(as_float(value))


def in_bounds(value: float, bounds: Mapping[str, Any], max_integer: bool = True) -> bool:
    """Whether a number is finite, inside `bounds` (ge, gt, le, lt) and, when an integer and `max_integer`,
    within MAX_INTEGER."""
    if max_integer and isinstance(value, int) and abs(value) > MAX_INTEGER:
        return False
    return math.isfinite(as_float(value)) and all(BOUND_CHECKS[key](value, bound) for key, bound in bounds.items()
                                                  if key in BOUND_CHECKS)


def range_text(bounds: Mapping[str, Any]) -> str:
    """` in [0, 1)`, ` >= 0`, ... for numeric bounds in symbols; empty without bounds."""
    low = next(((key, bounds[key]) for key in ("ge", "gt") if key in bounds), None)
    high = next(((key, bounds[key]) for key in ("le", "lt") if key in bounds), None)
    if low and high:
        return f" in {'[' if low[0] == 'ge' else '('}{low[1]}, {high[1]}{']' if high[0] == 'le' else ')'}"
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return "".join(f" {signs[pair[0]]} {pair[1]}" for pair in (low, high) if pair)


def _number_words(bound: float) -> str:
    return f"{bound:,}" if isinstance(bound, int) else f"{bound:g}"


def number_text(kind: type, bounds: Mapping[str, Any], words: bool = False, finite: bool = False,
                plural: bool = False) -> str:
    """What a number must be: "an integer >= 1", "a number in [0, 1)" (symbols), "a positive number below
    1e+30", "an integer >= 0", "a fraction in (0, 1)" (words: `positive` for > 0, `below` and `at most` for the
    upper bound)."""
    noun = "integer" if kind is int else "number"
    adjectives = ["finite"] if finite else []
    if not words:
        tail = range_text(bounds)
    elif kind is float and dict(bounds) == {"gt": 0, "lt": 1}:
        noun, tail = "fraction", " in (0, 1)"
    else:
        if bounds.get("gt") == 0:
            adjectives.append("positive")
        tail = "".join(text.format(_number_words(bounds[key])) for key, text in
                       (("ge", " >= {}"), ("gt", " > {}"), ("lt", " below {}"), ("le", " at most {}"))
                       if key in bounds and not (key == "gt" and bounds[key] == 0))
    phrase = " ".join([*adjectives, noun + ("s" if plural else "")]) + tail
    if plural:
        return phrase
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def expected(hint: Any, bounds: Mapping[str, Any] = NO_METADATA, words: bool = False) -> str:
    """What a value of type `hint` within `bounds` must be, in words: "an integer >= 1 or null",
    "one of add, concat", "a list of 2 numbers >= 0 below 1", "true or false"."""
    hint, nullable = without_none(hint)
    text = _expected(hint, bounds, words)
    return f"{text} or null" if nullable else text


def _expected(hint: Any, bounds: Mapping[str, Any], words: bool, plural: bool = False) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected(a, bounds, words, plural) for a in args)
    if origin in (list, tuple):
        fixed = len(args) if origin is tuple and args and args[-1] is not Ellipsis else None
        inner = _expected(args[0] if args else Any, bounds, words, plural=True)
        return f"a list of {f'{fixed} ' if fixed else ''}{inner}"
    if hint in (int, float):
        return number_text(hint, bounds, words, plural=plural)
    if plural:
        return {bool: "true or false values", str: "strings"}.get(hint, "values")
    return {bool: "true or false", str: "a string"}.get(hint, getattr(hint, "__name__", str(hint)))


def type_text(hint: Any) -> str:
    """A type in YAML words: `int`, `int | null`, `swiglu | gelu`, `list of int`."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " | ".join(str(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if origin in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return f"list of {type_text(args[0])}" if args else "list"
    return getattr(hint, "__name__", str(hint))
