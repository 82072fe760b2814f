"""The canonical form of a spec, its JSON and `arch_id`, and the one-line `stripe` view.

The canonical form expands `repeat` (fresh weights each time is the same as writing the body out), writes
every primitive parameter out (Config defaults and spec `defaults` resolved), drops the fields marked as
labels (the spec's name, layer names: they do not change the model) and refers to shared layers by
position. Two specs that build the same model therefore have the same canonical JSON, and `arch_id` is its
hash. Model-wide and node fields are read from the dataclasses, so a new field enters `arch_id` by itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from composer.spec import ArchSpec, Layer, Loop, Node, Parallel, flatten, is_label, iter_layers, options_data
from primitives.base import get_primitive


def model_values(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every field of `obj` but labels and `skip`; a field whose `requires` is unset is None (it has no effect)."""
    out = {}
    for f in dataclasses.fields(obj):
        if is_label(f) or f.name in skip:
            continue
        required = f.metadata.get("requires")
        out[f.name] = None if required and not getattr(obj, required) else getattr(obj, f.name)
    return out


def canonical(spec: ArchSpec) -> dict[str, Any]:
    """The canonical plain-data form of a spec (see the module docstring)."""
    indices: dict[str, int] = {}
    counter = iter(range(1 << 30))
    layer_labels = tuple(f.name for f in dataclasses.fields(Layer) if is_label(f))

    def node(n: Node, width: int = spec.d_model) -> dict[str, Any]:
        if isinstance(n, Layer):
            index = next(counter)
            # a layer's other fields are written only when set, as in its YAML form
            if n.share is not None:  # the op and params are the shared layer's
                return {"share": indices[n.share], **options_data(n, skip=("op", "params", "share", *layer_labels))}
            if n.name is not None and n.name not in indices:
                indices[n.name] = index
            return {"op": n.op, "params": dict(sorted(spec.resolved_params(n, width).items())),
                    **options_data(n, skip=("op", "params", "share", *layer_labels))}
        if isinstance(n, Loop):
            return {"loop": {**model_values(n, skip=("body",)), "body": [node(b) for b in n.body]}}
        assert isinstance(n, Parallel)
        return {"parallel": [node(b, w) for b, w in zip(n.branches, n.widths(spec.d_model))],
                **model_values(n, skip=("branches",))}

    out = model_values(spec, skip=("layers", "defaults"))  # `defaults` are in each layer's resolved params
    out["layers"] = [node(n) for n in flatten(spec.layers)]
    return out


def canonical_json(spec: ArchSpec) -> str:
    return json.dumps(canonical(spec), sort_keys=True, separators=(",", ":"))


def arch_id(spec: ArchSpec) -> str:
    """A short stable hash of the canonical form: equal for specs that build the same model."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:16]


def stripe(spec: ArchSpec) -> str:
    """A one-line view of the layer sequence by `Primitive.symbol`, e.g. `A M A M` (loops as `(..)xN`, parallel
    as `[A|S]`, a shared layer starred)."""

    def text(nodes: tuple[Node, ...]) -> list[str]:
        out = []
        for n in nodes:
            if isinstance(n, Layer):
                out.append(get_primitive(n.op).symbol + ("*" if n.share else ""))
            elif isinstance(n, Loop):
                out.append("(" + " ".join(text(n.body)) + f")x{n.times}")
            else:
                out.append("[" + "|".join(text(n.branches)) + "]")
        return out

    return " ".join(text(flatten(spec.layers)))



def stripe_symbols(spec: ArchSpec) -> dict[str, str]:
    """Each symbol of the spec's stripe and its primitive, in order of first appearance: {"A": "attention"}."""
    return {get_primitive(layer.op).symbol: layer.op for layer in iter_layers(spec.layers)}


def stripe_legend(spec: ArchSpec) -> str:
    """The key to a spec's stripe: `A=attention M=mlp S2=mamba2` (and `*=shared weights` when one is starred)."""
    pairs = [f"{symbol}={op}" for symbol, op in stripe_symbols(spec).items()]
    if any(layer.share for layer in iter_layers(spec.layers)):
        pairs.append("*=shared weights")
    return " ".join(pairs)
