"""The zoo: published hybrid architectures as exact specs at their real sizes, with the counts their vendors state.

    from composer.zoo import zoo_member, zoo_members
    member = zoo_member("jamba")          # a ZooMember: the spec, its source, the published counts
    member.spec.d_model, member.params.text, member.check(model_cost(member.spec))

Each member is two things in `search_spaces/zoo/`: a plain spec file `<name>.yaml` (loadable by every command; its
header comment gives the source and how each number was read from it) and an entry in `published.yaml`: the title,
the source, the parameter counts as the vendor states them ("51.57B", "~8.10B", "354,483,968"), the counting
convention each follows, the layer composition, and what Composer cannot express of the model (said, never faked: a
count short of those parts is reported short). A model Composer cannot build at all has an entry
(`expressible: false`, with what is missing) and no spec file.

Counting conventions (`counted`):

    all                 every parameter (embedding, LM head when untied, norms)
    no_input_embedding  all but the input embedding table of an untied model (gpt-oss's active count)
    non_embedding       all but the embedding and an untied LM head (MiniMax-Text-01's active count)

A stated figure holds to 0.2% or to half a unit of its last digit, whichever is wider ("1.3B": +-0.05B).

`zoo:NAME` names a member wherever a spec file is taken (`composer show zoo:qwen3_next`, `composer confirm
--baseline zoo:samba`); `period` gives the repeating unit that confirm fits to its sizes (composer/confirm/zoo.py).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from composer.costs import ModelCost
from composer.errors import UserError
from composer.fields import option
from composer.names import unknown_name_message
from composer.reader import Reader
from composer.spec import ArchSpec, Repeat, flatten
from composer.spec_parse import load_spec
from composer.yaml_source import parse_yaml, read_text

ZOO_DIR = Path(__file__).resolve().parent.parent / "search_spaces" / "zoo"
PUBLISHED_FILE = "published.yaml"
PREFIX = "zoo:"
TOLERANCE = 0.002
Counting = Literal["all", "no_input_embedding", "non_embedding"]
COUNTINGS: tuple[str, ...] = ("all", "no_input_embedding", "non_embedding")

_FIGURE = re.compile(r"^(~)?\s*([0-9][0-9,]*(?:\.[0-9]+)?)\s*([KMB]?)$")
_UNITS = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9}


@dataclass(frozen=True)
class Figure:
    """A parameter count as the vendor states it: its value and how precisely it is stated."""

    text: str
    value: float
    tolerance: float      # relative: max(0.2%, half a unit of the last stated digit / value)

    @classmethod
    def parse(cls, text: str, path: str = "") -> Figure:
        found = _FIGURE.match(str(text).strip())
        if not found:
            raise UserError(f"expected a parameter count such as 354,483,968 or 51.57B or ~8.10B, got {text!r}",
                            path=path)
        _, number, unit = found.groups()
        digits = number.replace(",", "")
        decimals = len(digits.split(".")[1]) if "." in digits else 0
        value = float(digits) * _UNITS[unit]
        half_unit = 0.5 * 10 ** -decimals * _UNITS[unit] if unit or decimals else 0.0
        return cls(str(text), value, max(TOLERANCE, half_unit / value if value else 0.0))

    def holds(self, count: int) -> bool:
        return abs(count - self.value) <= self.tolerance * self.value

    def error(self, count: int) -> float:
        return (count - self.value) / self.value


@dataclass(frozen=True)
class PublishedEntry:
    """One member's entry in published.yaml."""

    title: str = option(help="the model's published name")
    source: str = option(help="where the numbers come from: the released config or the paper")
    params: str | None = option(None, "the total parameter count as stated (null: none published)")
    counting: Counting = option("all", "what the total counts")
    active_params: str | None = option(None, "the active parameters per token as stated (MoE; null: not stated)")
    active_counting: Counting = option("all", "what the active count counts")
    missing: tuple[str, ...] = option((), "what Composer cannot express of the model (the count leaves it out)")
    expressible: bool = option(True, "false: Composer cannot build the model at all (`missing` says why); no spec "
                               "file is shipped")
    note: str | None = option(None, "what else a reader of the counts should know (a figure left out, and why)")
    composition: dict[str, int] = option(help="layers per primitive, as the source states them (checked)",
                                         factory=dict)
    unit: int | None = option(None, "confirm's repeating unit: the first N layers (null: each top-level repeat once, "
                              "or the whole list without one)", ge=1)


@dataclass(frozen=True)
class ZooMember:
    name: str
    entry: PublishedEntry
    file: Path

    @functools.cached_property
    def spec(self) -> ArchSpec:
        if not self.entry.expressible:
            raise UserError(f"zoo:{self.name} ({self.entry.title}) cannot be built in Composer: "
                            + "; ".join(self.entry.missing))
        return load_spec(str(self.file))

    @property
    def unit(self) -> ArchSpec:
        """The repeating unit confirm fits to its sizes (see `period`)."""
        return period(self.spec, self.entry.unit)

    @property
    def params(self) -> Figure | None:
        return None if self.entry.params is None else Figure.parse(self.entry.params, f"{self.name}.params")

    @property
    def active_params(self) -> Figure | None:
        raw = self.entry.active_params
        return None if raw is None else Figure.parse(raw, f"{self.name}.active_params")

    def check(self, cost: ModelCost) -> list[str]:
        """What does not hold of the published figures (empty when every stated figure holds)."""
        problems = []
        for label, figure, counting, active in (("params", self.params, self.entry.counting, False),
                                                ("active params", self.active_params, self.entry.active_counting,
                                                 True)):
            if figure is None:
                continue
            got = counted(self.spec, cost, counting, active)
            if not figure.holds(got):
                problems.append(f"{self.name}: {label} {got:,} ({counting}) is {figure.error(got):+.3%} off the "
                                f"published {figure.text} (tolerance {figure.tolerance:.2%})")
        return problems


def counted(spec: ArchSpec, cost: ModelCost, counting: str, active: bool = False) -> int:
    """The total (or active) parameters of `cost` by a counting convention (see the module docstring)."""
    total = cost.active_params if active else cost.params
    table = spec.vocab_size * spec.d_model
    if counting == "all":
        return total
    if counting == "no_input_embedding":
        return total - (0 if spec.tie_embeddings else table)
    if counting == "non_embedding":
        return total - (cost.params - cost.non_embedding_params)
    raise UserError(f"unknown counting {counting!r}: expected one of {', '.join(COUNTINGS)}", path="--count")


@functools.cache
def _published() -> dict[str, PublishedEntry]:
    path = ZOO_DIR / PUBLISHED_FILE
    source = parse_yaml(read_text(path, "zoo index"), filename=str(path))
    reader = Reader(source)
    data = reader.mapping(source.data or {}, "")
    return {str(name): reader.read(PublishedEntry, entry, str(name), what="zoo entry field")
            for name, entry in data.items()}


def zoo_members(expressible_only: bool = False) -> list[ZooMember]:
    """Every member, in published.yaml's order (only those Composer can build, when asked)."""
    return [ZooMember(name, entry, ZOO_DIR / f"{name}.yaml") for name, entry in _published().items()
            if entry.expressible or not expressible_only]


def zoo_member(name: str) -> ZooMember:
    """The member called `name` (with or without the `zoo:` prefix); a UserError suggesting the nearest name."""
    name = name.removeprefix(PREFIX)
    published = _published()
    if name not in published:
        raise UserError(unknown_name_message("zoo member", name, list(published)) + " (see `composer zoo`)")
    return ZooMember(name, published[name], ZOO_DIR / f"{name}.yaml")


def is_zoo_ref(text: str) -> bool:
    return isinstance(text, str) and text.startswith(PREFIX)


def resolve_spec(ref: str) -> ArchSpec:
    """A spec from a file path or a `zoo:NAME` reference."""
    return zoo_member(ref).spec if is_zoo_ref(ref) else load_spec(Path(ref))


def period(spec: ArchSpec, unit: int | None = None) -> ArchSpec:
    """The repeating unit of a member: its first `unit` layers when given (a spec that writes its layers out, as
    MiniMax-Text-01's per-layer decays need), else every top-level `repeat` once (a spec without one is its own
    unit)."""
    if unit is not None:
        return dataclasses.replace(spec, layers=flatten(spec.layers)[:unit])
    layers = []
    for node in spec.layers:
        layers.extend(node.body if isinstance(node, Repeat) else (node,))
    return dataclasses.replace(spec, layers=tuple(layers))
