"""Search strategies. Each is one `Strategy` object (composer/search/strategies/base.py): an Optuna sampler built
from the strategy's options (so every strategy's trials live in the same study), the checks its options and the
space must pass, and optionally a stage driver. Every module of this package registers its strategies when it is
imported, and all are imported here, so a new strategy, staged or not, is one new file.

- `random`, `grid`, `tpe`, `gp`, `nsga2`: Optuna's samplers (optuna_samplers.py); `tpe` is the default.
- `evolution`: regularized (aging) evolution as an Optuna sampler (evolution.py).
- `one_shot` and `incremental`: Composer's layer-wise searches (layerwise.py, incremental.py): they sample with
  `options.sampler` and end with the space's aggregation; incremental grows the stack in stages.

Which strategy finds the best fastest is measured in benchmarks/bench_strategies.py, and the defaults follow it.
"""

from __future__ import annotations

import importlib
import pkgutil

from composer.search.strategies.base import (
    StageDriver,
    Strategy,
    final_rows,
    find_strategy,
    get_strategy,
    make_sampler,
    register_strategy,
    strategies,
    strategy_of,
)
from composer.search.strategies.evolution import RegularizedEvolutionSampler, allowed, mutate

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["RegularizedEvolutionSampler", "StageDriver", "Strategy", "allowed", "final_rows", "find_strategy",
           "get_strategy", "make_sampler", "mutate", "register_strategy", "strategies", "strategy_of"]
