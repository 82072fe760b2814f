"""The `confirm:` block of a space: `ConfirmConfig`, what a confirmation (composer/confirm/) trains, and how;
read from the block or from `composer confirm`'s flags. Here, with the space's other blocks, so the search checks
the block when it reads the space without importing the confirmation.

    confirm:
      sizes: [1M, 4M]            # parameter targets (counted by `count`), or multiples of the best trial: 10x
      seeds: auto                # 2 per candidate and size, and more (up to max_seeds) for the best trial and the
                                 # first baseline while their difference is undecided; or N: seeds 0 .. N-1 for all
      max_seeds: 6               # seeds: auto adds seeds up to this many ...
      resolution: 0.01           # ... while the interval of the difference spans 0 and its half-width is above this
      lrs: [0.5x, 1x, 2x]        # each candidate's learning-rate sweep at each size (seed 0), chosen on validation:
                                 # multiples of the recipe's lr, or learning rates (1e-3); a single value: no sweep
      lr_extend: 2               # a best lr at an end of the grid extends it one step beyond, at most this often
      top_k: 3                   # the top-k distinct completed trials by the search's objective
      spread: 4                  # and 4 more spread evenly over the rest of the ranking (for the rank agreement)
      consensus: true            # also the consensus (consensus.yaml), when the run has one
      baseline: transformer      # or a spec file, or a list of them
      tokens_per_param: 20       # every candidate at a size trains on ratio * size tokens (or `tokens: 5M`)
      task: {name: text, params: {data: ../shared/data/tinyshakespeare.txt, seq_len: 128}}   # default: the search's
      train: {lr: 3.0e-3, batch_size: 16}   # training settings (composer/training/config.py); default: the search's
      count: non_embedding       # scaling.rules.Count: non_embedding | total | active
      method: auto               # scaling.rules.Method: auto | stack | stretch (scaling.rules.choose_method)
      tolerance: 0.02            # how far apart (relative) two candidates' counts at one size may be: each is fitted
                                 # to within half of it of the target, and a comparison further apart is refused
      bootstrap: 2000            # resamples for the bootstrap intervals
      level: 0.95                # interval level
      workers_per_trial: 2       # data-parallel workers per trial (default: the search's resources.workers_per_trial)

The learning rate each candidate trains with is chosen on the validation split, its verdict read off the test
split (the text task's `test_fraction`; a task without one is judged on validation, and confirm says so).
Below UNDERTRAINED tokens per parameter every verdict carries a warning. Baseline paths are read relative to the
working directory, like the command line's. Every field is declared once,
on `ConfirmConfig` (composer.fields.option), and read by the one reader (composer/reader.py).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from composer.errors import UserError
from composer.fields import option
from composer.reader import Reader, join
from composer.tasks import TaskRef
from composer.training.config import parse_settings
from scaling.rules import Count, Method

SET_BY_CONFIRM = {**{k: "confirm trains every candidate on equal tokens: use `tokens` or `tokens_per_param`"
                     for k in ("steps", "tokens", "seconds")},
                  "seed": "confirm sets each trial's seed: use `seeds`",
                  "lrs": "confirm sweeps each candidate's learning rate itself: use confirm's `lrs` (multiples of "
                         "`lr`, or learning rates)",
                  "final_splits": "confirm scores every trial on the splits it needs itself",
                  "workers": "confirm sets each trial's data-parallel workers: use `workers_per_trial`"}
RELATIVE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*[xX]\s*")
AUTO = "auto"
AUTO_START = 2          # seeds: auto starts every candidate at this many seeds
UNDERTRAINED = 5.0      # tokens per parameter below which a verdict warns that it measures early learning speed


def size_multiple(text: str) -> float | None:
    """3x -> 3.0 (a size relative to the best trial); None for an absolute count."""
    match = RELATIVE.fullmatch(str(text))
    return float(match.group(1)) if match else None


def _sizes(reader: Reader, value: Any, path: str) -> tuple[str, ...]:
    from scaling.ladder_parse import parse_count

    sizes = value if isinstance(value, list) else [value]
    if not sizes:
        raise reader.fail("expected at least one size (e.g. [1M, 4M] or [10x])", path)
    for i, size in enumerate(sizes):
        if size_multiple(size) is None:
            try:
                parse_count(size)
            except ValueError as e:
                raise reader.fail(f"{e}, or a multiple of the best trial like 10x", join(path, i)) from None
        elif not size_multiple(size) > 0:
            raise reader.fail(f"expected a positive multiple, got {size!r}", join(path, i))
    return tuple(str(s) for s in sizes)


def _lrs(reader: Reader, value: Any, path: str) -> tuple[str, ...]:
    """Multiples of the recipe's lr (`0.5x`) or learning rates (`1e-3`), not both, each positive, no repeats."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise reader.fail("expected at least one learning rate or multiple (e.g. [0.5x, 1x, 2x])", path)
    numbers = []
    for i, item in enumerate(items):
        multiple = size_multiple(item)
        number = multiple if multiple is not None else reader.number(item, join(path, i), gt=0, lt=1e30)
        if not number > 0:
            raise reader.fail(f"expected a positive multiple, got {item!r}", join(path, i))
        numbers.append((multiple is not None, number))
    if len({relative for relative, _ in numbers}) > 1:
        raise reader.fail("give multiples of lr (0.5x, 1x, 2x) or learning rates (1e-3, 3e-3), not both", path)
    if len({n for _, n in numbers}) != len(numbers):
        raise reader.fail(f"a value given twice in {items}", path)
    return tuple(f"{n:g}x" if relative else f"{n:g}" for relative, n in sorted(numbers, key=lambda x: x[1]))


def lr_grid(lrs: tuple[str, ...], lr: float) -> list[float]:
    """The learning rates of `lrs` (as `_lrs` writes them) around the recipe's `lr`, increasing, rounded to 4
    significant digits (so trial keys are stable)."""
    return sorted(round_lr(lr * m if (m := size_multiple(x)) is not None else float(x)) for x in lrs)


def round_lr(lr: float) -> float:
    return float(f"{lr:.4g}")


def _baselines(reader: Reader, value: Any, path: str) -> tuple[str, ...]:
    baselines = value if isinstance(value, list) else [value]
    if not all(isinstance(b, str) and b for b in baselines):
        raise reader.fail("expected `transformer` or a spec file, or a list of them", path)
    return tuple(baselines)


def _tokens(reader: Reader, value: Any, path: str) -> int:
    from scaling.ladder_parse import parse_count

    try:
        return parse_count(value)
    except ValueError as e:
        raise reader.fail(str(e), path) from None


def _train(reader: Reader, value: Any, path: str) -> dict[str, Any]:
    try:
        return parse_settings(value, path, SET_BY_CONFIRM)
    except UserError as e:      # without this document's lines
        raise reader.relay(e) from None


@dataclass(frozen=True)
class ConfirmConfig:
    """The settings of one confirmation (see the module docstring); `task` and `train` default to the
    search's own task and (fixed) training settings."""

    sizes: tuple[str, ...] = option(("10x",), "parameter targets (counted by `count`), or multiples of the best "
                                    "trial (10x)", parse=_sizes)
    seeds: int | Literal["auto"] = option(AUTO, "seeds 0 .. N-1 per candidate and size (intervals need a spread); "
                                          "auto: 2, and more for the best trial and the first baseline while their "
                                          "difference is undecided", ge=2)
    max_seeds: int = option(6, "seeds: auto adds seeds up to this many", ge=2, le=64)
    resolution: float = option(0.01, "seeds: auto stops once the interval's half-width is at most this (nats)", gt=0)
    lrs: tuple[str, ...] = option(("0.5x", "1x", "2x"), "each candidate's learning-rate sweep at each size, chosen on "
                                  "validation: multiples of the recipe's lr (0.5x) or learning rates (1e-3)",
                                  parse=_lrs)
    lr_extend: int = option(2, "a best lr at an end of the sweep extends it one step beyond, at most this often",
                            ge=0, le=8)
    top_k: int = option(3, "the top-k distinct completed trials by the search's objective", ge=0)
    spread: int = option(0, "and this many more spread evenly over the rest of the ranking", ge=0)
    consensus: bool = option(True, "also the consensus (consensus.yaml), when the run has one")
    baselines: tuple[str, ...] = option(("transformer",), "`transformer`, zoo:NAME or a spec file, or a list of them",
                                        key="baseline", parse=_baselines)
    tokens_per_param: float | None = option(20.0, "every candidate at a size trains on ratio * size tokens", gt=0)
    tokens: int | None = option(None, "or every candidate trains on this many tokens (5M)", parse=_tokens)
    task: TaskRef | None = option(None, "the target task (default: the search's)")
    train: dict[str, Any] = option(help="training settings (composer/training/config.py; default: the search's)",
                                   factory=dict, parse=_train)
    count: Count = option("non_embedding", "which parameters a size counts")
    method: Method = option("auto", "the depth rule (scaling.rules.choose_method)")
    tolerance: float = option(0.02, "how far apart (relative) two candidates' counts at one size may be (each is "
                              "fitted to within half of it of the target)", gt=0, lt=1)
    bootstrap: int = option(2000, "resamples for the bootstrap intervals", ge=100)
    level: float = option(0.95, "interval level", gt=0, lt=1)
    workers_per_trial: int | None = option(None, "data-parallel workers each trial trains on (Ray Train), the "
                                           "trial's CPUs split evenly over them (default: the search's)", ge=1,
                                           le=4096)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sizes": list(self.sizes), "baselines": list(self.baselines), "lrs": list(self.lrs)}

    @property
    def auto_seeds(self) -> bool:
        return self.seeds == AUTO

    @property
    def first_seeds(self) -> int:
        """The seeds every candidate trains with (seeds: auto adds to the winner-vs-baseline pair only)."""
        return AUTO_START if self.seeds == AUTO else int(self.seeds)


def parse_confirm(data: Any, path: str = "confirm", reader: Reader | None = None) -> ConfirmConfig:
    """A ConfirmConfig from a mapping (a space's `confirm:` block); errors are UserErrors naming `path.key` (and,
    with the `reader` of the document it is in, the line)."""
    reader = reader or Reader()
    config = reader.read(ConfirmConfig, data, path)
    given = data or {}
    if "tokens_per_param" in given and "tokens" in given:
        raise reader.fail("give tokens_per_param or tokens, not both", join(path, "tokens"))
    if not config.auto_seeds and "max_seeds" in given:
        raise reader.fail("max_seeds applies to seeds: auto", join(path, "max_seeds"))
    return dataclasses.replace(config, tokens_per_param=None) if "tokens" in given else config
