"""Scaling rules: pure functions spec -> spec that make a searched architecture deeper, wider or a given
size.

Every result goes through `validate_spec`, so a rule never returns a spec the parser would reject.

Depth is counted in *units*: the entries of the flattened layer list (`flatten` expands `repeat`; a loop or
a parallel block is one unit, whatever its body). A *run* is a maximal stretch of consecutive units that are
identical up to layer names (same primitive, same written parameters, same share target; loops and parallel
blocks compare whole).

* `stack(spec, k)`    the searched block k times: the unit sequence becomes the original one k times over.
* `stretch(spec, n)`  every run lengthened proportionally so the model has n units, keeping the order of
  runs. Run i of length l_i gets the quota l_i * n / total; each run takes the floor of its quota and the
  units left over go to the largest fractional parts (largest-remainder rounding; ties to the earlier run).
  A run the rounding would drop gets one unit, taken from the run with the most units, so no primitive
  disappears. `AAMMMM` stretched to 12 is `AAAAMMMMMMMM`.
* `widen(spec, d)`    each primitive's width-scaled fields (`Primitive.width_fields`) grow with d_model.
* `fit_to_params`     depth by the Composer rule (stack a search of fewer than 16 units, stretch one of 16 or
  more) and width by search, to land within `tol` of a parameter count.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Callable
from typing import Any, Literal

from composer.costs import model_cost
from composer.errors import UserError
from composer.limits import MAX_LAYERS
from composer.spec import ArchSpec, Layer, Loop, Node, Parallel, Repeat, flatten, node_to_data, split_widths
from composer.spec_parse import layer_count, validate_spec
from primitives.base import ConfigError, get_primitive, make_config

# ------------------------------------------------------------------------------------------------
# Width rules
#
# Each primitive class names the Config fields that grow in proportion to d_model (`width_scaled`, read
# through `Primitive.width_fields`); every other field is kept, which keeps head dimensions (attention adds
# heads), expansion ratios (MLP, MoE experts, SSM inner width) and per-channel state sizes (Mamba's d_state,
# so Mamba's state grows with its channels). Fields left unset (None) are left to the primitive's own
# default at the new width (e.g. attention's `d_model // 64` heads, Mamba's dt_rank `ceil(d_model / 16)`),
# which already follow these rules. A scaled value that the primitive rejects at the new width (a head
# count that no longer divides it) moves to the nearest value it accepts.


def _accepts(op: str, params: dict[str, Any], width: int) -> ConfigError | None:
    cls = get_primitive(op)
    try:
        cls.validate(make_config(cls, params), width)
    except ConfigError as e:
        return e
    return None


def _widen_params(op: str, written: dict[str, Any], own: dict[str, Any], ratio: float,
                  width: int) -> dict[str, Any]:
    """`own` (a layer's or a defaults entry's parameters) with width-scaled fields rescaled by `ratio`.

    `written` is everything that applies to the layer (spec defaults then its own), used to check the result
    at the new `width`; only fields present in `own` are changed.
    """
    merged = dict(written)
    changed = dict(own)
    for name in get_primitive(op).width_fields():
        value = own.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        target = max(1, round(value * ratio))
        for candidate in _nearest_first(target):
            trial = {**merged, name: candidate}
            error = _accepts(op, trial, width)
            if error is None or error.field != name:
                break
        else:
            raise UserError(f"cannot widen {op!r}: no value of {name} near {target} is valid "
                            f"at width {width}")
        merged[name] = changed[name] = candidate
    return changed


def _nearest_first(target: int) -> list[int]:
    """target, target-1, target+1, target-2, ... (positive values, within a factor 4 of target)."""
    out = [target]
    for step in range(1, 4 * target):
        out.extend(v for v in (target - step, target + step) if v >= 1)
    return out


def widen(spec: ArchSpec, d_model: int) -> ArchSpec:
    """The spec at width `d_model`, scaling each primitive's width-scaled parameters (see the width rules)."""
    if not isinstance(d_model, int) or d_model < 1:
        raise UserError(f"d_model must be a positive integer, got {d_model!r}")
    ratio = d_model / spec.d_model
    defaults = {op: _widen_params(op, params, params, ratio, d_model) for op, params in spec.defaults.items()}

    def layer(node: Layer, width: int) -> Layer:
        if node.share is not None:
            return node
        written = {**defaults.get(node.op, {}), **node.params}
        return dataclasses.replace(node, params=_widen_params(node.op, written, node.params, ratio, width))

    def walk(node: Node) -> Node:
        if isinstance(node, Layer):
            return layer(node, d_model)
        if isinstance(node, (Repeat, Loop)):
            return dataclasses.replace(node, body=tuple(walk(n) for n in node.body))
        widths = split_widths(d_model, node.split) if node.split else [d_model] * len(node.branches)
        return dataclasses.replace(node, branches=tuple(layer(b, w) for b, w in zip(node.branches, widths)))

    new = spec.replace(d_model=d_model, defaults=defaults, layers=tuple(walk(n) for n in spec.layers))
    return _checked(new, f"widen to d_model={d_model}")


# ------------------------------------------------------------------------------------------------
# Depth rules


def units(spec: ArchSpec) -> tuple[Node, ...]:
    """The flattened layer list: the units depth is counted in."""
    return flatten(spec.layers)


def _strip_names(node: Node) -> Node:
    if isinstance(node, Layer):
        return dataclasses.replace(node, name=None)
    if isinstance(node, Loop):
        return dataclasses.replace(node, body=tuple(_strip_names(n) for n in node.body))
    if isinstance(node, Parallel):
        return dataclasses.replace(node, branches=tuple(_strip_names(n) for n in node.branches))
    return dataclasses.replace(node, body=tuple(_strip_names(n) for n in node.body))


def unit_key(node: Node) -> str:
    """Two units are identical (belong to one run) when their keys are equal: equal up to layer names."""
    return json.dumps(node_to_data(_strip_names(node)), sort_keys=True, default=str)


def runs(spec: ArchSpec) -> list[list[Node]]:
    """Maximal runs of identical consecutive units, in order (each run a list of its units)."""
    out: list[list[Node]] = []
    for node in units(spec):
        if out and unit_key(out[-1][0]) == unit_key(node):
            out[-1].append(node)
        else:
            out.append([node])
    return out


def largest_remainder(lengths: list[int], total: int) -> list[int]:
    """Split `total` in proportion to `lengths` (largest remainder, ties to the earlier one), >= 1 each."""
    if total < len(lengths):
        raise UserError(f"cannot fit {len(lengths)} runs of distinct layers into {total} layers")
    whole = sum(lengths)
    quotas = [length * total / whole for length in lengths]
    alloc = [math.floor(q) for q in quotas]
    order = sorted(range(len(lengths)), key=lambda i: (-(quotas[i] - alloc[i]), i))
    for i in order[: total - sum(alloc)]:
        alloc[i] += 1
    for i in range(len(alloc)):
        if alloc[i] == 0:
            donor = max(range(len(alloc)), key=lambda j: (alloc[j], -j))
            alloc[donor] -= 1
            alloc[i] = 1
    return alloc


def _resized(run: list[Node], count: int) -> list[Node]:
    """A run with `count` units: its own units first, then copies with layer names dropped (a name may be
    defined once; copies of a named layer are fresh layers, and `share` references keep the original)."""
    return run[:count] + [_strip_names(run[0])] * max(0, count - len(run))


def stretch(spec: ArchSpec, n_layers: int) -> ArchSpec:
    """The spec with `n_layers` units, each run lengthened proportionally (see the module docstring)."""
    if not isinstance(n_layers, int) or n_layers < 1:
        raise UserError(f"n_layers must be a positive integer, got {n_layers!r}")
    if n_layers > MAX_LAYERS:          # checked before the layers are built: each unit holds at least one layer
        raise UserError(f"stretch to {n_layers:,} layers: more than {MAX_LAYERS:,} layers (limit MAX_LAYERS)")
    found = runs(spec)
    alloc = largest_remainder([len(run) for run in found], n_layers)
    layers: list[Node] = []
    for run, count in zip(found, alloc):
        layers.extend(_resized(run, count))
    return _checked(spec.replace(layers=tuple(layers)), f"stretch to {n_layers} layers")


def stack(spec: ArchSpec, times: int) -> ArchSpec:
    """The searched block repeated `times` times (fresh weights for each repetition)."""
    if not isinstance(times, int) or times < 1:
        raise UserError(f"times must be a positive integer, got {times!r}")
    if times == 1:
        return spec
    if times * layer_count(spec.layers) > MAX_LAYERS:        # checked before the layers are built
        raise UserError(f"stack x{times:,}: {times:,} x {layer_count(spec.layers):,} layers, more than "
                        f"{MAX_LAYERS:,} (limit MAX_LAYERS)")
    body = units(spec)
    if not _has_names(body):
        if len(spec.layers) == 1 and isinstance(spec.layers[0], Repeat):
            layers: tuple[Node, ...] = (Repeat(spec.layers[0].times * times, spec.layers[0].body),)
        else:
            layers = (Repeat(times, spec.layers),)
    else:
        layers = body + tuple(_strip_names(n) for _ in range(times - 1) for n in body)
    return _checked(spec.replace(layers=layers), f"stack x{times}")


def _has_names(nodes: tuple[Node, ...]) -> bool:
    return any(_strip_names(n) != n for n in nodes)


def _checked(spec: ArchSpec, what: str) -> ArchSpec:
    try:
        return validate_spec(spec)
    except UserError as e:
        raise UserError(f"{what} gives an invalid spec: {e}") from None


# ------------------------------------------------------------------------------------------------
# Fitting a parameter count

Count = Literal["non_embedding", "total", "active"]
Method = Literal["auto", "stack", "stretch"]
STRETCH_FROM = 16          # the Composer rule: stack searches of about 6 layers, stretch those of 16 or more
WIDTH_QUANTA = (64, 32, 16, 8, 1)


def param_count(spec: ArchSpec, count: Count = "non_embedding") -> int:
    """Parameters by `count`: non-embedding (default), total, or active non-embedding (MoE: routed top-k)."""
    cost = model_cost(spec, seq_len=min(spec.max_seq_len, 64))
    embedding = cost.params - cost.non_embedding_params
    if count == "non_embedding":
        return cost.non_embedding_params
    if count == "total":
        return cost.params
    if count == "active":
        return cost.active_params - embedding
    raise UserError(f"count must be one of {', '.join(typing.get_args(Count))}, got {count!r}")


def choose_method(spec: ArchSpec, method: Method = "auto") -> Literal["stack", "stretch"]:
    if method == "auto":
        return "stretch" if len(units(spec)) >= STRETCH_FROM else "stack"
    if method not in ("stack", "stretch"):
        raise UserError(f"method must be one of {', '.join(typing.get_args(Method))}, got {method!r}")
    return method


def deepen(spec: ArchSpec, method: Literal["stack", "stretch"], depth: int) -> ArchSpec:
    """`depth` is the stack factor for `stack` and the unit count for `stretch`."""
    return stack(spec, depth) if method == "stack" else stretch(spec, depth)


def fit_to_params(spec: ArchSpec, n_params: int, tol: float = 0.02, *, method: Method = "auto",
                  count: Count = "non_embedding") -> ArchSpec:
    """A deeper/wider (or shallower/narrower) spec whose parameter count is within `tol` of `n_params`.

    Parameters grow about as depth * width^2, so for a factor s = n_params / current the depth grows by
    s^(1/3) (rounded: stack factor >= 1, or stretched unit count) and the width is then searched: the first
    of the quanta 64, 32, 16, 8, 1 whose best d_model lands within `tol`. When no width does, neighbouring
    depths are tried. Parameters are counted by `count` (non-embedding by default, as in Kaplan et al.;
    `active` for MoE: the parameters one token touches).
    """
    if n_params <= 0:
        raise UserError(f"the parameter target must be positive, got {n_params}")
    method = choose_method(spec, method)
    current = param_count(spec, count)
    if current <= 0:
        raise UserError(f"the spec has no {count.replace('_', '-')} parameters to scale")
    factor = (n_params / current) ** (1 / 3)
    n_units = len(units(spec))
    if method == "stack":
        base = max(1, round(factor))
        depths = sorted({base, max(1, base - 1), base + 1}, key=lambda d: (abs(d - base), d))
    else:
        base = max(len(runs(spec)), round(n_units * factor))
        depths = sorted({max(len(runs(spec)), base + k) for k in range(-3, 4)},
                        key=lambda d: (abs(d - base), d))
    best: tuple[float, ArchSpec] | None = None
    for depth in depths:
        deep = deepen(spec, method, depth)
        for quantum in WIDTH_QUANTA:
            found = _search_width(deep, n_params, quantum, lambda s: param_count(s, count))
            if found is None:
                continue
            error = abs(found[0] - n_params) / n_params
            if best is None or error < best[0]:
                best = (error, found[1])
            if error <= tol:
                return found[1]
    detail = f"; closest {best[0]:.1%} off" if best else ""
    raise UserError(f"no depth/width near {method} reaches {n_params:,} {count.replace('_', '-')} parameters "
                    f"within {tol:.1%}{detail}")


def _search_width(spec: ArchSpec, target: int, quantum: int,
                  measure: Callable[[ArchSpec], int]) -> tuple[int, ArchSpec] | None:
    """(params, spec) of the multiple of `quantum` as d_model whose parameter count is closest to `target`."""
    cache: dict[int, tuple[int, ArchSpec] | None] = {}

    def at(k: int) -> tuple[int, ArchSpec] | None:
        if k not in cache:
            try:
                wide = widen(spec, k * quantum)
                cache[k] = (measure(wide), wide)
            except UserError:
                cache[k] = None
        return cache[k]

    lo, hi = 1, max(2, 2 * spec.d_model // quantum)
    while (value := at(hi)) is None or value[0] < target:
        hi *= 2
        if hi * quantum > 1 << 20:
            return None
    while hi - lo > 1:                      # parameters grow with width: bisect for the crossing
        mid = (lo + hi) // 2
        value = at(mid)
        if value is not None and value[0] >= target:
            hi = mid
        else:
            lo = mid
    candidates = [v for k in (lo - 1, lo, hi, hi + 1) if k >= 1 and (v := at(k)) is not None]
    return min(candidates, key=lambda v: abs(v[0] - target)) if candidates else None
