"""Composer's layer-wise searches, and `one_shot`, the one that searches the whole stack at once.

A layer-wise search samples with a plain strategy (`options.sampler`, its `sampler_options` going to that
sampler) and ends with the space's aggregation, whose consensus is trained as one more trial
(composer/search/aggregate.py, consensus.py). `one_shot` samples every slot at once; `incremental` grows the
stack a few slots a stage (composer/search/strategies/incremental.py). Their default samplers follow
benchmarks/bench_strategies.py: TPE for one_shot (it found the table's top 5% fastest); random for incremental,
where the benchmark could not rank the samplers (its outcome turned on a near-tie between two first-stage
prefixes, see the README).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from optuna.samplers import BaseSampler

from composer.fields import option
from composer.names import unknown_name_message
from composer.reader import Reader
from composer.search.strategies.base import Strategy, make_sampler, register_strategy, strategies


def plain_sampler(reader: Reader, value: Any, path: str) -> str:
    """A layer-wise search's `sampler`: the name of a plain strategy (one that samples by itself)."""
    if not isinstance(value, str):
        raise reader.fail("expected a strategy name (random, tpe, gp, ...)", path)
    known = strategies()
    if value in known and not known[value].plain:
        raise reader.fail("the sampler of a layer-wise search is a plain strategy (random, tpe, gp, ...)", path)
    if value not in known:
        raise reader.fail(unknown_name_message("sampler", value, [n for n, s in known.items() if s.plain]), path)
    return value


@dataclass(frozen=True)
class LayerwiseOptions:
    """The options of every layer-wise search."""

    sampler: str | None = option(None, "the plain strategy that samples (default: the search's own)",
                                 parse=plain_sampler)
    sampler_options: dict[str, Any] | None = option(None, "options of that sampler")
    top_k: Any = option(None, "the legacy form of `aggregate: {top_k: K}`")
    threshold: Any = option(None, "the legacy form of `aggregate: {threshold: T}`")


def layerwise_sampler(default: str) -> Callable[[dict[str, Any], Any, int], BaseSampler]:
    """The sampler of a layer-wise search: its `options.sampler` (default `default`) with `sampler_options`."""
    def sampler(options: dict[str, Any], space: Any, seed: int) -> BaseSampler:
        return make_sampler({"name": options.get("sampler", default), "options": options.get("sampler_options")},
                            space, seed)
    return sampler


register_strategy(Strategy("one_shot", layerwise_sampler("tpe"), options=LayerwiseOptions, plain=False))
