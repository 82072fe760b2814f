"""`composer primitives [NAME]`: the registered layers, their parameters (type, default, meaning) and symbols.

Everything shown is read from the registry (`primitives.registered()`): the one-line description is the first
line of the class docstring, the parameters are the fields of its `Config` dataclass, each with the help text it
was declared with (`composer.fields.option`; the families' module docstrings hold the full formulas:
`composer primitives NAME` prints them).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
import typing
from dataclasses import dataclass
from typing import Any

from composer.cli.common import print_json
from composer.errors import UserError
from composer.fields import help_of, type_text
from composer.names import suggestion


@dataclass
class ParamInfo:
    name: str
    type: str
    default: str
    help: str


@dataclass
class PrimitiveInfo:
    name: str
    symbol: str
    kind: str
    summary: str
    params: list[ParamInfo]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "primitives", help="list the layers a spec can use, with their parameters",
        description="The registered primitives (layers usable by name in a spec's layers): stripe symbol, kind, "
                    "a one-line description and each parameter's type, default and meaning. With NAME: that "
                    "primitive in detail, with its documented formulas.")
    parser.add_argument("name", nargs="?", help="one primitive to show in detail (e.g. mamba2)")
    parser.add_argument("--json", action="store_true", help="print the same facts as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.name is None:
        infos = all_primitives()
        if args.json:
            print_json([info.as_dict() for info in infos])
        else:
            print(format_list(infos))
        return 0
    info = primitive_info(args.name)
    if args.json:
        print_json(info.as_dict() | {"doc": full_doc(args.name)})
    else:
        print(format_detail(info, full_doc(args.name)))
    return 0


def all_primitives() -> list[PrimitiveInfo]:
    """Every registered primitive, token mixers first, each group by name."""
    from primitives import registered

    infos = [primitive_info(name) for name in registered()]
    return sorted(infos, key=lambda i: (i.kind != "token_mixer", i.name))


def primitive_info(name: str) -> PrimitiveInfo:
    """The facts `composer primitives` shows for one primitive; a UserError for an unknown name."""
    cls = _primitive_class(name)
    hints = typing.get_type_hints(cls.Config)
    params = [ParamInfo(f.name, type_text(hints[f.name]), default_text(f), help_of(f))
              for f in dataclasses.fields(cls.Config)]
    return PrimitiveInfo(name, primitive_symbol(name), cls.kind.replace("_", " "), _summary(cls), params)


def primitive_symbol(name: str) -> str:
    """The primitive's letter(s) in stripes such as `A M S2` (`Primitive.symbol`)."""
    return _primitive_class(name).symbol


def full_doc(name: str) -> str:
    """The class docstring, then the family module's docstring (formulas, parameter counts)."""
    cls = _primitive_class(name)
    parts = [inspect.cleandoc(cls.__doc__ or ""), inspect.getdoc(sys.modules[cls.__module__]) or ""]
    return "\n\n".join(p for p in parts if p)


def default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def format_list(infos: list[PrimitiveInfo]) -> str:
    lines = [f"{len(infos)} primitives, used by name in a spec's layers: `- mamba2`, `- {{op: attention, "
             "window: 128}`.",
             "Each as name (stripe symbol, kind): description, then its parameters (type, default, meaning).",
             "`composer primitives NAME` shows one in detail.", ""]
    for info in infos:
        lines.append(f"{info.name} ({info.symbol}, {info.kind}): {info.summary}")
        lines.extend(_param_lines(info.params, indent="    "))
        lines.append("")
    return "\n".join(lines).rstrip()


def format_detail(info: PrimitiveInfo, doc: str) -> str:
    lines = [f"{info.name}: {info.summary}", f"  symbol {info.symbol}, {info.kind}", "",
             "parameters (type, default, meaning):", *_param_lines(info.params, indent="  ")]
    example = next((p for p in info.params if p.default not in ("null", "(required)")), None)
    use = f"{{op: {info.name}, {example.name}: {example.default}}}" if example else info.name
    if doc.startswith(info.summary):        # the summary is the title already
        doc = doc[len(info.summary):].lstrip("\n")
    lines += ["", f"in a spec: layers: [{use}, ...]", "", doc]
    return "\n".join(lines).rstrip()


def _param_lines(params: list[ParamInfo], indent: str) -> list[str]:
    if not params:
        return [f"{indent}(no parameters)"]
    widths = [max(len(getattr(p, key)) for p in params) for key in ("name", "type", "default")]
    return [f"{indent}{p.name:<{widths[0]}}  {p.type:<{widths[1]}}  {p.default:<{widths[2]}}  {p.help}".rstrip()
            for p in params]


def _summary(cls: type) -> str:
    doc = cls.__doc__ or inspect.getdoc(sys.modules[cls.__module__]) or ""  # its own docstring, not Primitive's
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _primitive_class(name: str) -> type:
    from primitives import registered

    known = registered()
    if name in known:
        return known[name]
    raise UserError(f"unknown primitive {name!r} ({suggestion(name, list(known), n=3)})")
