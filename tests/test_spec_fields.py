"""Every field of the spec, read from the dataclasses (none is listed here by hand).

For each field of ArchSpec and of each node type, some other valid value of it must change `arch_id`
(unless the field is marked as a label, when none may, nor change the model built), and every valid variant
must survive dump_spec -> load_spec and export's plain data (`spec_from_data(to_dict())`). A field added to
`composer/spec.py` becomes a new case here by itself; one that the parser, `to_dict`, the canonical form or
export leaves out fails it. The "other valid values" come from the field's type (`other_values`); a variant
counts as valid when `validate_spec` accepts it.
"""

from __future__ import annotations

import dataclasses
import itertools
import types
import typing
from typing import Any, Literal

import pytest
import torch

import composer
from composer.canonical_form import arch_id
from composer.errors import UserError
from composer.export.spec_data import spec_from_data
from composer.model import build_model
from composer.spec import ArchSpec, Layer, Loop, Node, default_of, is_label, iter_layers
from composer.spec_parse import ADAPTER_KINDS, dump_spec, load_spec, validate_spec
from primitives import registered

NODE_TYPES = typing.get_args(Node)
# One node of each type, each with a setting that lets every one of its fields take another valid value
# (a loop that halts, so `ponder_cost` has an effect; a named layer in the loop, for the `share` at the end).
BASE = load_spec({
    "name": "demo",
    "description": "one node of each type",
    "d_model": 64,
    "vocab_size": 100,
    "max_seq_len": 64,
    "defaults": {"mlp": {"kind": "gelu"}},
    "layers": [
        "attention",
        {"repeat": 2, "body": ["mlp"]},
        {"loop": {"times": 3, "body": [{"op": "attention", "name": "g"}, "mlp"], "halting": "act"}},
        {"parallel": ["attention", "mlp"], "combine": "concat_proj"},
        {"share": "g"},
    ],
})
CANDIDATES_PER_TARGET = 12


def other_values(hint: Any, current: Any, op: str | None = None) -> typing.Iterator[Any]:
    """Values of type `hint` other than `current` (some may be invalid where they are put; callers filter).
    A mapping of parameters varies one field of the Config of `op` (the layer's primitive) at a time."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if current is not None:
            yield None
        for arg in args:
            if arg is not type(None):
                yield from other_values(arg, current, op)
    elif origin is Literal:
        yield from (a for a in args if a != current)
    elif hint is bool:
        yield from [not current] if isinstance(current, bool) else [True, False]
    elif hint is int:
        pool = [current + 1, current * 2, current // 2, current - 1] if isinstance(current, int) else [1, 2, 3, 4]
        yield from dict.fromkeys(v for v in pool if v >= 1 and v != current)
    elif hint is float:
        pool = [current + 0.25, current / 2] if isinstance(current, (int, float)) else []
        yield from dict.fromkeys(v for v in [*pool, 0.5, 0.1] if v != current)
    elif hint is str:
        yield from (v for v in ["x", *sorted(registered())] if v != current)
    elif origin is tuple and args[0] == Node:
        yield from [(Layer("mlp"),), (Layer("attention"), Layer("attention")), (*(current or ()), Layer("mlp"))]
    elif origin is tuple and args[0] is float:
        for split in [(0.5, 0.5), (0.25, 0.75), (0.25, 0.25, 0.5)]:
            if split != current:
                yield split
    elif origin is dict and args[1] is Any:  # a shared layer's adapter, or the layer's parameters
        yield from (a for a in [{"kind": kind, **({"rank": 4} if kind == "lora" else {})} for kind in ADAPTER_KINDS]
                    if a != current)
        yield from params_values(op, current or {}) if op else ()
    elif origin is dict:  # per-primitive defaults
        if current:
            yield {}
        for op in sorted({layer.op for layer in iter_layers(BASE.layers)}):
            yield from ({**(current or {}), op: p} for p in params_values(op, (current or {}).get(op, {})))


def params_values(op: str, current: dict[str, Any]) -> typing.Iterator[dict[str, Any]]:
    """Parameter mappings of `op` that differ from `current` in one field of its Config."""
    config = registered()[op].Config
    hints = typing.get_type_hints(config)
    for f in dataclasses.fields(config):
        for value in itertools.islice(other_values(hints[f.name], current.get(f.name, default_of(f))), 2):
            yield {**current, f.name: value}


def expressible(spec: ArchSpec) -> bool:
    """Whether YAML can say this spec: a shared layer takes its op and params from its target and has no name
    (a Python-built variant that changes one side of a share only is not a valid spec)."""
    named = {layer.name: layer for layer in iter_layers(spec.layers) if layer.name and layer.share is None}
    return all(layer.name is None and layer.share in named and
               (layer.op, layer.params) == (named[layer.share].op, named[layer.share].params)
               for layer in iter_layers(spec.layers) if layer.share is not None)


def variants(spec: ArchSpec, cls: type, name: str) -> list[tuple[Any, ArchSpec]]:
    """(value, valid spec) where the spec differs from `spec` in field `name` of the spec itself or of one
    top-level `cls` node, which has that value."""
    hint = typing.get_type_hints(cls)[name]
    targets = [spec] if cls is ArchSpec else [n for n in spec.layers if type(n) is cls]
    assert targets, f"the base spec has no {cls.__name__} node: add one"
    out = []
    for target in targets:
        values = other_values(hint, getattr(target, name), getattr(target, "op", None))
        for value in itertools.islice(values, CANDIDATES_PER_TARGET):
            changed = dataclasses.replace(target, **{name: value})
            if cls is not ArchSpec:
                changed = spec.replace(layers=tuple(changed if n is target else n for n in spec.layers))
            try:
                validate_spec(changed)
            except UserError:
                continue
            if expressible(changed):
                out.append((value, changed))
    return out


def same_model(a: ArchSpec, b: ArchSpec) -> bool:
    """Whether the two specs build the same model: equal weights from one seed, equal outputs."""
    tokens = torch.arange(12).reshape(2, 6) % min(a.vocab_size, b.vocab_size)
    models = []
    for spec in (a, b):
        torch.manual_seed(0)
        models.append(build_model(spec).eval())
    weights = [m.state_dict() for m in models]
    return (weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
            and torch.equal(models[0](tokens).logits, models[1](tokens).logits))


def field_problems(cls: type, name: str) -> list[str]:
    """What is wrong with how the pipeline carries field `name` of `cls` (empty when nothing is)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    where = f"{cls.__name__}.{name}"
    found = variants(BASE, cls, name)
    if not found:
        return [f"{where}: no other valid value found (teach `other_values` its type, or give BASE a setting "
                f"where it can change)"]
    problems = []
    for value, spec in found:
        again = load_spec(dump_spec(spec))
        if again != spec:
            problems.append(f"{where}={value!r} is lost by dump_spec -> load_spec")
        elif spec_from_data(again.to_dict()) != spec:
            problems.append(f"{where}={value!r} is lost by export (spec_from_data)")
    changed_ids = {arch_id(spec) for _, spec in found} - {arch_id(BASE)}
    if is_label(field) and changed_ids:
        problems.append(f"{where} is marked as a label but changes arch_id")
    if is_label(field) and any(not same_model(BASE, spec) for _, spec in found[:3]):
        problems.append(f"{where} is marked as a label but changes the model built from the spec")
    if not is_label(field) and not changed_ids:
        problems.append(f"{where} does not change arch_id (not in the canonical form? or mark it as a label)")
    return problems


FIELDS = [(cls, f.name) for cls in (ArchSpec, *NODE_TYPES) for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("cls, name", FIELDS, ids=[f"{cls.__name__}.{name}" for cls, name in FIELDS])
def test_every_field_changes_arch_id_unless_a_label_and_survives_dump_load_export(cls, name):
    assert field_problems(cls, name) == []


def test_labels_are_the_names_and_description():
    labels = {f"{cls.__name__}.{f.name}" for cls in (ArchSpec, *NODE_TYPES) for f in dataclasses.fields(cls)
              if is_label(f)}
    assert labels == {"ArchSpec.name", "ArchSpec.description", "Layer.name"}


@pytest.mark.parametrize("patch, field, words", [
    ("canonical", "dropout", "does not change arch_id"),
    ("to_dict", "dropout", "dump_spec -> load_spec"),
    ("export", "dropout", "export"),
    ("canonical", "ponder_cost", "does not change arch_id"),
    ("to_dict", "ponder_cost", "dump_spec -> load_spec"),
    ("export", "ponder_cost", "export"),
])
def test_a_field_left_out_anywhere_is_caught(monkeypatch, patch, field, words):
    """The check above can fail: leave one field out of one stage of the pipeline and it says where."""
    import composer.canonical_form
    import composer.export.spec_data
    import composer.spec

    def without(fn):
        return lambda *args, **kwargs: {k: v for k, v in fn(*args, **kwargs).items() if k != field}

    if patch == "canonical":
        monkeypatch.setattr(composer.canonical_form, "model_values", without(composer.canonical_form.model_values))
    elif patch == "to_dict":
        monkeypatch.setattr(composer.spec, "options_data", without(composer.spec.options_data))
        monkeypatch.setattr(ArchSpec, "to_dict", without(ArchSpec.to_dict))
    else:
        monkeypatch.setattr(composer.export.spec_data, "_fields_from_data",
                            without(composer.export.spec_data._fields_from_data))
    cls = ArchSpec if field == "dropout" else Loop
    problems = field_problems(cls, field)
    assert problems and all(field in p for p in problems) and any(words in p for p in problems)


def test_dump_spec_is_still_exported_by_the_package():
    assert composer.dump_spec is dump_spec
