"""Training budgets (steps, tokens or seconds) and the learning-rate schedules (warmup + cosine or WSD)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from composer.errors import UserError
from composer.fields import option

SCHEDULES = ("cosine", "wsd", "constant")


@dataclass(frozen=True)
class Budget:
    """How long a run may train. Any combination; the run ends at the first limit reached."""

    steps: int | None = option(None, "training steps", gt=0)
    tokens: int | None = option(None, "training tokens", gt=0)
    seconds: float | None = option(None, "training wall-clock seconds", gt=0)

    def __post_init__(self) -> None:
        if self.steps is None and self.tokens is None and self.seconds is None:
            raise UserError("a budget needs steps, tokens or seconds", path="budget")
        for name in ("steps", "tokens", "seconds"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise UserError(f"expected a positive number, got {value!r}", path=f"budget.{name}")

    @classmethod
    def of(cls, budget: Budget | int | dict) -> Budget:
        """A Budget from a Budget, a step count, or a dict like {"tokens": 1e6}."""
        if isinstance(budget, Budget):
            return budget
        if isinstance(budget, int) and not isinstance(budget, bool):
            return cls(steps=budget)
        if isinstance(budget, dict):
            unknown = set(budget) - {"steps", "tokens", "seconds"}
            if unknown:
                raise UserError(f"unknown budget field {sorted(unknown)[0]!r}; expected steps, tokens or seconds",
                                path="budget")
            return cls(**{k: (int(v) if k != "seconds" else float(v)) for k, v in budget.items()})
        raise UserError(f"expected a Budget, a step count or a dict, got {budget!r}", path="budget")

    def total_steps(self, tokens_per_step: int) -> int | None:
        """Steps the run will take, when known in advance (not for a pure time budget)."""
        limits = [self.steps] if self.steps is not None else []
        if self.tokens is not None:
            limits.append(max(1, math.ceil(self.tokens / tokens_per_step)))
        return min(limits) if limits else None

    def progress(self, step: int, elapsed: float, tokens_per_step: int) -> float:
        """Fraction of the budget used after `step` steps and `elapsed` seconds, in [0, 1]."""
        fractions = []
        total = self.total_steps(tokens_per_step)
        if total is not None:
            fractions.append(step / total)
        if self.seconds is not None:
            fractions.append(elapsed / self.seconds)
        return min(1.0, max(fractions))

    def as_dict(self) -> dict:
        return {k: v for k, v in (("steps", self.steps), ("tokens", self.tokens), ("seconds", self.seconds))
                if v is not None}


def lr_factor(step: int, progress: float, warmup_steps: int, schedule: str = "cosine",
              min_ratio: float = 0.1, decay_fraction: float = 0.2, warmup_fraction: float | None = None) -> float:
    """Multiplier of the peak learning rate at `step` (0-based), `progress` in [0, 1] of the budget.

    Linear warmup over `warmup_steps`, then `cosine` decay to `min_ratio` over the rest of the budget, or
    `wsd` (warmup-stable-decay): constant until the last `decay_fraction` of the budget, then linear decay to
    `min_ratio`. With `warmup_fraction`, the warmup is the first fraction of the budget's progress instead (so it
    works with token and seconds budgets), from a hundredth of the peak.
    """
    if warmup_fraction:
        if progress < warmup_fraction:
            return max(progress / warmup_fraction, 0.01)
    elif step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if schedule == "wsd":
        start = 1.0 - decay_fraction
        if progress <= start:
            return 1.0
        return 1.0 - (1.0 - min_ratio) * min(1.0, (progress - start) / decay_fraction)
    if schedule == "constant":
        return 1.0
    raise UserError(f"unknown schedule {schedule!r}; expected {', '.join(SCHEDULES)}", path="schedule")
