"""Composer's layer-wise searches, and `one_shot`, the one that searches the whole stack at once.

A layer-wise search samples with a plain strategy (`options.sampler`, its `sampler_options` going to that
sampler) and ends with the space's aggregation, whose consensus is trained as one more trial
(composer/search/aggregate.py, consensus.py). `one_shot` samples every slot at once; `incremental` grows the
stack a few slots a stage (composer/search/strategies/incremental.py). Their default samplers follow
benchmarks/bench_strategies.py: TPE for one_shot (it found the table's top 5% fastest); random for incremental,
where the benchmark could not rank the samplers (its outcome turned on a near-tie between two first-stage
prefixes, see the README). `top_k` / `threshold` among the options are the legacy form of `aggregate:`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optuna.samplers import BaseSampler

from composer.errors import UserError
from composer.search.strategies.base import Strategy, check_keys, make_sampler, register_strategy, strategies

LAYERWISE_OPTIONS = ("sampler", "sampler_options", "top_k", "threshold")


def layerwise_sampler(default: str) -> Callable[[dict[str, Any], Any, int], BaseSampler]:
    """The sampler of a layer-wise search: its `options.sampler` (default `default`) with `sampler_options`."""
    def sampler(options: dict[str, Any], space: Any, seed: int) -> BaseSampler:
        return make_sampler({"name": options.get("sampler", default), "options": options.get("sampler_options")},
                            space, seed)
    return sampler


def check_layerwise(options: Any, allowed: tuple[str, ...] = LAYERWISE_OPTIONS) -> dict[str, Any]:
    """A layer-wise search's options: only `allowed` keys, and a plain strategy as its sampler."""
    options = check_keys(options, allowed)
    sampler = options.get("sampler", "random")
    if not isinstance(sampler, str):
        raise UserError("expected a strategy name (random, tpe, gp, ...)", path="strategy.options.sampler")
    known = strategies()
    if sampler in known and not known[sampler].plain:
        raise UserError("the sampler of a layer-wise search is a plain strategy (random, tpe, gp, ...)",
                        path="strategy.options.sampler")
    if sampler not in known:
        from primitives.base import unknown_name_message

        plain = [name for name, s in known.items() if s.plain]
        raise UserError(unknown_name_message("sampler", sampler, plain), path="strategy.options.sampler")
    if options.get("sampler_options") is not None:
        check_keys(options["sampler_options"], None, "strategy.options.sampler_options")
    return options


def check_one_shot(options: dict[str, Any], space: Any) -> None:
    check_layerwise(options)


register_strategy(Strategy("one_shot", layerwise_sampler("tpe"), check=check_one_shot, plain=False))
