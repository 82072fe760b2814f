"""Search space YAML -> a validated `SearchSpace` -> candidates, one per Optuna trial (define-by-run).

A space file (see search_spaces/quickstart.yaml for a commented example):

    name: quickstart
    base: {d_model: {choice: [32, 64]}, defaults: {attention: {n_heads: 4}}}   # architecture fields
    layers:                                    # one of: a plain DSL list, `slots`, `pattern`
      n_layers: {choice: [2, 3, 4]}
      slot: {op: {choice: [attention, gla]}, channel: mlp}
    task: {name: mqar, params: {seq_len: 64}}
    train: {steps: 200, lr: {float: [3e-4, 3e-3], log: true}, batch_size: 32, eval_every: 20}   # training settings
    objectives: [{metric: accuracy, mode: max}]
    constraints: {max_params: 1e6}
    strategy: {name: tpe}
    aggregate: {select: kmeans, clusters: 5, vote: n0}   # the consensus (composer/search/aggregate.py)
    match: {params: base, by: d_ff, tol: 0.02}            # equal-size candidates (composer/search/equal_size.py)
    scheduler: {name: asha, grace_period: 2, reduction_factor: 2}
    resources: {cpus_per_trial: 1, max_concurrent: 2}
    trials: 12

A value written `{choice: [...]}`, `{int: [lo, hi]}` or `{float: [lo, hi]}` (optional `log`, `step`) is searched.
Parameter names are stable: `d_model`, `defaults.attention.n_heads` (paths in `base`), `lr`, `n_layers`,
`layer3.op`, `layer3.d_ff`, `layer3.channel.op`, `n_attention`, `mixer`, `placement`, `loop`. Every slot up
to the largest depth is sampled (only the first `n_layers` are used), and a primitive parameter is sampled
only when its slot's primitive has it, so each name always offers the same choices (Optuna requires it).
`train` takes every training setting (composer/training/config.py), flat or by section; a searched setting
is named by its flat key (`lr`). `load_space` (composer/search/space_parse.py) reads a space file.

A trial that carries a whole spec in its user attributes (`spec`, with `train`: the consensus, enqueued through
the study at the end of a search) builds that spec instead of sampling.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from composer.errors import SpecError
from composer.search.aggregate import Aggregation
from composer.search.equal_size import Match, MatchError
from composer.spec import ArchSpec
from composer.spec_parse import load_spec
from composer.yaml_source import join
from primitives.base import config_fields, registered


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
        """How many values `grid()` lists (inf for a continuous range), counted without listing them."""
        if self.kind == "choice":
            return len(self.values)
        if self.kind == "int":
            return (self.high - self.low) // (self.step or 1) + 1
        return math.floor((self.high - self.low) / self.step) + 1 if self.step else math.inf

    def largest(self) -> Any:
        return max(self.values) if self.kind == "choice" else self.high


@dataclass
class Candidate:
    """What one trial trains: the spec, the training settings, and the sampled parameters."""

    spec: ArchSpec | None
    train: dict[str, Any]
    params: dict[str, Any]
    invalid: str | None = None       # why the sampled point is not a valid architecture
    record: dict[str, Any] = field(default_factory=dict)     # per-trial facts: `match`, `consensus`


@dataclass
class SearchSpace:
    name: str
    description: str
    base: dict[str, Any]
    layers: Any
    task: dict[str, Any]
    train: dict[str, Any]
    objectives: list[dict[str, str]]
    constraints: dict[str, float]
    strategy: dict[str, Any]
    scheduler: dict[str, Any]
    resources: dict[str, Any]
    seed: int = 0
    repeats: int = 1
    trials: int = 10
    data: dict[str, Any] = field(default_factory=dict)      # the space as plain data (space.yaml)
    aggregate: Aggregation = field(default_factory=Aggregation)
    match: Match | None = None

    # -- sampling -------------------------------------------------------------------------------
    def sample(self, trial: Any) -> Candidate:
        """Sample one candidate with `trial` (an Optuna trial or anything with suggest_* methods); a trial
        carrying a spec (the consensus) builds that spec. With `match`, the spec is resized to the target."""
        attrs = getattr(trial, "user_attrs", None) or {}
        if attrs.get("spec") is not None:
            return Candidate(load_spec(attrs["spec"]), dict(attrs.get("train") or {}), {},
                             record={"consensus": True} if attrs.get("consensus") else {})
        candidate = self.sample_unmatched(trial)
        if self.match is None or candidate.spec is None:
            return candidate
        try:
            spec, record = self.match.fit(candidate.spec, self.match_target(), self.task_seq_len())
        except MatchError as e:
            return dataclasses.replace(candidate, spec=None, invalid=str(e))
        return dataclasses.replace(candidate, spec=spec, record={"match": record})

    def match_target(self) -> float:
        """The size every candidate is matched to: the given number, or the reference candidate's."""
        assert self.match is not None
        if self.match.target is not None:
            return self.match.target
        import optuna

        reference = self.sample_unmatched(optuna.trial.FixedTrial(self.reference_params()))
        if reference.spec is None:
            raise SpecError(f"match: base: the reference candidate (the first choices) is not valid: "
                            f"{reference.invalid}", path="match.params")
        return self.match.measure(reference.spec, self.task_seq_len())

    def reference_params(self) -> dict[str, Any]:
        """The first value of every searched choice (the low end of a range)."""
        return {name: dist.values[0] if dist.kind == "choice" else dist.low
                for name, dist in self.distributions().items()}

    def sample_unmatched(self, trial: Any) -> Candidate:
        """The candidate `trial` samples, before any `match`."""
        params: dict[str, Any] = {}

        def pick(value: Any, name: str) -> Any:
            if isinstance(value, Dist):
                params[name] = value.suggest(trial, name)
                return params[name]
            return value

        arch = _resolve(self.base, "", pick)
        arch.setdefault("vocab_size", self.task["vocab_size"])
        arch["max_seq_len"] = max(arch.get("max_seq_len", 0), self.task["seq_len"])
        arch["layers"] = self._layers(pick)
        train = {k: pick(v, k) for k, v in self.train.items()}
        try:
            spec = load_spec(arch)
        except SpecError as e:
            return Candidate(None, train, params, invalid=f"invalid architecture: {e}")
        return Candidate(spec, train, params)

    def _layers(self, pick: Any) -> list[Any]:
        kind, cfg = self.layers
        if kind == "list":
            return list(cfg)
        if kind == "slots":
            n = pick(cfg["n_layers"], "n_layers")
            layers = []
            for i, template in enumerate(cfg["slots"]):
                built = _slot(template, slot_name(cfg, i), pick)
                if i < n:
                    layers.extend(built)
        else:
            layers = _pattern(cfg, pick)
        loop = pick(cfg.get("loop", 1), "loop")
        return [{"loop": {"times": loop, "body": layers}}] if loop > 1 else layers

    def distributions(self) -> dict[str, Dist]:
        """Every searched name and its distribution (conditional ones included)."""
        seen: dict[str, Dist] = {}
        _resolve(self.base, "", lambda v, n: seen.setdefault(n, v) if isinstance(v, Dist) else v)
        for k, v in self.train.items():
            if isinstance(v, Dist):
                seen[k] = v
        kind, cfg = self.layers
        if kind == "slots":
            for key in ("n_layers", "loop"):
                if isinstance(cfg.get(key), Dist):
                    seen[key] = cfg[key]
            for i, template in enumerate(cfg["slots"]):
                _template_dists(template, slot_name(cfg, i), seen)
        elif kind == "pattern":
            for key in ("n_layers", "n_attention", "mixer", "placement", "loop", "channel"):
                if isinstance(cfg.get(key), Dist):
                    seen[key] = cfg[key]
        return seen

    def size(self) -> float:
        """The number of distinct parameter settings (an upper bound on distinct architectures); inf for
        continuous ranges."""
        total = 1.0
        for dist in self.distributions().values():
            grid = dist.grid()
            total *= math.inf if grid is None else len(grid)
        return total

    def objective_names(self) -> list[str]:
        return [o["metric"] for o in self.objectives]

    def modes(self) -> list[str]:
        return [o["mode"] for o in self.objectives]

    def check_constraints(self, spec: ArchSpec) -> str | None:
        """The reason `spec` breaks a constraint, or None; costs at the constraint's context length."""
        from composer.costs import model_cost

        context = int(self.constraints.get("context", self.task_seq_len()))
        cost = model_cost(spec, seq_len=context)
        for key, limit in self.constraints.items():
            if key == "context":
                continue
            value = getattr(cost, key.removeprefix("max_"))
            if value > limit:
                return f"{key.removeprefix('max_')} {value:,} > {key} {limit:,.0f}"
        return None

    def task_seq_len(self) -> int:
        return int(self.task["seq_len"])

    def with_overrides(self, **changes: Any) -> SearchSpace:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def slot_name(cfg: dict[str, Any], i: int) -> str:
    """The parameter prefix of slot `i`: `layer<i>`, or `layer<names[i]>` when the slots are a stage of an
    incremental search (named by their place in the full-depth model, so a name always offers the same choices)."""
    names = cfg.get("names")
    return f"layer{names[i] if names else i}"


def _resolve(value: Any, path: str, pick: Any) -> Any:
    if isinstance(value, Dist):
        return pick(value, path)
    if isinstance(value, dict):
        return {k: _resolve(v, join(path, k), pick) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, join(path, i), pick) for i, v in enumerate(value)]
    return value


def _slot(template: dict[str, Any], prefix: str, pick: Any) -> list[Any]:
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


def _pattern(cfg: dict[str, Any], pick: Any) -> list[Any]:
    n = pick(cfg["n_layers"], "n_layers")
    k = pick(cfg.get("n_attention", 1), "n_attention")
    mixer = pick(cfg["mixer"], "mixer")
    placement = pick(cfg.get("placement", "spread"), "placement")
    channel = pick(cfg.get("channel"), "channel")
    positions = set(placement_positions(n, k, placement))
    layers: list[Any] = []
    for i in range(n):
        layers.append(cfg.get("attention", "attention") if i in positions else mixer)
        if channel:
            layers.append(channel)
    return layers

