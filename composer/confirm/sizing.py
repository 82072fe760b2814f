"""Fit a candidate to a parameter target with hardware-friendly widths, and say what the rounding did.

Depth follows the Composer rule (`scaling.rules.choose_method`: stack the searched block when it has fewer
than 16 units, stretch each run of identical layers otherwise); parameters grow about as depth * width^2,
so the rule's depth is the cube root of the growth (stack factor, or unit count). The width is rounded to a
*hardware-friendly* multiple (matrix tiles and vector widths of CPUs and GPUs): a multiple of 64 from 128 on,
of 16 below. Such widths are coarse (from 128 to 192 is 2.25x the parameters), so the rule's depth and its
neighbours (stack factor -1 to +2, or unit count +-3) are all tried, each at the width closest to the target,
and the fine step is the hidden widths (composer/confirm/hidden_width.py): the MLPs' d_ff, or in a spec without
MLPs the mixers' expansion, scaled together and rounded to a multiple of 64, 32, 16 or 8 (the coarsest that
lands). Among the (depth, width, hidden width) choices within `tolerance` of the target the one kept moves the
hidden widths by at most KNOB_FREE, then has the depth closest to the rule's, then moves the hidden widths least.
When none lands, finer d_model widths are allowed one tier at a time: multiples of 32 from 128 on, then of 16,
then of 8 everywhere. Every head dimension (a primitive's `head_dim`, else its input width over `n_heads`) must
stay a multiple of 8 or one the searched architecture already had; head counts follow `scaling.rules.widen`
(head dimensions kept). When none of these lands within `tolerance`, any width is allowed as a last resort, and
the result says it is not hardware-friendly.

`Sized` records the request and the result: parameters requested and got, the depth the rule gave and the
one used, the width used, its multiple, the hidden widths before and after, and the integer width that would have
hit the target at that depth without them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from composer.confirm.hidden_width import Tuned, tune
from composer.errors import UserError
from composer.spec import ArchSpec, Layer, Loop, Node, Parallel, flatten, split_widths
from primitives.base import ConfigError, get_primitive, make_config
from scaling.rules import choose_method, deepen, param_count, runs, units, widen

MAX_WIDTH = 1 << 15
STRETCH_NEIGHBOURS = 3
KNOB_FREE = 1.25         # hidden widths moved by at most this factor count as unchanged: the rule's depth wins
# Each tier adds widths to the previous one: 16..112 by 16 and 128 on by 64; then by 32, 16 from 128 on; then by 8;
# then (the last resort, not hardware-friendly) any width with any valid head count.
TIERS = ((64, 16), (32, 16), (16, 16), (8, 8), (1, 1))       # (multiple from 128 on, multiple below 128)


def friendly_widths(tier: int, limit: int = MAX_WIDTH) -> list[int]:
    """The widths of tier `tier` (0: the hardware-friendly ones; each later tier adds finer multiples)."""
    above, below = TIERS[tier]
    if above == 1:
        return list(range(1, limit + 1))
    return sorted({*range(below, 128, below), *range(128, limit + 1, above)})


def width_multiple(d_model: int) -> int:
    """The largest of 64, 32, 16, 8 that divides d_model (1 when none does)."""
    return next((m for m in (64, 32, 16, 8) if d_model % m == 0), 1)


@dataclass(frozen=True)
class Sized:
    """A candidate fitted to one size, and how."""

    spec: ArchSpec
    requested: int
    params: int
    method: str                      # stack | stretch
    rule_depth: int                  # the depth the cube-root rule gives (stack factor or unit count)
    depth: int                       # the depth used
    units: int                       # layer units after deepening
    d_model: int
    exact_d_model: int | None        # the integer width closest to the target at this depth (None: none valid)
    head_dims: dict[str, list[int]]  # per primitive with heads: the distinct head dimensions
    hardware: bool = True            # False: no hardware-friendly width landed within tolerance (last resort)
    hidden: dict[str, Any] | None = None     # the hidden widths moved to land (composer/confirm/hidden_width.py)

    @property
    def error(self) -> float:
        return (self.params - self.requested) / self.requested

    def describe(self) -> str:
        depth = f"stack x{self.depth}" if self.method == "stack" else f"stretch to {self.depth}"
        if self.depth != self.rule_depth:
            depth += f" (rule: {self.rule_depth})"
        exact = f"; {self.exact_d_model} would fit exactly" if self.exact_d_model not in (None, self.d_model) else ""
        if not self.hardware:
            exact += "; not hardware-friendly: no multiple of 8 with head dims a multiple of 8 lands within tolerance"
        heads = ", ".join(f"{op} head dim {'/'.join(map(str, dims))}" for op, dims in self.head_dims.items())
        units = f"{self.units} unit{'s' * (self.units != 1)}"
        hidden = f"; {self.hidden['description']}" if self.hidden else ""
        return (f"{self.requested:,} -> {self.params:,} ({self.error:+.1%}); {units} ({depth}); "
                f"d_model {self.d_model} (multiple of {width_multiple(self.d_model)}{exact}){hidden}"
                + (f"; {heads}" if heads else ""))

    def as_dict(self) -> dict[str, Any]:
        return {"requested": self.requested, "params": self.params, "error": self.error, "method": self.method,
                "rule_depth": self.rule_depth, "depth": self.depth, "units": self.units, "d_model": self.d_model,
                "multiple": width_multiple(self.d_model), "exact_d_model": self.exact_d_model,
                "head_dims": self.head_dims, "hardware_friendly": self.hardware, "hidden": self.hidden,
                "description": self.describe()}


class _Widths:
    """Parameter counts of one deepened spec at each width, cached; None where the spec is invalid, or (when
    `strict`) a head dimension is not sensible (see `sensible_heads`)."""

    def __init__(self, spec: ArchSpec, count: str, allowed_heads: dict[str, list[int]]):
        self.spec, self.count, self.allowed_heads = spec, count, allowed_heads
        self.cache: dict[int, tuple[int, ArchSpec, bool] | None] = {}
        self.strict = True

    def at(self, width: int) -> tuple[int, ArchSpec] | None:
        if width not in self.cache:
            try:
                wide = widen(self.spec, width)
                sensible = sensible_heads(head_dims(wide), self.allowed_heads)
                self.cache[width] = (param_count(wide, self.count), wide, sensible)
            except UserError:
                self.cache[width] = None
        found = self.cache[width]
        return None if found is None or (self.strict and not found[2]) else found[:2]

    def closest(self, widths: list[int], target: int) -> tuple[int, int, ArchSpec] | None:
        """(width, params, spec) of the valid width in the sorted `widths` closest to `target` (parameters grow
        with width: bisect for the crossing, then look at the neighbours)."""
        lo, hi = 0, len(widths) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            value = self.at(widths[mid]) or self._near_valid(widths, mid)
            if value is not None and value[0] >= target:
                hi = mid
            else:
                lo = mid + 1
        found = [(w, *v) for i in range(max(0, lo - 2), min(len(widths), lo + 2)) if (v := self.at(w := widths[i]))]
        return min(found, key=lambda f: abs(f[1] - target)) if found else None

    def _near_valid(self, widths: list[int], i: int) -> tuple[int, ArchSpec] | None:
        for j in (i + 1, i - 1, i + 2, i - 2):
            if 0 <= j < len(widths) and (value := self.at(widths[j])) is not None:
                return value
        return None


def rule_depths(spec: ArchSpec, method: str, target: int, count: str) -> tuple[int, list[int]]:
    """The rule's depth for `target` and the depths tried, closest to the rule's first."""
    factor = (target / param_count(spec, count)) ** (1 / 3)
    if method == "stack":
        base = max(1, round(factor))
        tried = {max(1, base + k) for k in (-1, 0, 1, 2)}
    else:
        least = len(runs(spec))
        base = max(least, round(len(units(spec)) * factor))
        tried = {max(least, base + k) for k in range(-STRETCH_NEIGHBOURS, STRETCH_NEIGHBOURS + 1)}
    return base, sorted(tried, key=lambda d: (abs(d - base), d))


def fit_hardware(spec: ArchSpec, target: int, *, method: str = "auto", count: str = "non_embedding",
                 tolerance: float = 0.01, what: str = "the architecture") -> Sized:
    """`spec` deepened by the Composer rule and widened to the coarsest tier of hardware-friendly widths that,
    with its hidden widths tuned, lands within `tolerance` (relative) of `target` parameters (see the module
    docstring); a UserError when nothing does."""
    if target <= 0:
        raise UserError(f"the parameter target must be positive, got {target}")
    chosen = choose_method(spec, method)
    if param_count(spec, count) <= 0:
        raise UserError(f"{what} has no {count.replace('_', '-')} parameters to scale")
    base, depths = rule_depths(spec, chosen, target, count)
    tables = {}
    original_heads = head_dims(spec)
    for depth in depths:
        try:
            tables[depth] = _Widths(deepen(spec, chosen, depth), count, original_heads)
        except UserError:
            continue
    closest: tuple[float, int, ArchSpec] | None = None     # error, params, spec
    for tier in range(len(TIERS)):
        widths = friendly_widths(tier)
        last = tier == len(TIERS) - 1
        options: list[tuple[tuple, int, int, ArchSpec, Tuned | None, int]] = []  # preference, depth, params, spec,
        #                                                                            tuned, params untuned
        for rank, (depth, table) in enumerate(tables.items()):
            table.strict = not last
            found = table.closest(widths, target)
            if found is None:
                continue
            _, params, wide = found
            error = abs(params - target) / target
            if closest is None or error < closest[0]:
                closest = (error, params, wide)
            tuned = None if error <= tolerance else tune(wide, target, tolerance, count)
            if error <= tolerance:
                options.append(((False, rank, 0.0, error), depth, params, wide, None, params))
            elif tuned is not None:
                change = abs(math.log(tuned.factor))
                options.append(((change > math.log(KNOB_FREE), rank, change, abs(tuned.params - target) / target),
                                depth, tuned.params, tuned.spec, tuned, params))
            if options and not min(options, key=lambda o: o[0])[0][0]:
                break                   # later depths are further from the rule's: none can be preferred
        if options:
            _, depth, params, wide, tuned, untuned = min(options, key=lambda o: o[0])
            return Sized(wide, target, params, chosen, base, depth, len(units(wide)), wide.d_model,
                         exact_width(tables[depth], wide.d_model, untuned, target),
                         head_dims(wide), hardware=not last, hidden=None if tuned is None else tuned.as_dict())
    detail = "" if closest is None else (f"; the closest is {closest[1]:,} parameters ({closest[0]:.1%} off) at "
                                         f"d_model {closest[2].d_model} and {len(units(closest[2]))} layers")
    raise UserError(f"cannot fit {what} to {target:,} {count.replace('_', '-')} parameters within "
                    f"{tolerance:.0%}{detail}")


def exact_width(table: _Widths, width: int, params: int, target: int) -> int | None:
    """The valid integer width closest to `target` parameters near width * sqrt(target / params)."""
    table.strict = False
    guess = max(1, round(width * (target / params) ** 0.5))
    found = [(w, v[0]) for w in range(max(1, guess - 3), guess + 4) if (v := table.at(w)) is not None]
    return min(found, key=lambda f: (abs(f[1] - target), f[0]))[0] if found else None


def sensible_heads(dims: dict[str, list[int]], original: dict[str, list[int]]) -> bool:
    """Every head dimension a multiple of 8, or one the searched architecture already had for that primitive."""
    return all(d % 8 == 0 or d in original.get(op, ()) for op, values in dims.items() for d in values)


def head_dims(spec: ArchSpec) -> dict[str, list[int]]:
    """Per primitive with heads (`n_heads` in its resolved config): the distinct head dimensions."""
    out: dict[str, set[int]] = {}

    def visit(node: Node, width: int) -> None:
        if isinstance(node, Layer):
            cls = get_primitive(node.op)
            try:
                cfg = cls.resolve(make_config(cls, {**spec.defaults.get(node.op, {}), **node.params}), width)
            except (ConfigError, TypeError, ValueError):
                return
            heads = getattr(cfg, "n_heads", None)
            if isinstance(heads, int) and heads > 0:
                dim = getattr(cfg, "head_dim", None) or width // heads
                out.setdefault(node.op, set()).add(int(dim))
        elif isinstance(node, Loop):
            for inner in node.body:
                visit(inner, width)
        elif isinstance(node, Parallel):
            widths = split_widths(width, node.split) if node.split else [width] * len(node.branches)
            for branch, w in zip(node.branches, widths):
                visit(branch, w)

    for node in flatten(spec.layers):
        visit(node, spec.d_model)
    return {op: sorted(dims) for op, dims in sorted(out.items())}
