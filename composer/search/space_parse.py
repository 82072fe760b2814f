"""Parsing a search space (plain data with YAML lines kept) into a validated, frozen SearchSpace; every error
names its YAML path and line. The format is described in composer/search/space.py.

The fields of `SearchSpace` that its declarations say enough about (the task, the seed, repeats and trials, the
constraints) are read by the one reader (composer/reader.py); this module reads what is searched (`base`,
`layers`, `train`: values that may be `{choice: ...}`, `{int: [lo, hi]}` or `{float: [lo, hi]}`), and
composer/search/space_parse_search.py how it is searched (strategy, scheduler, aggregation, equal sizes,
resources, confirmation, logging), as the functions in `FIELDS`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from composer.errors import UserError
from composer.limits import MAX_GRID_POINTS, MAX_INTEGER, MAX_LAYERS
from composer.measure.metrics import METRICS as MEASURED
from composer.measure.metrics import TIMED, check_within
from composer.names import brief, unknown_name_message
from composer.reader import Reader, join, keys_of
from composer.runs import safe_name
from composer.search import space_parse_search as how_searched
from composer.search.space import Objective, SearchSpace
from composer.search.space_layers import (
    Dist,
    LayerSpace,
    ListLayers,
    PatternLayers,
    Placement,
    SlotLayers,
    largest,
)
from composer.training.config import SETTINGS
from composer.training.settings import Setting, flatten
from composer.yaml_source import Source, read_source
from primitives.base import config_fields, registered

DERIVED = ("vocab_size", "seq_len", "data")          # SearchSpace fields the parser sets, not the document
TOP_KEYS = keys_of(SearchSpace, skip=DERIVED)
SET_BY_THE_SEARCH = {"seed": "the search sets each trial's seed: use the top-level `seed`",
                     "resume": "trials always start fresh (a search resumes from its study instead)"}
DEFAULT_STEPS = 200
DEVICE = re.compile(r"cpu|cuda(:\d+)?")
SEARCHED_KEYS = ("choice", "int", "float")


def load_space(obj: Any) -> SearchSpace:
    """A SearchSpace from a path, a YAML string, a dict (or a SearchSpace, returned as is)."""
    if isinstance(obj, SearchSpace):
        return obj
    return parse_space(read_source(obj))


def parse_space(source: Source) -> SearchSpace:
    return _Parser(source).space()


class _Parser(Reader):
    # -- searched values ------------------------------------------------------------------------
    def searchable(self, value: Any, path: str) -> Any:
        """A plain value, or a Dist for `{choice: ...}`, `{int: [lo, hi]}`, `{float: [lo, hi]}`."""
        if not (isinstance(value, dict) and set(SEARCHED_KEYS) & set(value)):
            if isinstance(value, dict):
                return {k: self.searchable(v, join(path, k)) for k, v in value.items()}
            return value
        self.mapping(value, path, (*SEARCHED_KEYS, "log", "step"))
        kinds = [k for k in SEARCHED_KEYS if k in value]
        if len(kinds) > 1:
            raise self.fail(f"give one of choice, int, float; got {', '.join(kinds)}", path)
        kind = kinds[0]
        if kind == "choice":
            values = value["choice"]
            if not isinstance(values, list) or not values:
                raise self.fail(f"expected a non-empty list of values, got {values!r}", join(path, "choice"))
            if len({repr(v) for v in values}) != len(values):
                raise self.fail("the choices repeat a value", join(path, "choice"))
            return Dist("choice", tuple(values))
        bounds = value[kind]
        if not (isinstance(bounds, list) and len(bounds) == 2):
            raise self.fail(f"expected [low, high], got {bounds!r}", join(path, kind))
        low, high = (b if isinstance(b, int) and not isinstance(b, bool) else self.number(b, join(path, kind))
                     for b in bounds)
        if kind == "int" and not all(isinstance(b, int) for b in (low, high)):
            raise self.fail(f"expected integer bounds, got {bounds!r}", join(path, kind))
        if low >= high:
            raise self.fail(f"expected low < high, got {bounds!r}", join(path, kind))
        log = value.get("log", False)
        if log and low <= 0:
            raise self.fail("a log range needs low > 0", join(path, "log"))
        step = value.get("step")
        if step is not None:
            step = self.number(step, join(path, "step"), gt=0)
        if kind == "int" and max(abs(low), abs(high)) > MAX_INTEGER:
            raise self.fail(f"expected integer bounds within {MAX_INTEGER:,} (limit MAX_INTEGER)", join(path, kind))
        dist = Dist(kind, (), low, high, bool(log), step)
        if math.isfinite(dist.points()) and dist.points() > MAX_GRID_POINTS:
            raise self.fail(f"{dist.points():,.0f} values, more than {MAX_GRID_POINTS:,} (limit MAX_GRID_POINTS): "
                            "use a float range or a coarser `step`", path)
        return dist

    # -- the space ------------------------------------------------------------------------------
    def space(self) -> SearchSpace:
        data = self.source.data
        if data is None:
            raise self.fail("the search space is empty", "")
        data = self.mapping(data, "", TOP_KEYS)
        given = {key: parse(self, data[key], key) for key, parse in FIELDS.items() if key in data}
        given.setdefault("train", self.train(None, "train"))         # the default budget
        given["aggregate"] = how_searched.aggregate(self, data.get("aggregate"), given.get("strategy", {}))
        given["match"] = None           # read once the space exists: its target is measured on the space
        space = self.read(SearchSpace, data, skip=DERIVED, **given)
        from composer.tasks import TaskSuite

        built = space.task.built(self, "task")
        first = built.first if isinstance(built, TaskSuite) else built
        space = dataclasses.replace(space, vocab_size=first.vocab_size, seq_len=first.seq_len, data=data)
        how_searched.check_strategy(self, space)
        self.check_measured(space)
        self.check_sample(space)
        if data.get("match") is not None:
            space = how_searched.match(self, data["match"], space)
        return space

    def name(self, value: Any, path: str) -> str:
        try:
            return safe_name(value, "name")          # it becomes the run folder's name
        except UserError as e:
            raise self.fail(e.message, "name") from None

    def description(self, value: Any, path: str) -> str:
        return str(value or "").strip()

    def base(self, value: Any, path: str) -> dict[str, Any]:
        base = self.searchable(self.mapping(value or {}, "base"), "base")
        for key in ("layers", "pattern", "legend"):
            if key in base:
                raise self.fail("give the layers in the top-level `layers` section", join("base", key))
        return base

    def layers(self, value: Any, path: str) -> LayerSpace:
        if isinstance(value, list):
            return ListLayers(tuple(value))
        value = self.mapping(value, "layers", ("n_layers", "slot", "slots", "pattern", "loop"))
        loop = self.searchable(value.get("loop", 1), "layers.loop")
        self.check_ints(loop, "layers.loop")
        if "pattern" in value:
            if "slot" in value or "slots" in value:
                raise self.fail("give either `pattern` or `slot`/`slots`, not both", "layers.pattern")
            return self.pattern(value["pattern"], loop)
        if ("slot" in value) == ("slots" in value):
            raise self.fail("give one of `slot` (with `n_layers`), `slots` (a list) or `pattern`", "layers")
        if "slot" in value:
            if "n_layers" not in value:
                raise self.fail("`slot` needs `n_layers`", "layers.n_layers")
            n_layers = self.searchable(value["n_layers"], "layers.n_layers")
            self.check_ints(n_layers, "layers.n_layers", loop)
            template = self.template(value["slot"], "layers.slot")
            return SlotLayers(n_layers, (template,) * int(largest(n_layers)), loop)
        slots = value["slots"]
        if not isinstance(slots, list) or not slots:
            raise self.fail("expected a non-empty list of slots", "layers.slots")
        if len(slots) > MAX_LAYERS:
            raise self.fail(f"{len(slots):,} slots, more than {MAX_LAYERS:,} (limit MAX_LAYERS)", "layers.slots")
        templates = tuple(self.template(s, join("layers.slots", i)) for i, s in enumerate(slots))
        n_layers = self.searchable(value.get("n_layers", len(slots)), "layers.n_layers")
        self.check_ints(n_layers, "layers.n_layers", loop)
        if largest(n_layers) > len(slots):
            raise self.fail(f"more layers than the {len(slots)} slots given", "layers.n_layers")
        return SlotLayers(n_layers, templates, loop)

    def check_ints(self, value: Any, path: str, loop: Any = 1, least: int = 1) -> None:
        """Layer counts: integers in [least, MAX_LAYERS] (a range checked by its ends, not expanded); with
        `loop`, the largest count times the largest loop is held to MAX_LAYERS too."""
        values = [value.low, value.high] if isinstance(value, Dist) and value.kind == "int" else (
            value.grid() if isinstance(value, Dist) else [value])
        if values is None or not all(isinstance(v, int) and not isinstance(v, bool) and v >= least for v in values):
            raise self.fail(f"expected integers >= {least}, got {brief(values)}", path)
        if max(values) > MAX_LAYERS:
            raise self.fail(f"{max(values):,} layers, more than {MAX_LAYERS:,} (limit MAX_LAYERS)", path)
        most = max(values) * largest(loop)
        if most > MAX_LAYERS:
            raise self.fail(f"{max(values):,} layers looped up to {most // max(values):,} times is {most:,} layers, "
                            f"more than {MAX_LAYERS:,} (limit MAX_LAYERS)", path)

    def ops(self, value: Any, path: str, allow_none: bool = False) -> list[str]:
        known = list(registered()) + (["none"] if allow_none else [])
        values = value.values if isinstance(value, Dist) else (value,)
        if isinstance(value, Dist) and value.kind != "choice":
            raise self.fail("a primitive is searched with `choice`", path)
        for op in values:
            if op not in known:
                raise self.fail(unknown_name_message("primitive", op, known), path)
        return [op for op in values if op != "none"]

    def template(self, value: Any, path: str) -> dict[str, Any]:
        if isinstance(value, str):
            value = {"op": value}
        value = self.mapping(value, path)
        if "op" not in value:
            raise self.fail("a slot needs `op` (a primitive or a choice of primitives)", join(path, "op"))
        template = {k: self.searchable(v, join(path, k)) for k, v in value.items() if k != "channel"}
        ops = self.ops(template["op"], join(path, "op"), allow_none=True)
        fields = {f for op in ops for f in config_fields(registered()[op])}
        for key in template:
            if key != "op" and key not in fields:
                raise self.fail(f"{key!r} is not a parameter of {', '.join(ops) or 'the slot'} "
                                f"(parameters: {', '.join(sorted(fields))})", join(path, key))
        if value.get("channel") is not None:
            template["channel"] = self.template(value["channel"], join(path, "channel"))
        return template

    def pattern(self, value: Any, loop: Any) -> PatternLayers:
        path = "layers.pattern"
        value = self.mapping(value, path, keys_of(PatternLayers, skip=("loop",)))
        for key in ("n_layers", "mixer"):
            if key not in value:
                raise self.fail("missing required field", join(path, key))
        cfg = {k: self.searchable(v, join(path, k)) for k, v in value.items()}
        self.check_ints(cfg["n_layers"], join(path, "n_layers"), loop)
        self.check_ints(cfg.get("n_attention", 1), join(path, "n_attention"), least=0)
        self.ops(cfg["mixer"], join(path, "mixer"))
        placement = cfg.get("placement", "spread")
        for p in placement.values if isinstance(placement, Dist) else (placement,):
            self.value(p, Placement, join(path, "placement"))
        if cfg.get("channel") is not None:
            self.ops(cfg["channel"], join(path, "channel"))
        return PatternLayers(**cfg, loop=loop)

    def train(self, value: Any, path: str) -> dict[str, Any]:
        """Training settings by flat key (sections flattened), plain values checked against TrainConfig;
        searched ones stay Dists, named by their flat key. Without a budget, DEFAULT_STEPS steps."""
        try:
            out = {}
            for key, (raw, where) in flatten(value or {}, SETTINGS, "train", SET_BY_THE_SEARCH).items():
                raw = self.searchable(raw, where)
                out[key] = self.searched(SETTINGS[key], raw, where) if isinstance(raw, Dist) else SETTINGS[key].check(
                    raw, where)
        except UserError as e:
            raise self.relay(e) from None
        if not any(k in out for k in ("steps", "tokens", "seconds")):
            out["steps"] = DEFAULT_STEPS
        return out

    def searched(self, setting: Setting, dist: Dist, path: str) -> Dist:
        """A searched training setting must be searchable as declared; each sampled value is checked when its
        trial builds its TrainConfig (a bad one fails that trial, with the reason)."""
        if setting.kind is tuple:
            raise self.fail("a list setting cannot be searched", path)
        if dist.kind != "choice" and (setting.kind not in (int, float) or (dist.kind == "float" and
                                                                           setting.kind is int)):
            raise self.fail(f"expected {'`int` or ' if setting.kind is int else ''}`choice` for this setting", path)
        return dist

    def objectives(self, value: Any, path: str) -> list[dict[str, Any]]:
        """[{metric, mode}], with `context` for a measured metric (composer/measure/metrics.py): a measured
        metric's name is checked here (did you mean), the others against what the task reports
        (composer/search/setup.py)."""
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list) or not value:
            raise self.fail("expected a list of {metric, mode}", "objectives")
        out = []
        for i, item in enumerate(value):
            where = join("objectives", i)
            objective = self.read(Objective, item, where)
            if objective.context is not None and objective.metric not in MEASURED:
                raise self.fail(f"a metric with a context is measured: "
                                f"{unknown_name_message('measured metric', objective.metric, list(MEASURED))}",
                                join(where, "metric"))
            if objective.context is None and objective.metric in TIMED:
                raise self.fail(f"{objective.metric} is measured at a context length: give `context` (8192 or 8K)",
                                join(where, "context"))
            out.append({k: v for k, v in dataclasses.asdict(objective).items() if k != "context" or v is not None})
        names = [Objective(**o).name for o in out]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise self.fail(f"{name} is already objective {names.index(name)}", join("objectives", i))
        return out

    def check_measured(self, space: SearchSpace) -> None:
        """Measured contexts within every candidate's max_seq_len (composer/measure/metrics.py says why), and a
        device the measurement knows (whether this machine has it is checked when the search starts)."""
        longest = space.shortest_max_seq_len()
        bounds = space.constraints.measured().items()
        where = {**{int(o["context"]): join(join("objectives", i), "context")
                    for i, o in reversed(list(enumerate(space.objectives))) if o.get("context") is not None},
                 **{b.context: join(join("constraints", m), "context") for m, b in bounds}}
        for context, path in where.items():
            try:
                check_within(context, longest, path, f"set `base.max_seq_len: {context}` (the longest context the "
                                                     "candidates declare), or measure at a shorter context")
            except UserError as e:
                raise self.relay(e) from None
        if where and not DEVICE.fullmatch(space.measure.device):
            raise self.fail(f"expected cpu, cuda or cuda:N, got {space.measure.device!r}", "measure.device")

    def check_sample(self, space: SearchSpace, tries: int = 32) -> None:
        """Sample candidates (seeded) so a broken base is reported now, with its line: a space none of whose
        first `tries` candidates is a valid architecture (`d_model: .nan`, a slot's `rope_base: -1`) is an error."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        tries = tries if space.distributions() else 1
        first = None
        for _ in range(tries):
            candidate = space.sample(study.ask())
            if not candidate.invalid:
                return
            first = first or candidate.invalid
        raise self.fail(first if tries == 1 else f"none of {tries} sampled candidates is valid; the first: {first}",
                        "base")


# The fields of a space read here and in composer/search/space_parse_search.py: key -> (parser, value, path) -> value.
FIELDS = {"name": _Parser.name, "description": _Parser.description, "base": _Parser.base, "layers": _Parser.layers,
          "train": _Parser.train, "objectives": _Parser.objectives, "strategy": how_searched.strategy,
          "scheduler": how_searched.scheduler, "resources": how_searched.resources,
          "confirm": how_searched.confirm, "logging": how_searched.logging}
