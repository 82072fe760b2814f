"""`composer primitives [NAME]`: the registered layers, their parameters (type, default, meaning) and symbols.

Everything shown is read from the registry (`primitives.registered()`): the one-line description is the first
line of the class docstring, the parameters are the fields of its `Config` dataclass. A field's meaning is its
`metadata["help"]` when the primitive gives one, else the short gloss below, written from the families' module
docstrings (which hold the full formulas: `composer primitives NAME` prints them).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import sys
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from composer.cli.common import print_json
from composer.errors import UserError

# What a Config field means, by field name; (primitive, field) entries where one name means different things.
PARAM_HELP: dict[str | tuple[str, str], str] = {
    "n_heads": "number of heads (null: derived from d_model, about one per 64 channels)",
    "n_kv_heads": "key/value heads, fewer than n_heads for GQA / MQA (null: n_heads)",
    "head_dim": "width of one head (null: d_model / n_heads)",
    "window": "sliding window: attend to and cache at most this many positions (null: the whole context)",
    "rope": "rotary position embeddings on queries and keys",
    "rope_base": "RoPE frequency base",
    "qk_norm": "RMSNorm on queries and keys",
    "forget_gate": "per-head sigmoid forget gate (Forgetting Transformer)",
    "bias": "biases on the projections",
    "expand": "inner width as a multiple of d_model",
    "expand_k": "query/key width as a multiple of d_model",
    "expand_v": "value width as a multiple of d_model",
    "kernel_size": "width of the short causal convolution",
    "output_gate": "swish output gate",
    "gate_rank": "rank of the low-rank forget-gate projection",
    "gate_normalizer": "divisor of the log forget gate",
    "feature_map": "elu: elu + 1 with sum normalisation; identity: scaled q, k and an output norm",
    "d_state": "state size N (per channel for mamba, per head for mamba2)",
    "dt_rank": "rank of the dt projection (null: ceil(d_model / 16))",
    "n_groups": "groups of heads sharing B and C",
    "chunk_size": "chunk length of the chunked parallel form",
    "n_experts": "number of routed experts",
    "top_k": "experts chosen per token",
    "score": "router scores: softmax or sigmoid",
    "n_shared_experts": "experts every token goes through",
    "capacity_factor": "cap on each expert's tokens, the overflow dropped (null: dropless)",
    "aux_loss_coef": "weight of the load-balancing loss",
    "z_loss_coef": "weight of the router z-loss",
    "renormalize": "rescale the chosen experts' weights to sum to 1",
    "conv_bias": "bias on the convolution",
    "c": "RG-LRU decay temperature (Griffin's c = 8)",
    "d_ff": "hidden width (null: from expansion)",
    ("mlp", "kind"): "swiglu (gated, 3 matrices) or gelu (2 matrices)",
    ("mlp", "expansion"): "hidden width as a multiple of d_model (null: 8/3 for swiglu, 4 for gelu)",
    ("moe", "expansion"): "hidden width of each expert as a multiple of d_model",
}


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
    params = [ParamInfo(f.name, type_text(hints[f.name]), default_text(f), field_help(name, f))
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


def field_help(primitive: str, f: dataclasses.Field) -> str:
    return f.metadata.get("help") or PARAM_HELP.get((primitive, f.name)) or PARAM_HELP.get(f.name, "")


def type_text(hint: Any) -> str:
    """A type hint in YAML words: `int`, `int | null`, `swiglu | gelu`."""
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
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else f"known: {', '.join(sorted(known))}"
    raise UserError(f"unknown primitive {name!r} ({hint})")
