"""`evolution`: regularized (aging) evolution written as an Optuna `BaseSampler`, so its trials live in the
study like every strategy's. The parent is the best of a random tournament among the most recent completed
trials, and the child is the parent with one structural mutation (change one slot's primitive or one parameter,
move a width to its neighbouring value, insert or delete a layer, swap two neighbouring layers). Options:
`population_size` (16), `tournament_size` (4).
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

from composer.errors import UserError
from composer.search.strategies.base import Strategy, register_strategy, sampler_options

SLOT_NAME = re.compile(r"^layer(\d+)\.(.+)$")


class RegularizedEvolutionSampler(BaseSampler):
    """Aging evolution (Real et al., 2019) over the study's parameters; see the module docstring."""

    def __init__(self, population_size: int = 16, tournament_size: int = 4, seed: int | None = None):
        if not (population_size >= tournament_size >= 1):
            raise UserError("evolution needs population_size >= tournament_size >= 1", path="strategy.options")
        self.population_size = population_size
        self.tournament_size = tournament_size
        self._rng = random.Random(seed)
        self._random = RandomSampler(seed=seed)
        self._children: dict[int, dict[str, Any]] = {}
        self.mutations: dict[int, str] = {}        # trial number -> the mutation that made it (for tests, logs)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(done) < self.population_size:
            return
        population = sorted(done, key=lambda t: t.number)[-self.population_size:]
        contenders = self._rng.sample(population, self.tournament_size)
        sign = 1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1
        parent = max(contenders, key=lambda t: sign * t.values[0])
        child, how = mutate(parent.params, parent.distributions, self._rng)
        self._children[trial.number] = child
        self.mutations[trial.number] = how

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        child = self._children.get(trial.number)
        if child is not None and param_name in child and allowed(child[param_name], param_distribution):
            return child[param_name]
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: list[float] | None) -> None:
        self._children.pop(trial.number, None)


def allowed(value: Any, dist: BaseDistribution) -> bool:
    """Whether `value` is one of the values `dist` offers (a parent's value may not be: a stage of the
    incremental search, or a slot moved by a mutation, can offer other choices or bounds)."""
    try:
        internal = dist.to_internal_repr(value)     # a choice's index; raises for a value not among the choices
    except (ValueError, TypeError):
        return False
    if isinstance(dist, CategoricalDistribution):
        return True
    if isinstance(dist, (IntDistribution, FloatDistribution)):
        if not dist.low <= internal <= dist.high:
            return False
        if dist.step is None:
            return True
        k = (internal - dist.low) / dist.step
        return abs(k - round(k)) < 1e-8
    return False


def mutate(params: dict[str, Any], dists: dict[str, BaseDistribution],
           rng: random.Random) -> tuple[dict[str, Any], str]:
    """One mutation of `params`; names a child does not hold are sampled afresh. Returns (child, kind)."""
    child = dict(params)
    n = params.get("n_layers")
    slot_keys = [k for k in params if SLOT_NAME.match(k)]
    kinds = ["change"]
    if isinstance(n, int) and slot_keys:
        options = _int_options(dists["n_layers"]) if "n_layers" in dists else []
        if n + 1 in options:
            kinds.append("insert")
        if n - 1 in options:
            kinds.append("delete")
        if n >= 2:
            kinds.append("swap")
    kind = rng.choice(kinds)
    if kind == "change":
        # prefer the parameters that are in use (slots beyond n_layers do not change the model)
        used = [k for k in params if not (isinstance(n, int) and _slot_index(k) is not None and _slot_index(k) >= n)]
        name = rng.choice(used or list(params))
        child[name] = _neighbour(params[name], dists[name], rng)
        return child, f"change {name}"
    if kind == "swap":
        i = rng.randrange(n - 1)
        child = _move_slots(child, {i: i + 1, i + 1: i})
        return child, f"swap layer{i} layer{i + 1}"
    if kind == "insert":
        i = rng.randrange(n + 1)
        child = _move_slots(child, {j: j + 1 for j in range(i, n)})
        child["n_layers"] = n + 1
        return child, f"insert layer{i}"
    i = rng.randrange(n)
    child = _move_slots(child, {j: j - 1 for j in range(i + 1, n)}, drop=frozenset({i}))
    child["n_layers"] = n - 1
    return child, f"delete layer{i}"


def _slot_index(name: str) -> int | None:
    match = SLOT_NAME.match(name)
    return int(match.group(1)) if match else None


def _move_slots(params: dict[str, Any], moves: dict[int, int], drop: frozenset[int] = frozenset()) -> dict[str, Any]:
    """Move slot `i`'s parameters (`layer{i}.*`) to slot `moves[i]`. A slot that is dropped, or moved away and
    not refilled, is left unset (sampled afresh)."""
    out = {k: v for k, v in params.items() if _slot_index(k) is None}
    groups: dict[int, dict[str, Any]] = {}
    for key, value in params.items():
        i = _slot_index(key)
        if i is not None:
            groups.setdefault(i, {})[SLOT_NAME.match(key).group(2)] = value
    placed: dict[int, dict[str, Any]] = {i: g for i, g in groups.items() if i not in moves and i not in drop}
    for i, target in moves.items():
        if i in groups:
            placed[target] = groups[i]
    for i, group in placed.items():
        out.update({f"layer{i}.{rest}": value for rest, value in group.items()})
    return out


def _int_options(dist: BaseDistribution) -> list[int]:
    if isinstance(dist, CategoricalDistribution):
        return [c for c in dist.choices if isinstance(c, int)]
    if isinstance(dist, IntDistribution):
        return list(range(dist.low, dist.high + 1, dist.step))
    return []


def _neighbour(value: Any, dist: BaseDistribution, rng: random.Random) -> Any:
    """A different value: another choice (the next one for ordered numbers: a width step), a neighbouring
    integer, or a float scaled by a small log-normal factor."""
    if isinstance(dist, CategoricalDistribution):
        choices = list(dist.choices)
        if len(choices) == 1:
            return value
        if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices) and value in choices:
            ordered = sorted(choices)
            i = ordered.index(value)
            return ordered[rng.choice([j for j in (i - 1, i + 1) if 0 <= j < len(ordered)])]
        return rng.choice([c for c in choices if c != value])
    if isinstance(dist, IntDistribution):
        steps = [v for v in (value - dist.step, value + dist.step) if dist.low <= v <= dist.high]
        return rng.choice(steps) if steps else value
    assert isinstance(dist, FloatDistribution)
    scaled = value * math.exp(rng.gauss(0.0, 0.3)) if dist.log else value + rng.gauss(0.0, 0.1) * (dist.high - dist.low)
    scaled = min(dist.high, max(dist.low, scaled))
    if dist.step:
        scaled = dist.low + round((scaled - dist.low) / dist.step) * dist.step
    return scaled


def evolution_sampler(options: dict[str, Any], space: Any, seed: int) -> BaseSampler:
    with sampler_options("evolution"):
        return RegularizedEvolutionSampler(seed=seed, **options)


register_strategy(Strategy("evolution", evolution_sampler))
