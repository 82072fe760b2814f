"""Spec -> networkx graph, the canonical JSON form, and `arch_id`.

The canonical form expands `repeat` (fresh weights each time is the same as writing the body out), writes
every primitive parameter out (Config defaults and spec `defaults` resolved), drops labels that do not
change the model (layer names, the spec's name) and refers to shared layers by position. Two specs that
build the same model therefore have the same canonical JSON, and `arch_id` is its hash.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import networkx as nx

from composer.spec import ArchSpec, Layer, Loop, Node, Parallel, flatten, split_widths
from primitives.base import get_primitive

MODEL_KEYS = ("d_model", "vocab_size", "max_seq_len", "norm", "norm_position", "tie_embeddings", "dropout")


def canonical(spec: ArchSpec) -> dict[str, Any]:
    """The canonical plain-data form of a spec (see the module docstring)."""
    indices: dict[str, int] = {}
    counter = iter(range(1 << 30))

    def node(n: Node, width: int = spec.d_model) -> dict[str, Any]:
        if isinstance(n, Layer):
            index = next(counter)
            if n.share is not None:
                out: dict[str, Any] = {"share": indices[n.share]}
                if n.adapter:
                    out["adapter"] = dict(sorted(n.adapter.items()))
                return out
            if n.name is not None and n.name not in indices:
                indices[n.name] = index
            return {"op": n.op, "params": dict(sorted(spec.resolved_params(n, width).items()))}
        if isinstance(n, Loop):
            return {"loop": {"times": n.times, "inject": n.inject, "iteration_embedding": n.iteration_embedding,
                             "grad_iters": n.grad_iters, "halting": n.halting,
                             "ponder_cost": n.ponder_cost if n.halting else None,
                             "body": [node(b) for b in n.body]}}
        assert isinstance(n, Parallel)
        widths = _branch_widths(spec.d_model, n)
        return {"parallel": [node(b, w) for b, w in zip(n.branches, widths)], "combine": n.combine,
                "split": list(n.split) if n.split else None}

    out = {key: getattr(spec, key) for key in MODEL_KEYS}
    out["layers"] = [node(n) for n in flatten(spec.layers)]
    return out


def canonical_json(spec: ArchSpec) -> str:
    return json.dumps(canonical(spec), sort_keys=True, separators=(",", ":"))


def arch_id(spec: ArchSpec) -> str:
    """A short stable hash of the canonical form: equal for specs that build the same model."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:16]


def to_graph(spec: ArchSpec) -> nx.DiGraph:
    """The data-flow graph: embed -> sub-layers (loops and parallel blocks as explicit nodes) -> head.

    Primitive nodes carry `op`, `kind`, `params`, `width`; `shares` names the node whose weights they use.
    Loop nodes have a `loop_back` edge from the end of their body; parallel nodes fan out and a combine node
    fans back in.
    """
    g = nx.DiGraph(arch_id=arch_id(spec), d_model=spec.d_model, vocab_size=spec.vocab_size)
    g.add_node("embed", kind="embedding", width=spec.d_model)
    named: dict[str, str] = {}
    counts = {"layer": 0, "loop": 0, "parallel": 0}

    def add_layer(layer: Layer, prev: str, width: int) -> str:
        nid = f"layer{counts['layer']}"
        counts["layer"] += 1
        cls = get_primitive(layer.op)
        g.add_node(nid, kind=cls.kind, op=layer.op, params=spec.resolved_params(layer, width), width=width,
                   shares=named.get(layer.share) if layer.share else None)
        if layer.name is not None and layer.name not in named:
            named[layer.name] = nid
        g.add_edge(prev, nid, kind="data")
        return nid

    def add(nodes: tuple[Node, ...], prev: str) -> str:
        for n in nodes:
            if isinstance(n, Layer):
                prev = add_layer(n, prev, spec.d_model)
            elif isinstance(n, Loop):
                lid = f"loop{counts['loop']}"
                counts["loop"] += 1
                g.add_node(lid, kind="loop", times=n.times, inject=n.inject, halting=n.halting)
                g.add_edge(prev, lid, kind="data")
                end = add(n.body, lid)
                g.add_edge(end, lid, kind="loop_back")
                prev = f"{lid}.out"
                g.add_node(prev, kind="loop_exit")
                g.add_edge(end, prev, kind="data")
            else:
                assert isinstance(n, Parallel)
                pid = f"parallel{counts['parallel']}"
                counts["parallel"] += 1
                g.add_node(pid, kind="parallel", combine=n.combine, split=n.split)
                g.add_edge(prev, pid, kind="data")
                combine = f"{pid}.combine"
                g.add_node(combine, kind="combine", combine=n.combine)
                widths = _branch_widths(spec.d_model, n)
                for branch, width in zip(n.branches, widths):
                    bid = add_layer(branch, pid, width)
                    g.add_edge(bid, combine, kind="data")
                prev = combine
        return prev

    last = add(flatten(spec.layers), "embed")
    g.add_node("final_norm", kind="norm", norm=spec.norm)
    g.add_edge(last, "final_norm", kind="data")
    g.add_node("head", kind="lm_head", tied=spec.tie_embeddings, width=spec.vocab_size)
    g.add_edge("final_norm", "head", kind="data")
    validate_graph(g)
    return g


def _branch_widths(d_model: int, block: Parallel) -> list[int]:
    if block.split is None:
        return [d_model] * len(block.branches)
    return split_widths(d_model, block.split)


def validate_graph(g: nx.DiGraph) -> None:
    """Structural checks: data edges form a DAG from embed to head; shared nodes point at primitives."""
    data = nx.DiGraph([(u, v) for u, v, k in g.edges(data="kind") if k == "data"])
    if not nx.is_directed_acyclic_graph(data):
        raise ValueError("the data-flow graph has a cycle")
    reachable = nx.descendants(data, "embed") | {"embed"}
    if set(g.nodes) - reachable:
        raise ValueError(f"unreachable nodes: {sorted(set(g.nodes) - reachable)}")
    for nid, shares in g.nodes(data="shares"):
        if shares is not None and g.nodes[shares].get("op") != g.nodes[nid]["op"]:
            raise ValueError(f"{nid} shares {shares}, which is not the same primitive")


def stripe(spec: ArchSpec) -> str:
    """A one-line view of the layer sequence, e.g. `A M A M` (loops as `(..)xN`, parallel as `[A|S]`)."""

    def text(nodes: tuple[Node, ...]) -> list[str]:
        out = []
        for n in nodes:
            if isinstance(n, Layer):
                out.append(symbol(n.op) + ("*" if n.share else ""))
            elif isinstance(n, Loop):
                out.append("(" + " ".join(text(n.body)) + f")x{n.times}")
            else:
                out.append("[" + "|".join(text(n.branches)) + "]")
        return out

    return " ".join(text(flatten(spec.layers)))


SYMBOLS = {"attention": "A", "mlp": "M", "moe": "E", "mamba": "S", "mamba2": "S2", "retnet": "R",
           "linear_attention": "L", "gla": "G", "hgrn2": "H", "deltanet": "D", "gated_deltanet": "GD",
           "mlstm": "X", "mingru": "U", "rglru": "RG", "short_conv": "C"}


def symbol(op: str) -> str:
    return SYMBOLS.get(op, op[:2].upper())
