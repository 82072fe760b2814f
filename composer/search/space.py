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

A `SearchSpace` is frozen: its layers are one of three typed forms (`ListLayers`, `SlotLayers`,
`PatternLayers`), each knowing its searched names and how a trial builds its layers; a changed space (an
incremental stage's, one with overrides) is a new one (`with_overrides`).

A trial that carries a whole spec in its user attributes (`spec`, with `train`: the consensus, enqueued through
the study at the end of a search) builds that spec instead of sampling.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from composer.errors import SpecError
from composer.fields import option
from composer.limits import MAX_SEED
from composer.search.aggregate import Aggregation
from composer.search.equal_size import Match, MatchError
from composer.spec import ArchSpec
from composer.spec_parse import load_spec
from composer.tasks import TaskRef
from composer.yaml_source import join
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
    loop: int | Dist = 1

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


# ----------------------------------------------------------------------------------------------
# The space


@dataclass(frozen=True)
class Objective:
    metric: str = option(help="a metric the trials report (val_loss, accuracy, params, ...)")
    mode: Literal["min", "max"] = option("min", "minimise or maximise it")


@dataclass(frozen=True)
class Constraints:
    """Budgets checked before a candidate trains; costs at `context` (default: the task's sequence length)."""

    max_params: float | None = option(None, "parameters", gt=0)
    max_active_params: float | None = option(None, "parameters one token touches (MoE)", gt=0)
    max_flops_per_token: float | None = option(None, "forward FLOPs per token", gt=0)
    max_state_bytes: float | None = option(None, "decoding state per sequence", gt=0)
    context: float | None = option(None, "the context length the costs are taken at", gt=0)

    def limits(self) -> dict[str, float]:
        """The budgets given, by name (`max_params` -> its limit)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "context" and getattr(self, f.name) is not None}


@dataclass(frozen=True)
class Resources:
    cpus_per_trial: float = option(1, "CPUs each trial holds", gt=0)
    gpus_per_trial: float = option(0, "GPUs each trial holds (a fraction shares one)", ge=0)
    max_concurrent: int | None = option(None, "trials at once (default: as many as the CPUs allow)", ge=1)


@dataclass(frozen=True)
class Candidate:
    """What one trial trains: the spec, the training settings, and the sampled parameters."""

    spec: ArchSpec | None
    train: dict[str, Any]
    params: dict[str, Any]
    invalid: str | None = None       # why the sampled point is not a valid architecture
    record: dict[str, Any] = field(default_factory=dict)     # per-trial facts: `match`, `consensus`


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space (see the module docstring). `data` is the space as written (space.yaml); the
    fields the reader (composer/reader.py) reads on its own are declared here, the others are read by
    composer/search/space_parse.py."""

    name: str = option(help="the run's name (its folder under runs/)")
    task: TaskRef = option(help="the task every trial trains on")
    layers: LayerSpace = option(help="a plain list, `slots` (or `slot` with `n_layers`) or `pattern`")
    description: str = option("", "what the space searches")
    base: dict[str, Any] = option(help="architecture fields (searched ones as `{choice: ...}`)", factory=dict)
    train: dict[str, Any] = option(help="training settings, flat or by section", factory=dict)
    objectives: list[dict[str, str]] = option(help="[{metric, mode}]",
                                              factory=lambda: [{"metric": "val_loss", "mode": "min"}])
    constraints: Constraints = option(help="budgets checked before a candidate trains", factory=Constraints)
    strategy: dict[str, Any] = option(help="the search strategy, by name, with its options",
                                      factory=lambda: {"name": "tpe"})
    scheduler: dict[str, Any] = option(help="the trial scheduler, by name, with its options",
                                       factory=lambda: {"name": "asha"})
    resources: dict[str, Any] = option(help="cpus_per_trial, gpus_per_trial, max_concurrent",
                                       factory=lambda: dataclasses.asdict(Resources()))
    seed: int = option(0, "the search's seed (each trial's seed derives from it)", ge=0, le=MAX_SEED)
    repeats: int = option(1, "seeds each candidate trains with", ge=1)
    trials: int = option(10, "how many trials", ge=1)
    aggregate: Aggregation = option(help="how the consensus is made", factory=Aggregation)
    match: Match | None = option(None, "equal-size candidates: the quantity, the target and the width adjusted")
    confirm: dict[str, Any] | None = option(None, "a confirmation run after the search (composer/confirm)")
    logging: Any = option(None, "per-trial trackers (composer/tracking.py)")
    vocab_size: int = 0             # the task's, set by the parser when it builds the task once
    seq_len: int = 0
    data: dict[str, Any] = field(default_factory=dict)      # the space as plain data (space.yaml)

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
        return {name: dist.first() for name, dist in self.distributions().items()}

    def sample_unmatched(self, trial: Any) -> Candidate:
        """The candidate `trial` samples, before any `match`."""
        params: dict[str, Any] = {}

        def pick(value: Any, name: str) -> Any:
            if isinstance(value, Dist):
                params[name] = value.suggest(trial, name)
                return params[name]
            return value

        arch = _resolve(self.base, "", pick)
        arch.setdefault("vocab_size", self.vocab_size)
        arch["max_seq_len"] = max(arch.get("max_seq_len", 0), self.seq_len)
        arch["layers"] = self.layers.build(pick)
        train = {k: pick(v, k) for k, v in self.train.items()}
        try:
            spec = load_spec(arch)
        except SpecError as e:
            return Candidate(None, train, params, invalid=f"invalid architecture: {e}")
        return Candidate(spec, train, params)

    def distributions(self) -> dict[str, Dist]:
        """Every searched name and its distribution (conditional ones included)."""
        seen: dict[str, Dist] = {}
        _resolve(self.base, "", lambda v, n: seen.setdefault(n, v) if isinstance(v, Dist) else v)
        seen.update((k, v) for k, v in self.train.items() if isinstance(v, Dist))
        seen.update(self.layers.distributions())
        return seen

    def size(self) -> float:
        """The number of distinct parameter settings (an upper bound on distinct architectures); inf for
        continuous ranges."""
        total = 1.0
        for dist in self.distributions().values():
            total *= dist.points()
        return total

    def objective_names(self) -> list[str]:
        return [o["metric"] for o in self.objectives]

    def modes(self) -> list[str]:
        return [o["mode"] for o in self.objectives]

    def check_constraints(self, spec: ArchSpec) -> str | None:
        """The reason `spec` breaks a constraint, or None; costs at the constraint's context length."""
        from composer.costs import model_cost

        cost = model_cost(spec, seq_len=int(self.constraints.context or self.task_seq_len()))
        for key, limit in self.constraints.limits().items():
            value = getattr(cost, key.removeprefix("max_"))
            if value > limit:
                return f"{key.removeprefix('max_')} {value:,} > {key} {limit:,.0f}"
        return None

    def task_seq_len(self) -> int:
        return self.seq_len

    def task_data(self) -> dict[str, Any]:
        """The task as a trial's context and cache key know it: {name, params, vocab_size, seq_len}."""
        return {**self.task.as_dict(), "vocab_size": self.vocab_size, "seq_len": self.seq_len}

    def with_overrides(self, **changes: Any) -> SearchSpace:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _resolve(value: Any, path: str, pick: Pick) -> Any:
    if isinstance(value, Dist):
        return pick(value, path)
    if isinstance(value, dict):
        return {k: _resolve(v, join(path, k), pick) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, join(path, i), pick) for i, v in enumerate(value)]
    return value
