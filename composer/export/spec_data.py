"""Plain data (the `ArchSpec.to_dict()` form) -> ArchSpec, without validation or YAML.

The exporter inlines this module into the standalone `modeling.py`: the data it reads was written by
`to_dict()` from a spec that Composer had already validated, so only the structure is rebuilt here. The
keys of that data are the dataclasses' own field names, so no field is listed here.
Composer itself reads specs with `load_spec`, which validates and names errors.
"""

from __future__ import annotations

import copy
from typing import Any

from composer.spec import LAYER_KEYS, ArchSpec, Layer, Loop, Node, Parallel, Repeat


def spec_from_data(data: dict[str, Any]) -> ArchSpec:
    """The ArchSpec that `to_dict()` produced `data` from."""
    names: dict[str, Layer] = {}
    layers = _nodes_from_data(data["layers"], names)
    return ArchSpec(layers=layers, **_fields_from_data(data, skip=("layers",)))


def _fields_from_data(data: dict[str, Any], skip: tuple[str, ...]) -> dict[str, Any]:
    """Field values as the dataclasses hold them: YAML lists are tuples there; mappings are copied."""
    return {key: tuple(value) if isinstance(value, list) else copy.deepcopy(value)
            for key, value in data.items() if key not in skip}


def _nodes_from_data(items: list[Any], names: dict[str, Layer]) -> tuple[Node, ...]:
    return tuple(_node_from_data(item, names) for item in items)


def _node_from_data(item: Any, names: dict[str, Layer]) -> Node:
    if isinstance(item, str):
        return Layer(op=item)
    if "share" in item:
        target = names[item["share"]]
        return Layer(op=target.op, params=dict(target.params), **_fields_from_data(item, skip=()))
    if "repeat" in item:
        return Repeat(times=item["repeat"], body=_nodes_from_data(item["body"], names),
                      **_fields_from_data(item, skip=("repeat", "body")))
    if "loop" in item:
        loop = item["loop"]
        return Loop(body=_nodes_from_data(loop["body"], names), **_fields_from_data(loop, skip=("body",)))
    if "parallel" in item:
        return Parallel(branches=_nodes_from_data(item["parallel"], names),
                        **_fields_from_data(item, skip=("parallel",)))
    params = {key: value for key, value in item.items() if key not in LAYER_KEYS}
    layer = Layer(params=params, **_fields_from_data(item, skip=tuple(params)))
    if layer.name is not None and layer.name not in names:
        names[layer.name] = layer
    return layer
