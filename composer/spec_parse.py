"""Plain data (YAML, dicts) -> ArchSpec, validating every field and naming its YAML path on error; and back.

The fields each form accepts are those of its dataclass in `composer.spec`: a field's type and bounds are
checked as declared, by the one reader (composer/reader.py, in the spec's style); the structure (nodes,
patterns, shares) and the rules between fields (a split's widths, `grad_iters <= times`) are written out below.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import yaml

from composer.errors import SpecError
from composer.fields import has_default, help_of
from composer.limits import MAX_LAYERS, MAX_NESTING
from composer.names import unknown_name_message
from composer.reader import Reader, type_hints
from composer.spec import LAYER_KEYS, AdapterKind, ArchSpec, Layer, Loop, Node, Parallel, Repeat, split_widths
from composer.yaml_source import Source, join, read_source
from primitives.base import ConfigError, get_primitive, make_config, registered

# The architecture's keys: the ArchSpec fields, and the `pattern` + `legend` shorthand for `layers`.
MODEL_KEYS = (*(f.name for f in dataclasses.fields(ArchSpec)), "pattern", "legend")
# The Layer fields that `layer` and `shared_layer` read themselves (any other is checked by its type).
LAYER_PARSED = ("op", "params", "name", "share", "adapter")
ADAPTER_KINDS = typing.get_args(AdapterKind)


def field_names(cls: type, skip: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in skip)


def load_spec(obj: Any) -> ArchSpec:
    """An ArchSpec from a YAML file path, a YAML string, a dict, or an ArchSpec (returned as is)."""
    if isinstance(obj, ArchSpec):
        return obj
    return parse_spec(read_source(obj))


def dump_spec(spec: ArchSpec) -> str:
    """The YAML text of a spec (`load_spec(dump_spec(s)) == s`)."""
    return yaml.safe_dump(spec.to_dict(), sort_keys=False, default_flow_style=None, width=100)


class _Parser(Reader):
    def __init__(self, source: Source):
        super().__init__(source, SpecError, spec_style=True)
        self.names: dict[str, tuple[Layer, str, int]] = {}
        self.d_model = 0
        self.defaults: dict[str, dict[str, Any]] = {}
        self.nesting = 0   # repeat / loop / parallel blocks around the node being parsed

    def declared(self, cls: type, name: str, value: Any, path: str) -> Any:
        """`value` checked against field `name` of `cls` as declared (None for a required field: missing)."""
        f = next(f for f in dataclasses.fields(cls) if f.name == name)
        if value is None and not has_default(f):
            raise self.fail(f"missing required field ({help_of(f)})", path)
        return self.value(value, type_hints(cls)[name], path, f.metadata)

    def required(self, cls: type, name: str, value: Any, path: str) -> Any:
        """`value`, unless it is missing (None) for the required field `name` of `cls`."""
        return value if value is not None else self.declared(cls, name, None, path)

    def unknown_keys(self, data: dict, allowed: tuple, path: str, what: str) -> None:
        self.mapping(data, path, allowed, what=f"field of {what}")

    # -- the model ------------------------------------------------------------------------------
    def spec(self, data: Any) -> ArchSpec:
        if data is None:
            raise self.fail("the spec is empty", "")
        data = self.mapping(data, "")
        self.unknown_keys(data, MODEL_KEYS, "", "the architecture")
        self.d_model = self.declared(ArchSpec, "d_model", data.get("d_model"), "d_model")
        fields = self.fields(ArchSpec, data, "", skip=("d_model", "defaults", "layers"))
        self.defaults = self.parse_defaults(data.get("defaults") or {})
        layers = self.layers_field(data)
        self.check_layer_count(layers, "layers" if "layers" in data else "pattern")
        return ArchSpec(d_model=self.d_model, defaults=self.defaults, layers=layers, **fields)

    def check_layer_count(self, nodes: tuple[Node, ...], path: str, times: int = 1) -> None:
        count = times * layer_count(nodes)
        if count > MAX_LAYERS:
            how = f"{times:,} x {layer_count(nodes):,} layers = " if times > 1 else ""
            raise self.fail(f"{how}{count:,} layers run per token, more than {MAX_LAYERS:,} (limit MAX_LAYERS: "
                            "repeat and loop iterations count)", path)

    def parse_defaults(self, data: Any) -> dict[str, dict[str, Any]]:
        data = self.mapping(data, "defaults")
        known = registered()
        out = {}
        for op, params in data.items():
            path = join("defaults", op)
            if op not in known:
                raise self.fail(unknown_name_message("primitive", op, list(known)), path)
            params = self.mapping(params or {}, path)
            try:
                make_config(known[op], params)
            except ConfigError as e:
                raise self.fail(e.message, join(path, e.field)) from None
            out[op] = dict(params)
        return out

    def layers_field(self, data: dict) -> tuple[Node, ...]:
        if "pattern" in data or "legend" in data:
            if "layers" in data:
                raise self.fail("give either `layers` or `pattern` + `legend`, not both", "pattern")
            return self.pattern(data)
        if "layers" not in data:
            raise self.fail("missing required field (the list of layers)", "layers")
        return self.node_list(data["layers"], "layers")

    def pattern(self, data: dict) -> tuple[Node, ...]:
        pattern = data.get("pattern")
        if not isinstance(pattern, str) or not pattern.replace(" ", ""):
            raise self.fail(f"expected a non-empty string of legend letters, got {pattern!r}", "pattern")
        if len(pattern.replace(" ", "")) > MAX_LAYERS:
            raise self.fail(f"{len(pattern.replace(' ', '')):,} letters, more than {MAX_LAYERS:,} layers "
                            "(limit MAX_LAYERS)", "pattern")
        legend = self.mapping(data.get("legend") or {}, "legend")
        nodes = []
        for i, letter in enumerate(pattern.replace(" ", "")):
            if letter not in legend:
                raise self.fail(f"letter {letter!r} (position {i}) is not in the legend "
                                f"(legend has: {', '.join(sorted(map(str, legend))) or 'nothing'})", "pattern")
            nodes.append(self.node(legend[letter], join("legend", letter)))
        return tuple(nodes)

    # -- layer nodes ----------------------------------------------------------------------------
    def node_list(self, value: Any, path: str) -> tuple[Node, ...]:
        if not isinstance(value, list):
            raise self.fail(f"expected a list of layers, got {type(value).__name__}", path)
        if not value:
            raise self.fail("must contain at least one layer", path)
        if len(value) > MAX_LAYERS:
            raise self.fail(f"{len(value):,} layers, more than {MAX_LAYERS:,} (limit MAX_LAYERS)", path)
        return tuple(self.node(item, join(path, i)) for i, item in enumerate(value))

    def node(self, value: Any, path: str) -> Node:
        if isinstance(value, str):
            return self.layer({"op": value}, path)
        if not isinstance(value, dict):
            raise self.fail(f"expected a primitive name or a mapping, got {value!r}", path)
        self.mapping(value, path)
        blocks = {"repeat": self.repeat, "loop": self.loop, "parallel": self.parallel}
        kind = next((key for key in blocks if key in value), None)
        if kind is not None:
            if self.nesting >= MAX_NESTING:
                raise self.fail(f"blocks nested more than {MAX_NESTING} deep (limit MAX_NESTING)", join(path, kind))
            self.nesting += 1
            try:
                return blocks[kind](value, path)
            finally:
                self.nesting -= 1
        if "op" in value or "share" in value:
            return self.layer(value, path)
        raise self.fail("a layer needs `op`, `share`, `repeat`, `loop` or `parallel`", path)

    def layer(self, value: dict, path: str) -> Layer:
        if "share" in value:
            return self.shared_layer(value, path)
        op = value["op"]
        if not isinstance(op, str):
            raise self.fail(f"expected a primitive name, got {op!r}", join(path, "op"))
        try:
            cls = get_primitive(op)
        except KeyError as e:
            raise self.fail(e.args[0], join(path, "op") if len(value) > 1 else path) from None
        params = {k: v for k, v in value.items() if k not in LAYER_KEYS}
        if "adapter" in value:
            raise self.fail("`adapter` applies to a `share` layer", join(path, "adapter"))
        try:
            cfg = make_config(cls, {**self.defaults.get(op, {}), **params})
            cls.validate(cfg, self.d_model)
        except ConfigError as e:
            raise self.fail(e.message, join(path, e.field)) from None
        name = value.get("name")
        layer = Layer(op=op, params=params, name=name, **self.fields(Layer, value, path, skip=LAYER_PARSED))
        if name is not None:
            if not isinstance(name, str) or not name.isidentifier():
                raise self.fail(f"a layer name must be an identifier, got {name!r}", join(path, "name"))
            if name in self.names:
                raise self.fail(f"name {name!r} is already used at {self.names[name][1]}", join(path, "name"))
            self.names[name] = (layer, path, self.d_model)
        return layer

    def shared_layer(self, value: dict, path: str) -> Layer:
        self.unknown_keys(value, LAYER_KEYS, path, "a shared layer")
        target = value["share"]
        if not isinstance(target, str):
            raise self.fail(f"expected the name of an earlier layer, got {target!r}", join(path, "share"))
        if target not in self.names:
            known = list(self.names)
            message = unknown_name_message("share target", str(target), known) if known else (
                f"unknown share target {target!r}: no named layer before this one (name one with `name:`)")
            raise self.fail(message, join(path, "share"))
        original, _, width = self.names[target]
        if width != self.d_model:
            raise self.fail(f"shape mismatch: {target!r} has width {width}, this position has {self.d_model}",
                            join(path, "share"))
        if "op" in value and value["op"] != original.op:
            raise self.fail(f"shape mismatch: {target!r} is a {original.op!r} layer, not {value['op']!r}",
                            join(path, "op"))
        adapter = None
        if "adapter" in value:
            adapter = self.adapter(value["adapter"], join(path, "adapter"))
        return Layer(op=original.op, params=dict(original.params), share=target, adapter=adapter,
                     **self.fields(Layer, value, path, skip=LAYER_PARSED))

    def adapter(self, value: Any, path: str) -> dict[str, Any]:
        if isinstance(value, str):
            value = {"kind": value}
        value = self.mapping(value, path)
        self.unknown_keys(value, ("kind", "rank"), path, "an adapter")
        kind = self.value(value.get("kind"), AdapterKind, join(path, "kind"))
        out: dict[str, Any] = {"kind": kind}
        if kind == "lora":
            out["rank"] = self.integer(value.get("rank", 8), join(path, "rank"), ge=1)
        return out

    def repeat(self, value: dict, path: str) -> Repeat:
        spec = value["repeat"]
        if isinstance(spec, dict):
            self.unknown_keys(value, ("repeat",), path, "a repeat")
            self.unknown_keys(spec, field_names(Repeat), join(path, "repeat"), "a repeat")
            times, base = spec.get("times"), join(path, "repeat")
        else:
            self.unknown_keys(value, ("repeat", *field_names(Repeat, skip=("times",))), path, "a repeat")
            times, spec, base = spec, value, path
        times = self.declared(Repeat, "times", times, join(base, "times") if base != path else join(path, "repeat"))
        body = self.node_list(self.required(Repeat, "body", spec.get("body"), join(base, "body")), join(base, "body"))
        self.check_layer_count(body, join(base, "times") if base != path else join(path, "repeat"), times)
        return Repeat(times=times, body=body, **self.fields(Repeat, spec, base, skip=("times", "body")))

    def loop(self, value: dict, path: str) -> Loop:
        spec = value["loop"]
        if isinstance(spec, dict):
            self.unknown_keys(value, ("loop",), path, "a loop")
            base = join(path, "loop")
        else:
            spec = {"times": spec, **{k: v for k, v in value.items() if k != "loop"}}
            base = path
        self.unknown_keys(spec, field_names(Loop), base, "a loop")
        self.required(Loop, "times", spec.get("times"), join(base, "times"))
        times = self.declared(Loop, "times", spec["times"], join(base, "times") if base != path else join(path, "loop"))
        body = self.node_list(self.required(Loop, "body", spec.get("body"), join(base, "body")), join(base, "body"))
        self.check_layer_count(body, join(base, "times") if base != path else join(path, "loop"), times)
        fields = self.fields(Loop, spec, base, skip=("times", "body"))
        grad_iters = fields.get("grad_iters")
        if grad_iters is not None and grad_iters > times:
            raise self.fail(f"grad_iters={grad_iters} exceeds times={times}", join(base, "grad_iters"))
        return Loop(times=times, body=body, **fields)

    def parallel(self, value: dict, path: str) -> Parallel:
        self.unknown_keys(value, ("parallel", *field_names(Parallel, skip=("branches",))), path, "a parallel block")
        branches = value["parallel"]
        if not isinstance(branches, list) or len(branches) < 2:
            raise self.fail("expected a list of at least two branches", join(path, "parallel"))
        if len(branches) > MAX_LAYERS:
            raise self.fail(f"{len(branches):,} branches, more than {MAX_LAYERS:,} (limit MAX_LAYERS)",
                            join(path, "parallel"))
        fields = self.fields(Parallel, value, path, skip=("branches", "split"))
        combine = fields.get("combine", Parallel.combine)  # a dataclass keeps a field's default as class attribute
        split = value.get("split")
        widths = None
        if split is not None:
            split_path = join(path, "split")
            if (not isinstance(split, list) or len(split) != len(branches)
                    or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in split)):
                raise self.fail(f"expected {len(branches)} positive fractions, got {split!r}", split_path)
            if abs(sum(split) - 1.0) > 1e-6:
                raise self.fail(f"fractions must sum to 1, got {sum(split)}", split_path)
            widths = split_widths(self.d_model, split)
            if any(w < 1 for w in widths):
                raise self.fail(f"a branch would get no channels of d_model={self.d_model}", split_path)
            if combine not in ("concat", "concat_proj"):
                raise self.fail("a split parallel block combines with `concat` or `concat_proj`",
                                join(path, "combine"))
        elif combine == "concat":
            raise self.fail("`concat` needs `split` (branch widths must add up to d_model); "
                            "use `concat_proj`", join(path, "combine"))
        nodes = []
        for i, branch in enumerate(branches):
            bpath = join(join(path, "parallel"), i)
            saved = self.d_model
            if widths is not None:
                self.d_model = widths[i]
            node = self.node(branch, bpath)
            self.d_model = saved
            if not isinstance(node, Layer):
                raise self.fail("a parallel branch must be a primitive", bpath)
            nodes.append(node)
        return Parallel(branches=tuple(nodes), split=tuple(float(s) for s in split) if split is not None else None,
                        **fields)


def layer_count(nodes: tuple[Node, ...]) -> int:
    """Layers run per token: repeat and loop iterations multiplied out, each parallel branch counted."""
    total = 0
    for node in nodes:
        if isinstance(node, Layer):
            total += 1
        elif isinstance(node, (Repeat, Loop)):
            total += node.times * layer_count(node.body)
        else:
            total += layer_count(node.branches)
    return total


def parse_spec(source: Source) -> ArchSpec:
    spec = _Parser(source).spec(source.data)
    return spec


def validate_spec(spec: ArchSpec) -> ArchSpec:
    """Re-check a spec built in Python (e.g. by a scaling rule) through the same validator."""
    return parse_spec(Source(spec.to_dict()))
