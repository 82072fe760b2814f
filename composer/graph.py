"""The networkx structural view of a spec: the data-flow graph, for validation, drawing and export.

Nodes are the embedding, every primitive with its resolved parameters, loop and parallel regions as
explicit nodes, the final norm and the head; edges are data flow (plus each loop's `loop_back`). The
canonical form and `arch_id` are in `composer.canonical_form`.
"""

from __future__ import annotations

import networkx as nx

from composer.canonical_form import arch_id, model_values
from composer.spec import ArchSpec, Layer, Loop, Node, Parallel, flatten
from primitives.base import get_primitive


def to_graph(spec: ArchSpec) -> nx.DiGraph:
    """The data-flow graph: embed -> sub-layers (loops and parallel blocks as explicit nodes) -> head.

    Primitive nodes carry `op`, `kind`, `params`, `width`; `shares` names the node whose weights they use.
    Loop and parallel nodes carry their settings (every field but the body); a loop node has a `loop_back`
    edge from the end of its body; parallel nodes fan out and a combine node fans back in.
    """
    g = nx.DiGraph(arch_id=arch_id(spec), d_model=spec.d_model, vocab_size=spec.vocab_size)
    g.add_node("embed", kind="embedding", width=spec.d_model, meta_tokens=spec.meta_tokens)
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
                g.add_node(lid, kind="loop", **model_values(n, skip=("body",)))
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
                g.add_node(pid, kind="parallel", **model_values(n, skip=("branches",)))
                g.add_edge(prev, pid, kind="data")
                combine = f"{pid}.combine"
                g.add_node(combine, kind="combine", combine=n.combine)
                widths = n.widths(spec.d_model)
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
