"""Parsing a search space (plain data with YAML lines kept) into a validated SearchSpace; every error names
its YAML path and line. The format is described in composer/search/space.py. This module reads what is
searched (base, layers, task, training, objectives, constraints); how it is searched (strategy, scheduler,
aggregation, equal sizes, resources, confirmation) is read by composer/search/space_parse_search.py."""

from __future__ import annotations

import math
from typing import Any

from composer.errors import UserError
from composer.limits import MAX_GRID_POINTS, MAX_INTEGER, MAX_LAYERS, MAX_SEED
from composer.runs import safe_name
from composer.search.space import Dist, SearchSpace
from composer.search.space_parse_search import SearchSettingsParser
from composer.training.config import SETTINGS
from composer.training.settings import Setting, check, flatten
from composer.yaml_source import Source, join, read_source
from primitives.base import brief, config_fields, finite_number, registered, unknown_name_message

TOP_KEYS = ("name", "description", "base", "layers", "task", "train", "objectives", "constraints", "strategy",
            "scheduler", "resources", "seed", "repeats", "trials", "confirm", "aggregate", "match", "logging")
CONSTRAINT_KEYS = ("max_params", "max_active_params", "max_flops_per_token", "max_state_bytes", "context")
PLACEMENTS = ("spread", "first", "last", "middle")
SET_BY_THE_SEARCH = {"seed": "the search sets each trial's seed: use the top-level `seed`",
                     "resume": "trials always start fresh (a search resumes from its study instead)"}
DEFAULT_STEPS = 200


def load_space(obj: Any) -> SearchSpace:
    """A SearchSpace from a path, a YAML string, a dict (or a SearchSpace, returned as is)."""
    if isinstance(obj, SearchSpace):
        return obj
    return parse_space(read_source(obj))


def parse_space(source: Source) -> SearchSpace:
    return _Parser(source).space()


class _Parser(SearchSettingsParser):
    def __init__(self, source: Source):
        self.source = source

    def fail(self, message: str, path: str) -> UserError:
        return self.source.error(message, path)

    def mapping(self, value: Any, path: str, allowed: tuple | None = None) -> dict:
        if not isinstance(value, dict):
            raise self.fail(f"expected a mapping, got {type(value).__name__}", path)
        for key in value:
            if allowed is not None and key not in allowed:
                raise self.fail(unknown_name_message("field", key, list(allowed)), join(path, key))
        return value

    def number(self, value: Any, path: str, positive: bool = True) -> float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (positive and value <= 0):
            raise self.fail(f"expected a {'positive ' if positive else ''}number, got {brief(value)}", path)
        if not finite_number(value):
            raise self.fail(f"expected a finite number, got {brief(value)}", path)
        return value

    def integer(self, value: Any, path: str, minimum: int = 1, maximum: int = MAX_INTEGER) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(f"expected an integer >= {minimum}, got {brief(value)}", path)
        if value > maximum:
            raise self.fail(f"expected an integer of at most {maximum:,}, got {brief(value)}", path)
        return value

    def value(self, value: Any, path: str) -> Any:
        """A plain value, or a Dist for `{choice: ...}`, `{int: [lo, hi]}`, `{float: [lo, hi]}`."""
        if not (isinstance(value, dict) and {"choice", "int", "float"} & set(value)):
            if isinstance(value, dict):
                return {k: self.value(v, join(path, k)) for k, v in value.items()}
            return value
        self.mapping(value, path, ("choice", "int", "float", "log", "step"))
        kinds = [k for k in ("choice", "int", "float") if k in value]
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
        low, high = (self.number(b, join(path, kind), positive=False) for b in bounds)
        if kind == "int" and not all(isinstance(b, int) for b in (low, high)):
            raise self.fail(f"expected integer bounds, got {bounds!r}", join(path, kind))
        if low >= high:
            raise self.fail(f"expected low < high, got {bounds!r}", join(path, kind))
        log = value.get("log", False)
        if log and low <= 0:
            raise self.fail("a log range needs low > 0", join(path, "log"))
        step = value.get("step")
        if step is not None:
            step = self.number(step, join(path, "step"))
        if kind == "int" and max(abs(low), abs(high)) > MAX_INTEGER:
            raise self.fail(f"expected integer bounds within {MAX_INTEGER:,} (limit MAX_INTEGER)", join(path, kind))
        dist = Dist(kind, (), low, high, bool(log), step)
        if math.isfinite(dist.points()) and dist.points() > MAX_GRID_POINTS:
            raise self.fail(f"{dist.points():,.0f} values, more than {MAX_GRID_POINTS:,} (limit MAX_GRID_POINTS): "
                            "use a float range or a coarser `step`", path)
        return dist

    def space(self) -> SearchSpace:
        data = self.source.data
        if data is None:
            raise self.fail("the search space is empty", "")
        data = self.mapping(data, "", TOP_KEYS)
        for key in ("name", "layers", "task"):
            if key not in data:
                raise self.fail("missing required field", key)
        name = data["name"]
        try:
            safe_name(name, "name")          # it becomes the run folder's name
        except UserError as e:
            raise self.fail(e.message, "name") from None
        base = self.value(self.mapping(data.get("base") or {}, "base"), "base")
        for key in ("layers", "pattern", "legend"):
            if key in base:
                raise self.fail("give the layers in the top-level `layers` section", join("base", key))
        space = SearchSpace(
            name=name, description=str(data.get("description") or "").strip(), base=base,
            layers=self.layers(data["layers"]), task=self.task(data["task"]), train=self.train(data.get("train")),
            objectives=self.objectives(data.get("objectives")), constraints=self.constraints(data.get("constraints")),
            strategy=self.named(data.get("strategy"), "strategy", "tpe"),
            scheduler=self.named(data.get("scheduler"), "scheduler", "asha"),
            resources=self.resources(data.get("resources")),
            seed=self.integer(data.get("seed", 0), "seed", 0, MAX_SEED),
            repeats=self.integer(data.get("repeats", 1), "repeats"),
            trials=self.integer(data.get("trials", 10), "trials"), data=data)
        space.aggregate = self.aggregate(data.get("aggregate"), space.strategy)
        self.check_strategy(space)
        self.check_sample(space)
        if data.get("match") is not None:
            space.match = self.match(data["match"], space)
        if "confirm" in data:
            self.confirm(data["confirm"])
        if data.get("logging") is not None:
            from composer.tracking import check_backends

            try:
                check_backends(data["logging"], "logging", search=True)
            except UserError as e:
                raise self.fail(e.message, "logging") from None
        return space

    def layers(self, value: Any) -> tuple[str, Any]:
        if isinstance(value, list):
            return "list", value
        value = self.mapping(value, "layers", ("n_layers", "slot", "slots", "pattern", "loop"))
        loop = self.value(value.get("loop", 1), "layers.loop")
        self.check_ints(loop, "layers.loop")
        if "pattern" in value:
            if "slot" in value or "slots" in value:
                raise self.fail("give either `pattern` or `slot`/`slots`, not both", "layers.pattern")
            return "pattern", self.pattern(value["pattern"], loop)
        if ("slot" in value) == ("slots" in value):
            raise self.fail("give one of `slot` (with `n_layers`), `slots` (a list) or `pattern`", "layers")
        if "slot" in value:
            if "n_layers" not in value:
                raise self.fail("`slot` needs `n_layers`", "layers.n_layers")
            n_layers = self.value(value["n_layers"], "layers.n_layers")
            self.check_ints(n_layers, "layers.n_layers", loop)
            most = int(n_layers.largest() if isinstance(n_layers, Dist) else n_layers)
            template = self.template(value["slot"], "layers.slot")
            return "slots", {"n_layers": n_layers, "slots": [template] * most, "loop": loop}
        slots = value["slots"]
        if not isinstance(slots, list) or not slots:
            raise self.fail("expected a non-empty list of slots", "layers.slots")
        if len(slots) > MAX_LAYERS:
            raise self.fail(f"{len(slots):,} slots, more than {MAX_LAYERS:,} (limit MAX_LAYERS)", "layers.slots")
        templates = [self.template(s, join("layers.slots", i)) for i, s in enumerate(slots)]
        n_layers = self.value(value.get("n_layers", len(slots)), "layers.n_layers")
        self.check_ints(n_layers, "layers.n_layers", loop)
        if (n_layers.largest() if isinstance(n_layers, Dist) else n_layers) > len(slots):
            raise self.fail(f"more layers than the {len(slots)} slots given", "layers.n_layers")
        return "slots", {"n_layers": n_layers, "slots": templates, "loop": loop}

    def check_ints(self, value: Any, path: str, loop: Any = 1) -> None:
        """Layer counts: integers in [1, MAX_LAYERS] (a range checked by its ends, not expanded); with `loop`,
        the largest count times the largest loop is held to MAX_LAYERS too."""
        values = [value.low, value.high] if isinstance(value, Dist) and value.kind == "int" else (
            value.grid() if isinstance(value, Dist) else [value])
        if values is None or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
            raise self.fail(f"expected integers >= 1, got {brief(values)}", path)
        if max(values) > MAX_LAYERS:
            raise self.fail(f"{max(values):,} layers, more than {MAX_LAYERS:,} (limit MAX_LAYERS)", path)
        most = max(values) * (loop.largest() if isinstance(loop, Dist) else loop)
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
        template = {k: self.value(v, join(path, k)) for k, v in value.items() if k != "channel"}
        ops = self.ops(template["op"], join(path, "op"), allow_none=True)
        fields = {f for op in ops for f in config_fields(registered()[op])}
        for key in template:
            if key != "op" and key not in fields:
                raise self.fail(f"{key!r} is not a parameter of {', '.join(ops) or 'the slot'} "
                                f"(parameters: {', '.join(sorted(fields))})", join(path, key))
        if value.get("channel") is not None:
            template["channel"] = self.template(value["channel"], join(path, "channel"))
        return template

    def pattern(self, value: Any, loop: Any) -> dict[str, Any]:
        path = "layers.pattern"
        value = self.mapping(value, path, ("n_layers", "n_attention", "mixer", "placement", "attention", "channel"))
        for key in ("n_layers", "mixer"):
            if key not in value:
                raise self.fail("missing required field", join(path, key))
        cfg = {k: self.value(v, join(path, k)) for k, v in value.items()}
        cfg["loop"] = loop
        self.check_ints(cfg["n_layers"], join(path, "n_layers"), loop)
        k = cfg.get("n_attention", 1)
        ks = k.grid() if isinstance(k, Dist) else [k]
        if ks is None or not all(isinstance(x, int) and x >= 0 for x in ks):
            raise self.fail(f"expected integers >= 0, got {ks!r}", join(path, "n_attention"))
        self.ops(cfg["mixer"], join(path, "mixer"))
        placement = cfg.get("placement", "spread")
        for p in placement.values if isinstance(placement, Dist) else (placement,):
            if p not in PLACEMENTS:
                raise self.fail(f"expected one of {', '.join(PLACEMENTS)}, got {p!r}", join(path, "placement"))
        if cfg.get("channel") is not None:
            self.ops(cfg["channel"], join(path, "channel"))
        return cfg

    def task(self, value: Any) -> dict[str, Any]:
        if isinstance(value, str):
            value = {"name": value}
        value = self.mapping(value, "task")
        if not isinstance(value.get("name"), str):
            raise self.fail("expected a task name (mqar, mad, mad:<task>, text)", "task.name")
        from composer.tasks import TaskSuite, get_task, task_params

        try:
            params = task_params(value)
            task = get_task(value["name"], **params)
        except UserError as e:
            raise self.fail(e.message, "task" + (f".{e.path}" if e.path and e.path != "task" else "")) from None
        first = task.first if isinstance(task, TaskSuite) else task
        return {"name": value["name"], "params": params, "vocab_size": first.vocab_size, "seq_len": first.seq_len}

    def train(self, value: Any) -> dict[str, Any]:
        """Training settings by flat key (sections flattened), plain values checked against TrainConfig;
        searched ones stay Dists, named by their flat key. Without a budget, DEFAULT_STEPS steps."""
        try:
            out = {}
            for key, (raw, where) in flatten(value or {}, SETTINGS, "train", SET_BY_THE_SEARCH).items():
                raw = self.value(raw, where)
                out[key] = self.searched(SETTINGS[key], raw, where) if isinstance(raw, Dist) else check(
                    SETTINGS[key], raw, where)
        except UserError as e:
            raise self.fail(e.message, e.path) from None
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

    def objectives(self, value: Any) -> list[dict[str, str]]:
        if value is None:
            return [{"metric": "val_loss", "mode": "min"}]
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list) or not value:
            raise self.fail("expected a list of {metric, mode}", "objectives")
        out = []
        for i, item in enumerate(value):
            path = join("objectives", i)
            item = self.mapping(item, path, ("metric", "mode"))
            if not isinstance(item.get("metric"), str):
                raise self.fail("expected a metric name (val_loss, accuracy, params, ...)", join(path, "metric"))
            mode = item.get("mode", "min")
            if mode not in ("min", "max"):
                raise self.fail(f"expected min or max, got {mode!r}", join(path, "mode"))
            out.append({"metric": item["metric"], "mode": mode})
        return out

    def constraints(self, value: Any) -> dict[str, float]:
        value = self.mapping(value or {}, "constraints", CONSTRAINT_KEYS)
        return {k: self.number(v, join("constraints", k)) for k, v in value.items()}

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
