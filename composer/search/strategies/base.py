"""`Strategy`: one search strategy as one object, and the registry the strategy modules register into.

A strategy is its sampler (an Optuna `BaseSampler` built from the strategy's `options`, so every strategy's
trials live in the same study), its options declared as a dataclass (composer/fields.py) and what else they and
the space must pass (both checked when the space is read, so an error names its YAML line), and optionally a
stage driver: a strategy whose search runs in stages (each stage a space of its own, its trials run as one Ray
Tune session; incremental.py here) gives `stages`, which also says which trials its best and consensus come
from. Without stages, every trial samples the whole space in one go.

    register_strategy(Strategy("random", lambda options, space, seed: RandomSampler(seed=seed, **options)))
    register_strategy(Strategy("incremental", sampler, options=IncrementalOptions, check=needs_slots,
                               stages=StageDriver(run_incremental, final_rows), plain=False))
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.samplers import BaseSampler

from composer.errors import UserError
from composer.reader import Reader
from composer.search.aggregate import searched

Rows = list[dict[str, Any]]
RunTrials = Callable[[Any, int], None]          # (a space, n): run n trials of that space (one Tune session)


@dataclass(frozen=True)
class StageDriver:
    """How a staged strategy runs its search, and which trials it ends with."""

    # run(space, run_dir, rows, run_trials, stopped, log): run (or, reading run_dir, continue) every stage;
    # `rows()` is the leaderboard so far, `stopped()` says the search was interrupted. run_dir None: write nothing
    run: Callable[[Any, Path | None, Callable[[], Rows], RunTrials, Callable[[], bool],
                   Callable[[str], None] | None], None]
    final_rows: Callable[[Any, Path | None, Rows], Rows]     # (space, run_dir, rows): the last stage's trials


@dataclass(frozen=True)
class Strategy:
    """One search strategy (see the module docstring)."""

    name: str
    sampler: Callable[[dict[str, Any], Any, int], BaseSampler]     # (options, space, seed) -> the Optuna sampler
    options: type | None = None     # the options declared (a dataclass of composer.fields.option fields), read by
    #                                 composer.reader; None: any mapping, for the sampler's constructor to judge
    check: Callable[[dict[str, Any], Any], None] | None = None     # (options, space): a UserError naming the field
    stages: StageDriver | None = None
    plain: bool = True          # samples by itself: a layer-wise search may use it as its `sampler`

    def make_sampler(self, options: Any, space: Any, seed: int) -> BaseSampler:
        """The Optuna sampler; `options` (a mapping, or None) as the strategy's options."""
        return self.sampler(dict(Reader().mapping(options or {}, "strategy.options")), space, seed)

    def validate(self, space: Any, reader: Reader | None = None) -> None:
        """The strategy's options (`space.strategy`) read against their declaration, then its own checks of them
        and of the space; a UserError naming the field (and, with the document's `reader`, its line)."""
        reader = reader or Reader()
        options = reader.mapping(space.strategy.get("options") or {}, "strategy.options")
        if self.options is not None:
            reader.read(self.options, options, "strategy.options")
        if self.check is not None:
            try:
                self.check(options, space)
            except UserError as e:
                raise reader.relay(e) from None

    def drive(self, space: Any, run_dir: Path | None, rows: Callable[[], Rows], run_trials: RunTrials,
              stopped: Callable[[], bool] = lambda: False, log: Callable[[str], None] | None = None) -> None:
        """Run the search's trials (those `rows()` does not hold yet): all at once, or stage by stage."""
        if self.stages is not None:
            self.stages.run(space, run_dir, rows, run_trials, stopped, log)
            return
        remaining = space.trials - len(searched(rows()))
        if remaining > 0:
            run_trials(space, remaining)

    def final_rows(self, space: Any, run_dir: Path | None, rows: Rows) -> Rows:
        """The trials the search's best and consensus come from: its own (not the consensus), of the last stage."""
        return searched(rows) if self.stages is None else self.stages.final_rows(space, run_dir, rows)


_STRATEGIES: dict[str, Strategy] = {}


def register_strategy(strategy: Strategy) -> Strategy:
    """Add a strategy (a strategy module does this when it is imported)."""
    _STRATEGIES[strategy.name] = strategy
    return strategy


def strategies() -> dict[str, Strategy]:
    """name -> Strategy, every registered one."""
    return dict(_STRATEGIES)


def find_strategy(name: str) -> Strategy | None:
    return _STRATEGIES.get(name)


def get_strategy(name: str) -> Strategy:
    """The strategy `name`; a UserError naming the known ones otherwise."""
    if name not in _STRATEGIES:
        from composer.names import unknown_name_message

        raise UserError(unknown_name_message("strategy", name, list(_STRATEGIES)), path="strategy.name")
    return _STRATEGIES[name]


def strategy_of(space: Any) -> Strategy:
    """The strategy a space names (`space.strategy`: {name, options})."""
    return get_strategy(space.strategy["name"])


def make_sampler(strategy: dict[str, Any], space: Any, seed: int) -> BaseSampler:
    """The Optuna sampler for `strategy` ({name, options}); options go to the sampler's constructor."""
    return get_strategy(strategy["name"]).make_sampler(strategy.get("options"), space, seed)


def final_rows(space: Any, run_dir: Path | None, rows: Rows) -> Rows:
    """The candidates a search's best and consensus come from (`Strategy.final_rows`)."""
    return strategy_of(space).final_rows(space, run_dir, rows)


@contextlib.contextmanager
def sampler_options(name: str) -> Iterator[None]:
    """Options a sampler's constructor refuses (a TypeError) as a UserError at `strategy.options`."""
    try:
        yield
    except TypeError as e:
        raise UserError(f"bad options for strategy {name!r}: {e}", path="strategy.options") from None
