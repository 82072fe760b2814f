"""The architecture spec: the DSL's dataclasses and their plain-data (YAML) form.

An `ArchSpec` holds model-wide fields and a tuple of layer nodes:

    Layer(op, params, name, share, adapter)   one residual sub-layer `x + op(norm(x))`
    Repeat(times, body)              the body `times` times with fresh weights
    Loop(times, body, ...)           the body `times` times with shared weights (recurrent depth)
    Parallel(branches, combine, split)   several mixers on one input, outputs combined

The spec is the single source of truth: the module, the costs and the export derive from it.
Parsing and validation are in `composer.spec_parse`, the canonical form and `arch_id` in
`composer.canonical_form`.

Every list of fields (what the parser accepts, `to_dict`, the canonical form behind `arch_id`, export) is read
from the dataclasses, so a new model-wide or node field is one line here (plus a parser rule when its type
and bounds do not say enough). Field metadata:

    label       names or documents the model without changing it: left out of the canonical form, so it
                does not change `arch_id` (the spec's name and description, a layer's name)
    requires    only has an effect when the named field is set (Loop.ponder_cost needs `halting`)
    ge, gt, le, lt   numeric bounds the parser checks (integers are >= 1 unless `ge` says otherwise)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from primitives.base import get_primitive, make_config

Combine = Literal["sum", "mean", "concat", "concat_proj"]
LABEL = {"label": True}


@dataclass(frozen=True)
class Layer:
    """One primitive. `params` are those written in the spec (defaults are resolved separately)."""

    op: str
    params: dict[str, Any] = field(default_factory=dict)
    name: str | None = field(default=None, metadata=LABEL)
    share: str | None = None
    adapter: dict[str, Any] | None = None


@dataclass(frozen=True)
class Repeat:
    times: int
    body: tuple[Node, ...]


@dataclass(frozen=True)
class Loop:
    """Weight-tied recurrent depth.

    inject:    re-inject the loop's input at every iteration after the first (`add`, or `concat` followed by
               a learned d -> d adapter over [h, x]); None to just iterate.
    iteration_embedding: add a learned per-iteration vector before each pass.
    grad_iters: backpropagate through only the last `grad_iters` iterations (truncated BPTT in depth).
    halting:   "act" for adaptive computation time (per-token halting, ponder cost added to the loss).
    """

    times: int
    body: tuple[Node, ...]
    inject: Literal["add", "concat"] | None = None
    iteration_embedding: bool = False
    grad_iters: int | None = None
    halting: Literal["act"] | None = None
    ponder_cost: float = field(default=0.01, metadata={"ge": 0, "requires": "halting"})


@dataclass(frozen=True)
class Parallel:
    """Mixers on the same (normed) input. `split` gives each branch a fraction of the channels."""

    branches: tuple[Node, ...]
    combine: Combine = "sum"
    split: tuple[float, ...] | None = None

    def widths(self, d_model: int) -> list[int]:
        """Each branch's width: all of d_model, or its `split` fraction."""
        return split_widths(d_model, self.split) if self.split is not None else [d_model] * len(self.branches)


Node = Layer | Repeat | Loop | Parallel
# The keys of a layer mapping that are not parameters of its primitive.
LAYER_KEYS = tuple(f.name for f in dataclasses.fields(Layer) if f.name != "params")


@dataclass(frozen=True, kw_only=True)
class ArchSpec:
    """A whole language model: embedding, `layers`, final norm, LM head. Fields in their YAML order."""

    name: str | None = field(default=None, metadata=LABEL)
    description: str | None = field(default=None, metadata=LABEL)
    d_model: int
    vocab_size: int = 256
    max_seq_len: int = 1024
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    norm_position: Literal["pre", "post"] = "pre"
    tie_embeddings: bool = True
    dropout: float = field(default=0.0, metadata={"ge": 0, "lt": 1})
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    layers: tuple[Node, ...]

    def replace(self, **changes: Any) -> ArchSpec:
        return dataclasses.replace(self, **changes)

    def resolved_params(self, layer: Layer, width: int | None = None) -> dict[str, Any]:
        """All parameters of a layer's primitive at `width` (default d_model), derived defaults written out:
        Config defaults <- spec `defaults` <- the layer's own, then `Primitive.resolve`."""
        cls = get_primitive(layer.op)
        return dataclasses.asdict(cls.resolve(self.config(layer), width or self.d_model))

    def config(self, layer: Layer) -> Any:
        cls = get_primitive(layer.op)
        return make_config(cls, {**self.defaults.get(layer.op, {}), **layer.params})

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the YAML form) that `load_spec` reads back to an identical spec: every field but the
        unset ones (None, empty), so that a dumped spec shows all its model-wide settings."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {key: plain(value) for key, value in values.items() if value is not None and value != {}}


def is_label(f: dataclasses.Field) -> bool:
    """Whether a field only names or documents the model (see the module docstring)."""
    return bool(f.metadata.get("label"))


def default_of(f: dataclasses.Field) -> Any:
    """A field's default value (`dataclasses.MISSING` for a required field)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def plain(value: Any) -> Any:
    """A field value as plain data: nodes in their YAML form, tuples as lists, mappings copied."""
    if isinstance(value, Node):
        return node_to_data(value)
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def options_data(node: Node, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The node's fields (but `skip`) that differ from their default, as plain data."""
    return {f.name: plain(getattr(node, f.name)) for f in dataclasses.fields(node)
            if f.name not in skip and getattr(node, f.name) != default_of(f)}


def node_to_data(node: Node) -> Any:
    """A node in its YAML form; options left at their default are not written."""
    if isinstance(node, Layer):
        if node.share is not None:  # the op and params are the shared layer's
            return {"share": node.share, **options_data(node, skip=("op", "params", "name", "share"))}
        data = {"op": node.op, **options_data(node, skip=("op", "params")), **plain(node.params)}
        return node.op if len(data) == 1 else data
    if isinstance(node, Repeat):
        return {"repeat": node.times, **options_data(node, skip=("times",))}
    if isinstance(node, Loop):
        return {"loop": options_data(node)}
    return {"parallel": plain(node.branches), **options_data(node, skip=("branches",))}


def iter_layers(nodes: tuple[Node, ...]) -> Iterator[Layer]:
    """Every Layer in document order (a Repeat's body once per repetition)."""
    for node in nodes:
        if isinstance(node, Layer):
            yield node
        elif isinstance(node, Repeat):
            for _ in range(node.times):
                yield from iter_layers(node.body)
        elif isinstance(node, Loop):
            yield from iter_layers(node.body)
        else:
            yield from iter_layers(node.branches)


def flatten(nodes: tuple[Node, ...]) -> tuple[Node, ...]:
    """Expand every Repeat (fresh weights each time is the same as writing the body out)."""
    out: list[Node] = []
    for node in nodes:
        if isinstance(node, Repeat):
            for _ in range(node.times):
                out.extend(flatten(node.body))
        elif isinstance(node, Loop):
            out.append(dataclasses.replace(node, body=flatten(node.body)))
        elif isinstance(node, Parallel):
            out.append(dataclasses.replace(node, branches=flatten(node.branches)))
        else:
            out.append(node)
    return tuple(out)


def split_widths(d_model: int, split: list[float] | tuple[float, ...]) -> list[int]:
    """Channel counts per branch; the last branch takes the remainder so they sum to d_model."""
    widths = [int(round(d_model * s)) for s in split[:-1]]
    return widths + [d_model - sum(widths)]
