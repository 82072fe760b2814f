"""Plain data (the `ArchSpec.to_dict()` form) -> ArchSpec, without validation or YAML.

The exporter inlines this module into the standalone `modeling.py`: the data it reads was written by
`to_dict()` from a spec that Composer had already validated, so only the structure is rebuilt here.
Composer itself reads specs with `load_spec`, which validates and names errors.
"""

from __future__ import annotations

from typing import Any

from composer.spec import ArchSpec, Layer, Loop, Node, Parallel, Repeat

SPEC_FIELDS = ("name", "description", "d_model", "vocab_size", "max_seq_len", "norm", "norm_position",
               "tie_embeddings", "dropout", "defaults")


def spec_from_data(data: dict[str, Any]) -> ArchSpec:
    """The ArchSpec that `to_dict()` produced `data` from."""
    names: dict[str, Layer] = {}
    fields = {key: data[key] for key in SPEC_FIELDS if key in data}
    fields["defaults"] = {op: dict(params) for op, params in (data.get("defaults") or {}).items()}
    layers = tuple(_node_from_data(item, names) for item in data["layers"])
    return ArchSpec(layers=layers, **fields)


def _node_from_data(item: Any, names: dict[str, Layer]) -> Node:
    if isinstance(item, str):
        return Layer(op=item)
    if "share" in item:
        target = names[item["share"]]
        adapter = dict(item["adapter"]) if item.get("adapter") else None
        return Layer(op=target.op, params=dict(target.params), share=item["share"], adapter=adapter)
    if "repeat" in item:
        return Repeat(times=item["repeat"], body=tuple(_node_from_data(n, names) for n in item["body"]))
    if "loop" in item:
        loop = dict(item["loop"])
        body = tuple(_node_from_data(n, names) for n in loop.pop("body"))
        return Loop(body=body, **loop)
    if "parallel" in item:
        split = item.get("split")
        return Parallel(branches=tuple(_node_from_data(n, names) for n in item["parallel"]),
                        combine=item.get("combine", "sum"), split=tuple(split) if split is not None else None)
    params = {key: value for key, value in item.items() if key not in ("op", "name")}
    layer = Layer(op=item["op"], params=params, name=item.get("name"))
    if layer.name is not None and layer.name not in names:
        names[layer.name] = layer
    return layer
