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
and bounds do not say enough). Fields are declared with `composer.fields.option` (help, bounds), plus:

    label       names or documents the model without changing it: left out of the canonical form, so it
                does not change `arch_id` (the spec's name and description, a layer's name)
    requires    only has an effect when the named field is set (Loop.ponder_cost needs `halting`)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from composer.fields import option
from primitives.base import get_primitive, make_config

Combine = Literal["sum", "mean", "concat", "concat_proj"]
AdapterKind = Literal["linear", "lora"]


@dataclass(frozen=True)
class Layer:
    """One primitive. `params` are those written in the spec (defaults are resolved separately)."""

    op: str = option(help="the primitive")
    params: dict[str, Any] = field(default_factory=dict)
    name: str | None = option(None, "a name that a later `share` refers to", label=True)
    share: str | None = option(None, "reuse the weights of the earlier layer of this name")
    adapter: dict[str, Any] | None = option(None, "a shared layer's own adapter: linear, or lora with a rank")


@dataclass(frozen=True)
class Repeat:
    times: int = option(help="how many copies of the body", ge=1)
    body: tuple[Node, ...] = option(help="the layers to repeat")


@dataclass(frozen=True)
class Loop:
    """Weight-tied recurrent depth.

    inject:    re-inject the loop's input at every iteration after the first (`add`, or `concat` followed by
               a learned d -> d adapter over [h, x]); None to just iterate.
    iteration_embedding: add a learned per-iteration vector before each pass.
    grad_iters: backpropagate through only the last `grad_iters` iterations (truncated BPTT in depth).
    halting:   "act" for adaptive computation time (per-token halting, ponder cost added to the loss).
    """

    times: int = option(help="how many iterations", ge=1)
    body: tuple[Node, ...] = option(help="the layers to loop")
    inject: Literal["add", "concat"] | None = option(None, "re-inject the loop's input after the first iteration")
    iteration_embedding: bool = option(False, "add a learned per-iteration vector before each pass")
    grad_iters: int | None = option(None, "backpropagate through the last N iterations only", ge=1)
    halting: Literal["act"] | None = option(None, "act: adaptive computation time (per-token halting)")
    ponder_cost: float = option(0.01, "weight of ACT's ponder cost in the loss", ge=0, requires="halting")


@dataclass(frozen=True)
class Parallel:
    """Mixers on the same (normed) input. `split` gives each branch a fraction of the channels."""

    branches: tuple[Node, ...] = option(help="the mixers, at least two")
    combine: Combine = option("sum", "how the branch outputs are combined")
    split: tuple[float, ...] | None = option(None, "each branch's fraction of the channels (concat)")

    def widths(self, d_model: int) -> list[int]:
        """Each branch's width: all of d_model, or its `split` fraction."""
        return split_widths(d_model, self.split) if self.split is not None else [d_model] * len(self.branches)


Node = Layer | Repeat | Loop | Parallel
# The keys of a layer mapping that are not parameters of its primitive.
LAYER_KEYS = tuple(f.name for f in dataclasses.fields(Layer) if f.name != "params")


@dataclass(frozen=True, kw_only=True)
class ArchSpec:
    """A whole language model: embedding, `layers`, final norm, LM head. Fields in their YAML order."""

    name: str | None = option(None, "the architecture's name", label=True)
    description: str | None = option(None, "what the architecture is", label=True)
    d_model: int = option(help="the model width", ge=1)
    vocab_size: int = option(256, "tokens in the vocabulary", ge=1)
    max_seq_len: int = option(1024, "the longest context", ge=1)
    norm: Literal["rmsnorm", "layernorm"] = option("rmsnorm", "the normalisation of every sub-layer")
    norm_position: Literal["pre", "post", "sandwich"] = option(
        "pre", "normalise each sub-layer's input (pre), its residual sum (post), or its input and its output before "
        "the residual add (sandwich: Gemma 2 and 3)")
    tie_embeddings: bool = option(True, "the LM head shares the embedding's weights")
    meta_tokens: int = option(0, "learned tokens prepended to every sequence (Hymba's meta tokens): every layer "
                              "sees them, decoding starts after them, their logits are dropped", ge=0)
    dropout: float = option(0.0, "dropout on each sub-layer's output", ge=0, lt=1)
    defaults: dict[str, dict[str, Any]] = option(help="per-primitive parameters every layer of it starts from",
                                                 factory=dict)
    layers: tuple[Node, ...] = option(help="the list of layers")

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
