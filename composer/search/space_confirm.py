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
      count: non_embedding       # non_embedding | total | active
      method: auto               # auto | stack | stretch (scaling.rules.choose_method)
      tolerance: 0.1             # how far (relative) a fitted size may land from its target
      bootstrap: 2000            # resamples for the bootstrap intervals
      level: 0.95                # interval level

Baseline paths are read relative to the working directory, like the command line's.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from composer.errors import UserError
from composer.training.config import parse_settings
from composer.yaml_source import join

CONFIRM_KEYS = ("sizes", "seeds", "top_k", "spread", "consensus", "baseline", "tokens_per_param", "tokens",
                "task", "train", "count", "method", "tolerance", "bootstrap", "level")
SET_BY_CONFIRM = {**{k: "confirm trains every candidate on equal tokens: use `tokens` or `tokens_per_param`"
                     for k in ("steps", "tokens", "seconds")},
                  "seed": "confirm sets each trial's seed: use `seeds`",
                  "lrs": "confirm trains every candidate with one learning rate: use `lr`"}
RELATIVE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*[xX]\s*")


@dataclass(frozen=True)
class ConfirmConfig:
    """The settings of one confirmation (see the module docstring); `task` and `train` default to the
    search's own task and (fixed) training settings."""

    sizes: tuple[str, ...] = ("10x",)
    seeds: int = 3
    top_k: int = 3
    spread: int = 0
    consensus: bool = True
    baselines: tuple[str, ...] = ("transformer",)
    tokens_per_param: float | None = 20.0
    tokens: int | None = None
    task: dict[str, Any] | None = None
    train: dict[str, Any] = field(default_factory=dict)
    count: str = "non_embedding"
    method: str = "auto"
    tolerance: float = 0.1
    bootstrap: int = 2000
    level: float = 0.95

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sizes": list(self.sizes), "baselines": list(self.baselines)}


def size_multiple(text: str) -> float | None:
    """3x -> 3.0 (a size relative to the best trial); None for an absolute count."""
    match = RELATIVE.fullmatch(str(text))
    return float(match.group(1)) if match else None


def parse_confirm(data: Any, path: str = "confirm") -> ConfirmConfig:
    """A ConfirmConfig from a mapping (a space's `confirm:` block); errors are UserErrors naming `path.key`."""
    from scaling.ladder_parse import parse_count

    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"expected a mapping, got {type(data).__name__}", path)
    for key in data:
        if key not in CONFIRM_KEYS:
            raise UserError(f"unknown field {key!r}; expected one of {', '.join(CONFIRM_KEYS)}", join(path, key))
    values: dict[str, Any] = {}
    if "sizes" in data:
        sizes = data["sizes"] if isinstance(data["sizes"], list) else [data["sizes"]]
        if not sizes:
            raise UserError("expected at least one size (e.g. [1M, 4M] or [10x])", join(path, "sizes"))
        for i, size in enumerate(sizes):
            if size_multiple(size) is None:
                try:
                    parse_count(size)
                except ValueError as e:
                    raise UserError(f"{e}, or a multiple of the best trial like 10x", join(join(path, "sizes"), i)) \
                        from None
            elif not size_multiple(size) > 0:
                raise UserError(f"expected a positive multiple, got {size!r}", join(join(path, "sizes"), i))
        values["sizes"] = tuple(str(s) for s in sizes)
    for key, least in (("seeds", 2), ("top_k", 0), ("spread", 0), ("bootstrap", 100)):
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise UserError(f"expected an integer >= {least}, got {value!r}", join(path, key))
            values[key] = value
    if "consensus" in data:
        if not isinstance(data["consensus"], bool):
            raise UserError(f"expected true or false, got {data['consensus']!r}", join(path, "consensus"))
        values["consensus"] = data["consensus"]
    if "baseline" in data:
        baselines = data["baseline"] if isinstance(data["baseline"], list) else [data["baseline"]]
        if not all(isinstance(b, str) and b for b in baselines):
            raise UserError("expected `transformer` or a spec file, or a list of them", join(path, "baseline"))
        values["baselines"] = tuple(baselines)
    if "tokens_per_param" in data and "tokens" in data:
        raise UserError("give tokens_per_param or tokens, not both", join(path, "tokens"))
    if "tokens_per_param" in data:
        ratio = data["tokens_per_param"]
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0 or not math.isfinite(ratio):
            raise UserError(f"expected a positive number, got {ratio!r}", join(path, "tokens_per_param"))
        values["tokens_per_param"] = float(ratio)
    if "tokens" in data:
        try:
            values["tokens"] = parse_count(data["tokens"])
        except ValueError as e:
            raise UserError(str(e), join(path, "tokens")) from None
        values["tokens_per_param"] = None
    if "task" in data:
        values["task"] = parse_task(data["task"], join(path, "task"))
    if "train" in data:
        values["train"] = parse_settings(data["train"], join(path, "train"), SET_BY_CONFIRM)
    choices = {"count": ("non_embedding", "total", "active"), "method": ("auto", "stack", "stretch")}
    for key, allowed in choices.items():
        if key in data:
            if data[key] not in allowed:
                raise UserError(f"expected one of {', '.join(allowed)}, got {data[key]!r}", join(path, key))
            values[key] = data[key]
    for key in ("tolerance", "level"):
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise UserError(f"expected a fraction in (0, 1), got {value!r}", join(path, key))
            values[key] = float(value)
    return ConfirmConfig(**values)


def parse_task(value: Any, path: str) -> dict[str, Any]:
    """{name, params} from a task name or a mapping (parameters under `params` or beside `name`)."""
    from composer.tasks import task_params

    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise UserError("expected a task name or a mapping with `name`", path)
    try:
        return {"name": value["name"], "params": task_params(value)}
    except UserError as e:
        raise UserError(e.message, join(path, e.path or "")) from None
