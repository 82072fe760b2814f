"""The architecture spec: dataclasses for the DSL, and turning YAML / dicts into them with clear errors.

An `ArchSpec` holds model-wide fields and a tuple of layer nodes:

    Layer(op, params, name, share)   one residual sub-layer `x + op(norm(x))`
    Repeat(times, body)              the body `times` times with fresh weights
    Loop(times, body, ...)           the body `times` times with shared weights (recurrent depth)
    Parallel(branches, combine, split)   several mixers on one input, outputs combined

The spec is the single source of truth: the graph, the module, the costs and the export derive from it.
Parsing is in `composer.spec_parse`; this module holds the data and its plain-data (YAML) form.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from primitives.base import get_primitive, make_config

Combine = Literal["sum", "mean", "concat", "concat_proj"]


@dataclass(frozen=True)
class Layer:
    """One primitive. `params` are those written in the spec (defaults are resolved separately)."""

    op: str
    params: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
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
    ponder_cost: float = 0.01


@dataclass(frozen=True)
class Parallel:
    """Mixers on the same (normed) input. `split` gives each branch a fraction of the channels."""

    branches: tuple[Node, ...]
    combine: Combine = "sum"
    split: tuple[float, ...] | None = None


Node = Layer | Repeat | Loop | Parallel

MODEL_FIELDS = ("name", "description", "d_model", "vocab_size", "max_seq_len", "norm", "norm_position",
                "tie_embeddings", "dropout", "defaults", "layers", "pattern", "legend")


@dataclass(frozen=True)
class ArchSpec:
    """A whole language model: embedding, `layers`, final norm, LM head."""

    d_model: int
    layers: tuple[Node, ...]
    vocab_size: int = 256
    max_seq_len: int = 1024
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    norm_position: Literal["pre", "post"] = "pre"
    tie_embeddings: bool = True
    dropout: float = 0.0
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    name: str | None = None
    description: str | None = None

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
        """Plain data (the YAML form) that `load_spec` reads back to an identical spec."""
        out: dict[str, Any] = {}
        if self.name:
            out["name"] = self.name
        if self.description:
            out["description"] = self.description
        out.update(d_model=self.d_model, vocab_size=self.vocab_size, max_seq_len=self.max_seq_len,
                   norm=self.norm, norm_position=self.norm_position, tie_embeddings=self.tie_embeddings,
                   dropout=self.dropout)
        if self.defaults:
            out["defaults"] = {k: dict(v) for k, v in self.defaults.items()}
        out["layers"] = [node_to_data(n) for n in self.layers]
        return out


def node_to_data(node: Node) -> Any:
    if isinstance(node, Layer):
        if node.share is not None:
            data: dict[str, Any] = {"share": node.share}
            if node.adapter:
                data["adapter"] = dict(node.adapter)
            return data
        if not node.params and node.name is None:
            return node.op
        data = {"op": node.op}
        if node.name is not None:
            data["name"] = node.name
        data.update(node.params)
        return data
    if isinstance(node, Repeat):
        return {"repeat": node.times, "body": [node_to_data(n) for n in node.body]}
    if isinstance(node, Loop):
        loop: dict[str, Any] = {"times": node.times, "body": [node_to_data(n) for n in node.body]}
        for key in ("inject", "grad_iters", "halting"):
            if getattr(node, key) is not None:
                loop[key] = getattr(node, key)
        if node.iteration_embedding:
            loop["iteration_embedding"] = True
        if node.halting is not None:
            loop["ponder_cost"] = node.ponder_cost
        return {"loop": loop}
    data = {"parallel": [node_to_data(n) for n in node.branches], "combine": node.combine}
    if node.split is not None:
        data["split"] = list(node.split)
    return data


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
