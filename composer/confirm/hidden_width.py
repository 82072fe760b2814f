"""The fine knob of sizing: the hidden widths of a spec's MLPs (d_ff) or, in a spec without a channel mixer that has
one, its token mixers' expansion (`expand`: the inner width round(expand * d_model)), set to multiples of 8 or more.

A hardware-friendly d_model is coarse (from 128 to 192 is 2.25x the parameters) and depth comes in whole units, so
depth and d_model alone rarely land within 1% of a target. The hidden widths move the count in much finer steps
without leaving hardware-friendly multiples: the knob layers' hidden widths are set to U multiples of m in all,
shared among the layers in proportion to their searched widths and spread evenly (`spread`: with six equal MLPs
and U = 6q + 2, two of them get one multiple more), so the step is one multiple of one layer. Parameters are linear
in U, so two counts give the line, the line gives the U that hits the target, and the Us around it (and the nearest
that keep equal widths equal) are counted exactly (`tune`).

The knob of a primitive is read off its Config fields (`knob_of`): `d_ff` (an integer width: the MLP), else a
channel mixer's `expansion` (MoE experts), else `expand` (Mamba, short convolutions, RNNs, ...).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from composer.errors import UserError
from composer.spec import ArchSpec, Layer, Loop, Node, Parallel, Repeat, split_widths
from primitives.base import ConfigError, get_primitive, make_config
from scaling.rules import param_count

MULTIPLES = (64, 32, 16, 8)     # of a hidden width, coarsest first
STEPS_AT_LEAST = 4              # a multiple is used only when the hidden width spans at least this many of it
FACTOR_RANGE = (2 / 3, 3 / 2)   # how far the knob may move the hidden widths from the searched ones


def knob_of(op: str) -> str | None:
    """The field of primitive `op` that sets its hidden width, or None."""
    cls = get_primitive(op)
    names = {f.name for f in dataclasses.fields(cls.Config)}
    if "d_ff" in names:
        return "d_ff"
    if cls.kind == "channel_mixer" and "expansion" in names:
        return "expansion"
    return "expand" if "expand" in names else None


@dataclass(frozen=True)
class Knob:
    """The knob layers of one spec: per layer (its path in the node tree), its op, field, width and hidden width."""

    layers: tuple[tuple[tuple[int, ...], str, str, int, int], ...]     # (path, op, field, d_model there, hidden)

    def describe(self, other: Knob) -> str:
        """`mlp d_ff 256 -> 264`: this knob's hidden widths and `other`'s (the same layers, tuned)."""
        parts = []
        for op in dict.fromkeys(layer[1] for layer in self.layers):
            field = next(layer[2] for layer in self.layers if layer[1] == op)
            before = sorted({layer[4] for layer in self.layers if layer[1] == op})
            after = sorted({layer[4] for layer in other.layers if layer[1] == op})
            name = "d_ff" if field == "d_ff" else f"inner width ({field})"
            parts.append(f"{op} {name} {'/'.join(map(str, before))} -> {'/'.join(map(str, after))}")
        return ", ".join(parts)

    def hidden(self) -> dict[str, list[int]]:
        out: dict[str, set[int]] = {}
        for _, op, _, _, h in self.layers:
            out.setdefault(op, set()).add(h)
        return {op: sorted(v) for op, v in out.items()}


def find_knob(spec: ArchSpec) -> Knob | None:
    """The spec's knob layers (channel mixers first: token mixers only when no channel mixer has a knob); None when
    it has none. Shared layers (`share:`) hold no weights of their own and are left out."""
    found: list[tuple[tuple[int, ...], str, str, int, int]] = []

    def visit(node: Node, path: tuple[int, ...], width: int) -> None:
        if isinstance(node, Layer):
            field = None if node.share is not None else knob_of(node.op)
            if field is not None:
                hidden = hidden_width(spec, node, field, width)
                if hidden is not None:
                    found.append((path, node.op, field, width, hidden))
        elif isinstance(node, (Repeat, Loop)):
            for i, inner in enumerate(node.body):
                visit(inner, (*path, i), width)
        elif isinstance(node, Parallel):
            widths = split_widths(width, node.split) if node.split else [width] * len(node.branches)
            for i, (branch, w) in enumerate(zip(node.branches, widths)):
                visit(branch, (*path, i), w)

    for i, node in enumerate(spec.layers):
        visit(node, (i,), spec.d_model)
    channel = [f for f in found if get_primitive(f[1]).kind == "channel_mixer"]
    chosen = channel or found
    return Knob(tuple(chosen)) if chosen else None


def hidden_width(spec: ArchSpec, node: Layer, field: str, width: int) -> int | None:
    cls = get_primitive(node.op)
    try:
        cfg = cls.resolve(make_config(cls, {**spec.defaults.get(node.op, {}), **node.params}), width)
    except (ConfigError, TypeError, ValueError):
        return None
    value = getattr(cfg, field, None)
    if field == "d_ff":
        return value if isinstance(value, int) else None
    return int(round(value * width)) if isinstance(value, (int, float)) and value > 0 else None


def spread(knob: Knob, units: int, multiple: int) -> dict[tuple[int, ...], int]:
    """`units` multiples of hidden width shared among the knob layers in proportion to their hidden widths, spread
    evenly (cumulative rounding: with equal widths, n layers and units = q n + r, r layers evenly placed get q + 1
    multiples and the others q), at least one each; per layer path its new hidden width."""
    total = sum(h for *_, h in knob.layers)
    out, cumulative, given = {}, 0, 0
    for path, *_, h in knob.layers:
        cumulative += h
        upto = round(units * cumulative / total)
        out[path] = max(1, upto - given) * multiple
        given = upto
    return out


def scaled(spec: ArchSpec, knob: Knob, units: int, multiple: int) -> tuple[ArchSpec, Knob]:
    """The spec with its knob layers' hidden widths set to `units` multiples of `multiple` in all (`spread`);
    raises UserError when a primitive rejects the result."""
    new = spread(knob, units, multiple)
    fields = {path: (field, width) for path, _, field, width, _ in knob.layers}
    touched_d_ff = {op for _, op, field, _, _ in knob.layers if field == "d_ff"}

    def rewrite(node: Node, path: tuple[int, ...]) -> Node:
        if isinstance(node, Layer):
            if path not in new:
                return node
            field, width = fields[path]
            params = dict(node.params)
            if field == "d_ff":
                params.pop("expansion", None)
                params["d_ff"] = new[path]
            else:
                params[field] = new[path] / width
            return dataclasses.replace(node, params=params)
        if isinstance(node, (Repeat, Loop)):
            return dataclasses.replace(node, body=tuple(rewrite(n, (*path, i)) for i, n in enumerate(node.body)))
        if isinstance(node, Parallel):
            return dataclasses.replace(node, branches=tuple(rewrite(n, (*path, i))
                                                            for i, n in enumerate(node.branches)))
        return node

    defaults = {op: ({k: v for k, v in params.items() if k not in ("expansion", "d_ff")} if op in touched_d_ff
                     else params) for op, params in spec.defaults.items()}
    out = spec.replace(defaults=defaults, layers=tuple(rewrite(n, (i,)) for i, n in enumerate(spec.layers)))
    tuned = Knob(tuple((path, op, field, width, new[path]) for path, op, field, width, _ in knob.layers))
    return out, tuned


@dataclass(frozen=True)
class Tuned:
    spec: ArchSpec
    params: int
    before: Knob
    after: Knob
    multiple: int

    @property
    def factor(self) -> float:
        """How far the hidden widths moved: the ratio of their sums."""
        return sum(h for *_, h in self.after.layers) / sum(h for *_, h in self.before.layers)

    def describe(self) -> str:
        return f"{self.before.describe(self.after)} (multiple of {self.multiple})"

    def as_dict(self) -> dict[str, Any]:
        return {"multiple": self.multiple, "factor": self.factor, "before": self.before.hidden(),
                "after": self.after.hidden(), "description": self.describe()}


def tune(spec: ArchSpec, target: int, tolerance: float, count: str) -> Tuned | None:
    """The spec with its hidden widths moved, within FACTOR_RANGE of the searched ones, so that its count lands
    within `tolerance` of `target`; None when no multiple lands. Preferred: equal widths where the searched ones
    were equal, then the coarsest multiple, then the count closest to the target."""
    knob = find_knob(spec)
    if knob is None:
        return None
    n = len(knob.layers)
    uniform = len({h for *_, h in knob.layers}) == 1
    total = sum(h for *_, h in knob.layers)
    counts: dict[tuple[int, int], tuple[int, ArchSpec, Knob] | None] = {}

    def at(units: int, multiple: int) -> tuple[int, ArchSpec, Knob] | None:
        if (units, multiple) not in counts:
            try:
                wide, tuned = scaled(spec, knob, units, multiple)
                counts[(units, multiple)] = (param_count(wide, count), wide, tuned)
            except UserError:
                counts[(units, multiple)] = None
        return counts[(units, multiple)]

    found: list[tuple[tuple, Tuned]] = []
    for m_rank, multiple in enumerate(MULTIPLES):
        if min(h for *_, h in knob.layers) < STEPS_AT_LEAST * multiple:
            continue
        base = max(n, round(total / multiple))
        step = max(n, base // 2)
        first, second = at(base, multiple), at(base + step, multiple)
        if first is None or second is None or second[0] == first[0]:
            continue
        guess = base + (target - first[0]) * step / (second[0] - first[0])     # parameters are linear in the units
        low, high = (total * f / multiple for f in FACTOR_RANGE)
        tried = {u for u in range(math.floor(guess) - 1, math.ceil(guess) + 2)}
        tried |= {n * math.floor(guess / n), n * math.ceil(guess / n)}           # the equal widths around it
        for units in sorted(u for u in tried if max(n, low) <= u <= high):
            value = at(units, multiple)
            if value is not None and abs(value[0] - target) <= tolerance * target:
                equal = len({h for *_, h in value[2].layers}) == 1
                found.append(((not equal and uniform, m_rank, abs(value[0] - target)),
                              Tuned(value[1], value[0], knob, value[2], multiple)))
    return min(found, key=lambda f: f[0])[1] if found else None
