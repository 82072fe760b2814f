"""Equal-size candidates: a space's `match:` makes every candidate's size agree with one target by adjusting a
named width, so a search compares architectures and not sizes (the MAD protocol and the Composer paper compare
at equal parameters).

    match: {params: base, by: d_ff, tol: 0.02}              # non-embedding parameters of the base candidate
    match: {params: 600000, count: active, by: d_model}
    match: {state_bytes: 65536, by: d_state, context: 2048}

- The quantity is `params` (counted `non_embedding` (default), `active` (MoE: what one token touches) or
  `total`) or `state_bytes` (the inference state at `context`, default the task's sequence length).
- The target is a number, or `base`: the quantity of the space's reference candidate, the one built from the
  first value of every searched choice (the low end of a range). Write the reference choice first.
- `by` is `d_model` or a primitive parameter (`d_ff`, `d_state`, ...). For `d_model` the model width is set;
  for a parameter, every layer whose primitive has it is set to its resolved value times a common factor (all
  the same value when they agree). The integer that lands closest to the target is kept; a candidate that
  cannot land within `tol` (relative) is not trained (status invalid, with the reason).

Each trial records the match (target, the width chosen, the size reached, the relative error) in its result.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Literal

from composer.costs import model_cost
from composer.errors import UserError
from composer.fields import option
from composer.spec import ArchSpec, Layer, Loop, Node, Parallel, Repeat
from composer.spec_parse import validate_spec
from primitives.base import config_fields, get_primitive
from scaling.rules import Count

Quantity = Literal["params", "state_bytes"]
QUANTITIES = typing.get_args(Quantity)
LIMIT = 1 << 20         # the largest width tried


class MatchError(ValueError):
    """A candidate's size cannot be matched (the message says why)."""


@dataclass(frozen=True)
class Match:
    quantity: Quantity = option(help="what is matched")
    target: float | None = option(help="the size; None: `base`, the space's reference candidate's")
    by: str = option(help="the width adjusted: d_model or a primitive parameter")
    tol: float = option(0.02, "how far (relative) a candidate may land from the target", gt=0)
    count: Count = option("non_embedding", "how params are counted")
    context: int | None = option(None, "state_bytes at this context (default: the task's sequence length)", ge=1)

    def measure(self, spec: ArchSpec, seq_len: int) -> int:
        cost = model_cost(spec, seq_len=self.context or seq_len)
        if self.quantity == "state_bytes":
            return cost.state_bytes
        embedding = cost.params - cost.non_embedding_params
        return {"non_embedding": cost.non_embedding_params, "total": cost.params,
                "active": cost.active_params - embedding}[self.count]

    def label(self) -> str:
        return f"{self.count.replace('_', '-')} params" if self.quantity == "params" else "state bytes"

    def fit(self, spec: ArchSpec, target: float, seq_len: int) -> tuple[ArchSpec, dict[str, Any]]:
        """`spec` with the `by` width that brings its size closest to `target`, and the record of the match;
        MatchError when no width lands within `tol`."""
        if self.by != "d_model" and _first_value(spec, self.by) is None:
            size = self.measure(spec, seq_len)       # nothing to adjust: fine if it is the right size already
            if abs(size - target) > self.tol * target:
                raise MatchError(f"no layer has the parameter {self.by!r} to adjust, and the {self.label()} "
                                 f"{size:,} are {abs(size - target) / target:.1%} off {target:,.0f}")
            return spec, {"quantity": self.label(), "target": round(target), "by": self.by, "value": None,
                          "reached": size, "error": round(abs(size - target) / target, 5)}
        knob, build = self._knob(spec)
        measured: dict[int, tuple[int, ArchSpec] | None] = {}

        def at(x: int) -> tuple[int, ArchSpec] | None:
            if x not in measured:
                try:
                    wide = build(x)
                    measured[x] = (self.measure(wide, seq_len), wide)
                except (UserError, ValueError):
                    measured[x] = None
            return measured[x]

        def valid_from(x: int, direction: int) -> int | None:
            """The nearest width from `x` on (in `direction`) that builds a valid spec."""
            for y in range(x, x + direction * 64, direction):
                if 1 <= y <= LIMIT and at(y) is not None:
                    return y
            return None

        def reaches(x: int) -> bool:
            """Whether the first valid width from `x` up reaches the target (monotone in x)."""
            y = valid_from(x, 1)
            return y is None or at(y)[0] >= target

        hi = max(2, knob)
        while not reaches(hi) and hi < LIMIT:
            hi *= 2
        lo = 1                              # the smallest x that reaches the target is in (lo - 1, hi]
        while lo < hi:
            mid = (lo + hi) // 2
            if reaches(mid):
                hi = mid
            else:
                lo = mid + 1
        near = {y for y in (valid_from(lo, 1), valid_from(lo - 1, -1) if lo > 1 else None) if y is not None}
        options = sorted((abs(at(y)[0] - target), y) for y in near)
        if not options:
            raise MatchError(f"no valid {self.by} brings the {self.label()} near {target:,.0f}")
        _, best = options[0]
        size, fitted = at(best)
        error = abs(size - target) / target
        if error > self.tol:
            raise MatchError(f"cannot match {self.label()} {target:,.0f} within {self.tol:.1%} by {self.by}: "
                             f"closest {size:,} ({self.by} {best}, {error:.1%} off)")
        return fitted, {"quantity": self.label(), "target": round(target), "by": self.by, "value": best,
                        "reached": size, "error": round(error, 5)}

    def _knob(self, spec: ArchSpec) -> tuple[int, Any]:
        """The current value of the width and a function width -> spec."""
        if self.by == "d_model":
            return spec.d_model, lambda x: validate_spec(spec.replace(d_model=x))
        reference = _first_value(spec, self.by)
        assert reference is not None

        def build(x: int) -> ArchSpec:
            return validate_spec(spec.replace(layers=tuple(_set_field(spec, n, self.by, x / reference)
                                                           for n in spec.layers)))
        return reference, build


def _has(op: str, name: str) -> bool:
    return name in config_fields(get_primitive(op))


def _first_value(spec: ArchSpec, name: str) -> int | None:
    def walk(node: Node, width: int) -> int | None:
        if isinstance(node, Layer):
            if node.share is None and _has(node.op, name):
                value = spec.resolved_params(node, width).get(name)
                return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
            return None
        if isinstance(node, (Repeat, Loop)):
            children = [(b, width) for b in node.body]
        else:
            children = list(zip(node.branches, node.widths(width)))
        for child, w in children:
            if (found := walk(child, w)) is not None:
                return found
        return None

    for node in spec.layers:
        if (found := walk(node, spec.d_model)) is not None:
            return found
    return None


def _set_field(spec: ArchSpec, node: Node, name: str, factor: float, width: int | None = None) -> Node:
    """`node` with every layer's `name` set to its resolved value times `factor` (at least 1)."""
    width = width or spec.d_model
    if isinstance(node, Layer):
        if node.share is not None or not _has(node.op, name):
            return node
        value = spec.resolved_params(node, width)[name]
        return dataclasses.replace(node, params={**node.params, name: max(1, round(value * factor))})
    if isinstance(node, (Repeat, Loop)):
        return dataclasses.replace(node, body=tuple(_set_field(spec, b, name, factor, width) for b in node.body))
    assert isinstance(node, Parallel)
    return dataclasses.replace(node, branches=tuple(_set_field(spec, b, name, factor, w)
                                                    for b, w in zip(node.branches, node.widths(width))))
