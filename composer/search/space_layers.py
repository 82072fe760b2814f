"""What a search space searches: a searched value (`Dist`) and the three forms of a space's `layers`, each knowing
its searched names and how a trial builds its layers from what it samples (composer/search/space.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from composer.fields import option
from primitives.base import config_fields, registered

Placement = Literal["spread", "first", "last", "middle"]


@dataclass(frozen=True)
class Dist:
    """One searched value: a categorical `choice`, or an `int` / `float` range (optionally log, step)."""

    kind: str
    values: tuple = ()
    low: float = 0
    high: float = 0
    log: bool = False
    step: float | None = None

    def suggest(self, trial: Any, name: str) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.values))
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def grid(self) -> list | None:
        """Every value, or None for a continuous range."""
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step:
            return [self.low + i * self.step for i in range(int(round((self.high - self.low) / self.step)) + 1)]
        return None

    def points(self) -> float:
        """How many values it takes (inf for a continuous range), counted without listing them."""
        if self.kind == "choice":
            return len(self.values)
        if self.kind == "int":
            return (self.high - self.low) // (self.step or 1) + 1
        return math.floor((self.high - self.low) / self.step) + 1 if self.step else math.inf

    def largest(self) -> Any:
        return max(self.values) if self.kind == "choice" else self.high

    def first(self) -> Any:
        """The reference value: the first choice, or the low end of a range."""
        return self.values[0] if self.kind == "choice" else self.low


Pick = Any      # (value or Dist, parameter name) -> the value a trial uses


def largest(value: Any) -> Any:
    """The largest value a plain or searched value takes."""
    return value.largest() if isinstance(value, Dist) else value


def looped(layers: list[Any], times: int) -> list[Any]:
    return [{"loop": {"times": times, "body": layers}}] if times > 1 else layers


# ----------------------------------------------------------------------------------------------
# The three forms of a space's `layers`


@dataclass(frozen=True)
class ListLayers:
    """A plain DSL list of layers: nothing searched."""

    layers: tuple[Any, ...]

    def build(self, pick: Pick) -> list[Any]:
        return list(self.layers)

    def distributions(self) -> dict[str, Dist]:
        return {}


@dataclass(frozen=True)
class SlotLayers:
    """`n_layers` slots, each a template (`op`, primitive parameters, a `channel` template), any value searched.
    Every slot up to the largest depth is sampled, so each name always offers the same choices."""

    n_layers: int | Dist
    slots: tuple[dict[str, Any], ...]
    loop: int | Dist = 1
    names: tuple[int, ...] | None = None   # an incremental stage's slots: their places in the full-depth model

    def slot_name(self, i: int) -> str:
        """The parameter prefix of slot `i`: `layer<i>`, or `layer<names[i]>` when the slots are a stage of an
        incremental search (named by their place in the full-depth model, so a name always offers the same
        choices)."""
        return f"layer{self.names[i] if self.names else i}"

    def build(self, pick: Pick) -> list[Any]:
        n = pick(self.n_layers, "n_layers")
        layers = []
        for i, template in enumerate(self.slots):
            built = _slot(template, self.slot_name(i), pick)
            if i < n:
                layers.extend(built)
        return looped(layers, pick(self.loop, "loop"))

    def distributions(self) -> dict[str, Dist]:
        seen = {key: value for key, value in (("n_layers", self.n_layers), ("loop", self.loop))
                if isinstance(value, Dist)}
        for i, template in enumerate(self.slots):
            _template_dists(template, self.slot_name(i), seen)
        return seen


@dataclass(frozen=True)
class PatternLayers:
    """`n_layers` layers of `mixer`, `n_attention` of them attention placed by `placement`, each followed by
    `channel` when given."""

    n_layers: int | Dist = option(help="how many layers")
    mixer: str | Dist = option(help="the primitive of the layers that are not attention")
    n_attention: int | Dist = option(1, "how many of them are attention")
    placement: Placement | Dist = option("spread", "where the attention layers go: spread, first, last or middle")
    attention: str = option("attention", "the primitive of the attention layers")
    channel: str | Dist | None = option(None, "the channel mixer after every layer")
    loop: int | Dist = option(1, "loop the whole stack this many times (the space's `layers.loop`)")

    def build(self, pick: Pick) -> list[Any]:
        n = pick(self.n_layers, "n_layers")
        k = pick(self.n_attention, "n_attention")
        mixer = pick(self.mixer, "mixer")
        positions = set(placement_positions(n, k, pick(self.placement, "placement")))
        channel = pick(self.channel, "channel")
        layers: list[Any] = []
        for i in range(n):
            layers.append(self.attention if i in positions else mixer)
            if channel:
                layers.append(channel)
        return looped(layers, pick(self.loop, "loop"))

    def distributions(self) -> dict[str, Dist]:
        return {key: getattr(self, key) for key in ("n_layers", "n_attention", "mixer", "placement", "loop",
                                                     "channel") if isinstance(getattr(self, key), Dist)}


LayerSpace = ListLayers | SlotLayers | PatternLayers


def placement_positions(n: int, k: int, placement: str) -> list[int]:
    """Where `k` attention layers go among `n`: spread evenly (each at the end of its group), first, last,
    or centred."""
    k = max(0, min(k, n))
    if placement == "spread":
        return [(j + 1) * n // k - 1 for j in range(k)]
    if placement == "first":
        return list(range(k))
    if placement == "last":
        return list(range(n - k, n))
    start = (n - k) // 2
    return list(range(start, start + k))


def _slot(template: dict[str, Any], prefix: str, pick: Pick) -> list[Any]:
    """The layers of one slot: its primitive with its parameters, then its channel mixer if any."""
    op = pick(template["op"], f"{prefix}.op")
    if op == "none":
        return []
    fields = set(config_fields(registered()[op]))
    layer: dict[str, Any] = {"op": op}
    for key, value in template.items():
        if key not in ("op", "channel") and key in fields:
            layer[key] = pick(value, f"{prefix}.{key}")
    out: list[Any] = [layer if len(layer) > 1 else op]
    if template.get("channel") is not None:
        out.extend(_slot(template["channel"], f"{prefix}.channel", pick))
    return out


def _template_dists(template: dict[str, Any], prefix: str, seen: dict[str, Dist]) -> None:
    for key, value in template.items():
        if key == "channel" and value is not None:
            _template_dists(value, f"{prefix}.channel", seen)
        elif isinstance(value, Dist):
            seen[f"{prefix}.{key}"] = value
