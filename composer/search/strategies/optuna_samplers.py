"""Optuna's own samplers as strategies: `random`, `grid`, `tpe`, `gp`, `nsga2`; a strategy's `options` go to
the sampler's constructor.

TPE is the default strategy, and GP and TPE both start model-based after 5 random trials (Optuna's default is
10): in benchmarks/bench_strategies.py TPE reached the table's top 5% in a median of 8 trials where random needed
19 and GP with 10 random start-up trials 13 (5 start-up trials: 11). `grid` enumerates every combination, so it
needs discrete values and at most MAX_GRID_POINTS of them (composer/limits.py).
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.samplers import BaseSampler, RandomSampler

from composer.errors import UserError
from composer.search.strategies.base import Strategy, register_strategy, sampler_options


def random_sampler(options: dict[str, Any], space: Any, seed: int) -> BaseSampler:
    with sampler_options("random"):
        return RandomSampler(seed=seed, **options)


def grid_sampler(options: dict[str, Any], space: Any, seed: int) -> BaseSampler:
    grid = {}
    for key, dist in space.distributions().items():
        values = dist.grid()
        if values is None:
            raise UserError(f"grid search needs discrete values; {key!r} is a continuous range "
                            "(give it a `step` or a `choice`)", path="strategy.name")
        grid[key] = values
    with sampler_options("grid"):
        return optuna.samplers.GridSampler(grid, seed=seed, **options)


def check_grid(options: dict[str, Any], space: Any) -> None:
    """The grid enumerates every combination: hold their number to MAX_GRID_POINTS."""
    from composer.limits import MAX_GRID_POINTS

    total = 1.0
    for dist in space.distributions().values():
        total *= dist.points()
    if math.isfinite(total) and total > MAX_GRID_POINTS:        # a continuous range: the sampler says so
        raise UserError(f"the grid has {total:,.0f} points, more than {MAX_GRID_POINTS:,} (limit MAX_GRID_POINTS)",
                        path="strategy.name")


def tpe_sampler(options: dict[str, Any], space: Any, seed: int) -> BaseSampler:
    with sampler_options("tpe"):
        return optuna.samplers.TPESampler(seed=seed, **{"n_startup_trials": 5, **options})


def gp_sampler(options: dict[str, Any], space: Any, seed: int) -> BaseSampler:
    try:
        import scipy  # noqa: F401  (GPSampler optimizes its acquisition with scipy)
    except ImportError:
        raise UserError("strategy gp needs scipy, which is not installed (pip install scipy); tpe is a good "
                        "alternative", path="strategy.name") from None
    with sampler_options("gp"):
        return optuna.samplers.GPSampler(seed=seed, **{"n_startup_trials": 5, **options})


def nsga2_sampler(options: dict[str, Any], space: Any, seed: int) -> BaseSampler:
    with sampler_options("nsga2"):
        return optuna.samplers.NSGAIISampler(seed=seed, **options)


register_strategy(Strategy("random", random_sampler))
register_strategy(Strategy("grid", grid_sampler, check=check_grid))
register_strategy(Strategy("tpe", tpe_sampler))
register_strategy(Strategy("gp", gp_sampler))
register_strategy(Strategy("nsga2", nsga2_sampler))
