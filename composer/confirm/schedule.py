"""Which trials a confirmation needs, given the trials finished so far: a pure function of the plan and the rows of
`confirm/ladder.json`, so a rerun (after kill -9, or with more seeds) asks for exactly what is missing.

Per candidate and size, in this order:

1. **the learning-rate sweep**: seed 0 at every learning rate of the grid (`lrs` around the recipe's lr). When the
   lowest validation loss is at an end of the grid, the grid extends one step beyond that end (the ratio of its
   last two values), at most `lr_extend` times, so the choice is an optimum inside the grid where it can be;
   a diverged trial counts as an infinite loss. The learning rate with the lowest *validation* loss is chosen.
2. **the seeds**: seeds 1 .. N-1 at the chosen learning rate (seed 0 is the sweep's trial), N = `seeds`, or 2 for
   `seeds: auto`.
3. **seeds until decided** (`seeds: auto`): the best trial and the first baseline, once both have their seeds,
   get one more seed each while the interval of their paired *test*-loss difference spans 0, its half-width is
   above `resolution` and they have fewer than `max_seeds`; what stopped it is recorded (`STOPS`).

Each step waits for the trials it reads, so a confirmation runs in rounds (composer/confirm/run.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from composer.search.space_confirm import round_lr
from scaling.ladder import Trial
from scaling.stats import paired_difference

if TYPE_CHECKING:
    from composer.confirm.plan import ConfirmPlan

STOPS = {"decided": "the interval excludes 0",
         "resolved": "the interval's half-width is at most the resolution",
         "max_seeds": "the most seeds allowed (max_seeds)",
         "diverged": "too few trials of the pair finished (diverged)"}
SELECT_METRIC = "val_loss"          # what chooses a learning rate


@dataclass
class Sweep:
    """One candidate's learning-rate sweep at one size (seed 0)."""

    grid: list[float]                                       # every lr tried or to try, increasing
    losses: dict[float, float] = field(default_factory=dict)  # validation loss per finished lr (inf: diverged)
    chosen: float | None = None                             # None: still running, or every lr diverged
    extended: int = 0
    done: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"grid": self.grid, "val_loss": {f"{lr:g}": v for lr, v in self.losses.items()}, "chosen": self.chosen,
                "extended": self.extended, "done": self.done,
                "at_edge": self.chosen is not None and len(self.grid) > 1 and self.chosen in (self.grid[0],
                                                                                              self.grid[-1])}


@dataclass
class Schedule:
    """The trials needed so far, and what the finished ones decided."""

    trials: list[Trial]
    sweeps: dict[tuple[str, str], Sweep]                     # (candidate, size) -> its sweep
    seeds: dict[tuple[str, str], list[int]]                  # (candidate, size) -> seeds at its chosen lr
    stops: dict[str, dict[str, Any]]                         # size -> the pair's seeds and what stopped them

    def chosen(self, name: str, label: str) -> float | None:
        sweep = self.sweeps.get((name, label))
        return None if sweep is None else sweep.chosen


def loss_of(row: dict[str, Any] | None, metric: str) -> float | None:
    """A finished row's `metric` (inf when it diverged); None when not finished."""
    if row is None:
        return None
    metrics = row.get("metrics", {})
    value = metrics.get(metric)
    if metrics.get("status") == "diverged" or not isinstance(value, (int, float)) or not math.isfinite(value):
        return math.inf
    return float(value)


def schedule(plan: ConfirmPlan, rows: list[dict[str, Any]]) -> Schedule:
    """See the module docstring."""
    done = {row["key"]: row for row in rows}
    config = plan.config
    trials: dict[str, Trial] = {}
    out = Schedule([], {}, {}, {})

    def need(name: str, label: str, seed: int, lr: float, metric: str = SELECT_METRIC) -> float | None:
        """Ask for the trial; its `metric` when finished (inf: diverged), else None."""
        trial = plan.trial(name, label, seed, lr)
        trials.setdefault(trial.key, trial)
        return loss_of(done.get(trial.key), metric)

    for label, _ in plan.sizes:
        for c in plan.candidates:
            sweep = out.sweeps[(c.name, label)] = Sweep(list(plan.grid))
            while True:
                losses = {lr: need(c.name, label, 0, lr) for lr in sweep.grid}
                sweep.losses = {lr: v for lr, v in losses.items() if v is not None}
                if len(sweep.losses) < len(sweep.grid):
                    break                                   # waiting for the sweep's trials
                best = min(sweep.grid, key=lambda lr: sweep.losses[lr])
                if not math.isfinite(sweep.losses[best]):
                    sweep.done = True                        # every learning rate diverged
                    break
                if len(sweep.grid) > 1 and sweep.extended < config.lr_extend and best in (sweep.grid[0],
                                                                                            sweep.grid[-1]):
                    g = sweep.grid
                    sweep.grid = ([round_lr(g[0] * g[0] / g[1]), *g] if best == g[0]
                                  else [*g, round_lr(g[-1] * g[-1] / g[-2])])
                    sweep.extended += 1
                    continue
                sweep.chosen, sweep.done = best, True
                break
            if sweep.chosen is not None:
                out.seeds[(c.name, label)] = list(range(config.first_seeds))
                for seed in range(1, config.first_seeds):
                    need(c.name, label, seed, sweep.chosen)
        if config.auto_seeds:
            stop = more_seeds(plan, label, out, need)
            if stop is not None:
                out.stops[label] = stop
    out.trials = list(trials.values())
    return out


def more_seeds(plan: ConfirmPlan, label: str, out: Schedule, need: Any) -> dict[str, Any] | None:
    """Step 3 for the pair at one size: the seeds it has, and what stopped them (None: no pair, or waiting)."""
    pair = plan.auto_pair()
    if pair is None:
        return None
    lrs = [out.chosen(name, label) for name in pair]
    if any(lr is None for lr in lrs):
        return None
    config = plan.config
    n = config.first_seeds
    while True:
        losses = [{s: need(name, label, s, lr, plan.judge_metric) for s in range(n)} for name, lr in zip(pair, lrs)]
        if any(v is None for side in losses for v in side.values()):
            return None                                      # waiting for the pair's trials
        for name in pair:
            out.seeds[(name, label)] = list(range(n))
        finite = [{s: v for s, v in side.items() if math.isfinite(v)} for side in losses]
        reason, diff = stop_reason(finite, n, config.max_seeds, config.resolution, config.level)
        if reason is not None:
            return {"pair": list(pair), "seeds": n, "stopped": reason, "why": STOPS[reason],
                    "half_width": None if diff is None else (diff.ci[1] - diff.ci[0]) / 2,
                    "resolution": config.resolution, "max_seeds": config.max_seeds}
        n += 1


def stop_reason(sides: list[dict[int, float]], n: int, max_seeds: int, resolution: float,
                level: float) -> tuple[str | None, Any]:
    """Why seeds: auto stops at `n` seeds (None: add one), and the paired difference it judged."""
    common = set(sides[0]) & set(sides[1])
    diff = paired_difference(sides[1], sides[0], level) if len(common) >= 2 else None
    if diff is not None and diff.significant:
        return "decided", diff
    if diff is not None and (diff.ci[1] - diff.ci[0]) / 2 <= resolution:
        return "resolved", diff
    if n >= max_seeds:
        return ("max_seeds" if diff is not None else "diverged"), diff
    return None, diff
