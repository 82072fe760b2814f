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
from dataclasses import dataclass, field
from typing import Any, Literal

from composer.errors import SpecError
from composer.fields import option
from composer.limits import MAX_SEED
from composer.measure.metrics import key as measured_key
from composer.measure.metrics import read_context
from composer.measure.protocol import MeasureSettings
from composer.search.aggregate import Aggregation
from composer.search.equal_size import Match, MatchError
from composer.search.space_layers import Dist, LayerSpace, Pick
from composer.spec import ArchSpec
from composer.spec_parse import load_spec
from composer.tasks import TaskRef
from composer.yaml_source import join

# ----------------------------------------------------------------------------------------------
# The space


@dataclass(frozen=True)
class Objective:
    """A metric to minimise or maximise; with `context`, a measured one (composer/measure: prefill_tokens_per_s,
    decode_ms_per_token, peak_memory_bytes, state_bytes at that context, on the `measure:` device), reported as
    `metric@context`."""

    metric: str = option(help="a metric the trials report (val_loss, accuracy, params, ...)")
    mode: Literal["min", "max"] = option("min", "minimise or maximise it")
    context: int | None = option(None, "for a measured metric: the context length it is measured at (8192 or 8K)",
                                 parse=read_context)

    @property
    def name(self) -> str:
        """The name trials report it under: the metric, or `metric@context` for a measured one."""
        return self.metric if self.context is None else measured_key(self.metric, self.context)


@dataclass(frozen=True)
class MeasuredBound:
    """A measured cost's bound: `{max: 2.5, context: 8192}` (a `min` for a speed)."""

    context: int = option(help="the context length it is measured at (8192 or 8K)", parse=read_context)
    max: float | None = option(None, "the largest value allowed", gt=0)
    min: float | None = option(None, "the smallest value allowed", gt=0)

    def broken_by(self, value: float) -> str | None:
        """`> max 2.5` or `< min 1000` when `value` is out of bounds, else None."""
        if self.max is not None and value > self.max:
            return f"> max {self.max:,.6g}"
        if self.min is not None and value < self.min:
            return f"< min {self.min:,.6g}"
        return None


def read_bound(reader: Any, value: Any, path: str) -> MeasuredBound:
    bound = reader.read(MeasuredBound, value, path)
    if bound.max is None and bound.min is None:
        raise reader.fail("give `max` (or `min`, for a speed) beside `context`", path)
    if bound.max is not None and bound.min is not None and bound.min > bound.max:
        raise reader.fail(f"min {bound.min:g} is above max {bound.max:g}", path)
    return bound


MEASURED_HELP = "measured before training at `context`: {max: ..., context: ...} (composer/measure)"


@dataclass(frozen=True)
class Constraints:
    """Budgets checked before a candidate trains: analytic costs (`max_*`) at `context` (default: the task's
    sequence length), and measured ones (`peak_memory_bytes: {max: 2e9, context: 32768}`) on the `measure:`
    device, each measured once per distinct architecture."""

    max_params: float | None = option(None, "parameters", gt=0)
    max_active_params: float | None = option(None, "parameters one token touches (MoE)", gt=0)
    max_flops_per_token: float | None = option(None, "forward FLOPs per token", gt=0)
    max_state_bytes: float | None = option(None, "decoding state per sequence", gt=0)
    context: float | None = option(None, "the context length the costs are taken at", gt=0)
    prefill_tokens_per_s: MeasuredBound | None = option(None, MEASURED_HELP, parse=read_bound)
    decode_ms_per_token: MeasuredBound | None = option(None, MEASURED_HELP, parse=read_bound)
    peak_memory_bytes: MeasuredBound | None = option(None, MEASURED_HELP, parse=read_bound)
    state_bytes: MeasuredBound | None = option(None, MEASURED_HELP, parse=read_bound)

    def limits(self) -> dict[str, float]:
        """The analytic budgets given, by name (`max_params` -> its limit)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name.startswith("max_") and getattr(self, f.name) is not None}

    def measured(self) -> dict[str, MeasuredBound]:
        """The measured bounds given, by metric."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), MeasuredBound)}


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
    measure: MeasureSettings = option(help="how measured objectives and constraints are measured (composer/measure)",
                                      factory=MeasureSettings)
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
        """What each objective is reported as: its metric, or `metric@context` for a measured one."""
        return [Objective(**o).name for o in self.objectives]

    def measured_needs(self) -> dict[int, set[str]]:
        """The measured metrics the objectives and constraints need, by context (empty when none is measured)."""
        needs: dict[int, set[str]] = {}
        for o in self.objectives:
            if o.get("context") is not None:
                needs.setdefault(int(o["context"]), set()).add(o["metric"])
        for metric, bound in self.constraints.measured().items():
            needs.setdefault(bound.context, set()).add(metric)
        return needs

    def shortest_max_seq_len(self) -> int:
        """The smallest `max_seq_len` a candidate can have: the base's (its smallest choice when searched; the
        spec's default when not given), at least the task's sequence length."""
        value = self.base.get("max_seq_len", next(f.default for f in dataclasses.fields(ArchSpec)
                                                  if f.name == "max_seq_len"))
        if isinstance(value, Dist):
            value = min(value.values) if value.kind == "choice" else value.low
        return max(int(value), self.seq_len)

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
