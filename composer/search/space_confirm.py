"""The `confirm:` block of a space: `ConfirmConfig`, what a confirmation (composer/confirm/) trains, and how;
read from the block or from `composer confirm`'s flags. Here, with the space's other blocks, so the search checks
the block when it reads the space without importing the confirmation.

    confirm:
      sizes: [1M, 4M]            # parameter targets (counted by `count`), or multiples of the best trial: 10x
      seeds: 3                   # seeds 0 .. N-1 per candidate and size (at least 2: intervals need a spread)
      top_k: 3                   # the top-k distinct completed trials by the search's objective
      spread: 4                  # and 4 more spread evenly over the rest of the ranking (for the rank agreement)
      consensus: true            # also the consensus (consensus.yaml), when the run has one
      baseline: transformer      # or a spec file, or a list of them
      tokens_per_param: 20       # every candidate at a size trains on ratio * size tokens (or `tokens: 5M`)
      task: {name: text, params: {data: ../shared/data/tinyshakespeare.txt, seq_len: 128}}   # default: the search's
      train: {lr: 3.0e-3, batch_size: 16}   # training settings (composer/training/config.py); default: the search's
      count: non_embedding       # scaling.rules.Count: non_embedding | total | active
      method: auto               # scaling.rules.Method: auto | stack | stretch (scaling.rules.choose_method)
      tolerance: 0.1             # how far (relative) a fitted size may land from its target
      bootstrap: 2000            # resamples for the bootstrap intervals
      level: 0.95                # interval level

Baseline paths are read relative to the working directory, like the command line's. Every field is declared once,
on `ConfirmConfig` (composer.fields.option), and read by the one reader (composer/reader.py).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass
from typing import Any

from composer.errors import UserError
from composer.fields import option
from composer.reader import Reader, join
from composer.tasks import TaskRef
from composer.training.config import parse_settings
from scaling.rules import Count, Method

SET_BY_CONFIRM = {**{k: "confirm trains every candidate on equal tokens: use `tokens` or `tokens_per_param`"
                     for k in ("steps", "tokens", "seconds")},
                  "seed": "confirm sets each trial's seed: use `seeds`",
                  "lrs": "confirm trains every candidate with one learning rate: use `lr`"}
RELATIVE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*[xX]\s*")


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
    seeds: int = option(3, "seeds 0 .. N-1 per candidate and size (intervals need a spread)", ge=2)
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
    tolerance: float = option(0.1, "how far (relative) a fitted size may land from its target", gt=0, lt=1)
    bootstrap: int = option(2000, "resamples for the bootstrap intervals", ge=100)
    level: float = option(0.95, "interval level", gt=0, lt=1)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sizes": list(self.sizes), "baselines": list(self.baselines)}


def parse_confirm(data: Any, path: str = "confirm", reader: Reader | None = None) -> ConfirmConfig:
    """A ConfirmConfig from a mapping (a space's `confirm:` block); errors are UserErrors naming `path.key` (and,
    with the `reader` of the document it is in, the line)."""
    reader = reader or Reader()
    config = reader.read(ConfirmConfig, data, path)
    given = data or {}
    if "tokens_per_param" in given and "tokens" in given:
        raise reader.fail("give tokens_per_param or tokens, not both", join(path, "tokens"))
    return dataclasses.replace(config, tokens_per_param=None) if "tokens" in given else config
