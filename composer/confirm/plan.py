"""Planning a confirmation: candidates fitted to each size, the target task, one training recipe, the trials.

Everything a confirmation needs is checked here, before anything is written: the run, the candidates, the
baselines, the task, the training settings and whether every candidate can be fitted to every size.

Every candidate at a size is fitted to within half the `tolerance` of the size's target (composer/confirm/sizing.py),
so any two of them differ by at most the tolerance. The training recipe is one for all candidates: the search's
fixed training settings (its budget and its evaluation cadence, which served the early-stopping scheduler, left
out), a searched setting taking the best trial's value, then the confirmation's own `train` settings; each
candidate's learning rate is then swept around the recipe's (composer/confirm/schedule.py). Trials evaluate once,
at the end, unless `eval_every` is given, and every trial is also scored on the task's test split (the verdict)
and `holdout` (validation + test: nanoGPT's split of a text) where the task has them. Every candidate at a size
trains on the same number of tokens: `tokens_per_param` times the size's target (not the candidate's own count,
which the rounding moves a little), or `tokens`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from composer.confirm.candidates import Candidate, SearchRun, adapt_to_task, read_search, select_candidates
from composer.confirm.sizing import Sized, fit_hardware
from composer.errors import UserError
from composer.reader import Reader
from composer.runs import RunDir
from composer.search.space_confirm import UNDERTRAINED, ConfirmConfig, lr_grid, size_multiple
from composer.search.space_layers import Dist
from composer.tasks import TaskRef
from composer.training.config import TrainConfig, parse_settings
from scaling.ladder import Ladder, Trial
from scaling.ladder_parse import parse_count
from scaling.rules import param_count

LEFT_TO_THE_SEARCH = ("steps", "tokens", "seconds", "eval_every", "checkpoint_every", "seed", "resume", "lrs",
                      "final_splits")
JUDGE_SPLIT = "test"                # the split the verdict reads, where the task has it
COMPARABLE_SPLIT = "holdout"        # the text task's validation + test: nanoGPT's split, printed beside
EVALUATE_AT_THE_END = 1 << 40
LADDER_NAME = "confirm"             # results in runs/<name>/confirm/ladder.json


@dataclass
class ConfirmPlan:
    """What a confirmation will train, and everything needed to analyse it."""

    run: RunDir
    config: ConfirmConfig
    metric: str                               # the search's objective (the proxy)
    mode: str
    task: TaskRef
    train: dict[str, Any]                     # flat training settings, one recipe for all
    candidates: list[Candidate]
    sizes: list[tuple[str, int]]              # (label, parameter target), increasing
    sized: dict[tuple[str, str], Sized]       # (candidate, size label) -> fitted spec and how
    splits: tuple[str, ...] = ()              # the task's held-out splits besides validation
    notes: list[str] = field(default_factory=list)
    workers_per_trial: int = 1                # data-parallel workers of each trial (Ray Train)

    @property
    def out_dir(self) -> Path:
        return self.run.path(LADDER_NAME)

    @property
    def lr(self) -> float:
        """The recipe's learning rate: the centre of every candidate's sweep."""
        return TrainConfig().with_values(self.train).optimizer.lr

    @property
    def grid(self) -> list[float]:
        return lr_grid(self.config.lrs, self.lr)

    @property
    def judge_split(self) -> str | None:
        """The split the verdict reads: test, or None (validation) for a task without one."""
        return JUDGE_SPLIT if JUDGE_SPLIT in self.splits else None

    @property
    def judge_metric(self) -> str:
        return f"{self.judge_split}_loss" if self.judge_split else "val_loss"

    @property
    def final_splits(self) -> tuple[str, ...]:
        return tuple(s for s in (JUDGE_SPLIT, COMPARABLE_SPLIT) if s in self.splits)

    def tokens(self, target: int) -> int:
        if self.config.tokens is not None:
            return self.config.tokens
        return int(round(self.config.tokens_per_param * target))

    def tokens_per_param(self, target: int) -> float:
        return self.tokens(target) / target

    def undertrained(self) -> dict[str, float]:
        """The sizes trained on fewer than UNDERTRAINED tokens per parameter, and their ratio."""
        return {label: self.tokens_per_param(target) for label, target in self.sizes
                if self.tokens_per_param(target) < UNDERTRAINED}

    def trial(self, name: str, label: str, seed: int, lr: float) -> Trial:
        target = dict(self.sizes)[label]
        budget = "tokens" if self.config.tokens is not None else "tokens_per_param"
        return Trial(name, label, target, seed, self.tokens(target), budget, self.sized[(name, label)].spec, lr=lr)

    def auto_pair(self) -> tuple[str, str] | None:
        """The pair `seeds: auto` adds seeds to: the best trial and the first baseline (None when they are one
        architecture, or there is no baseline)."""
        best = next((c for c in self.candidates if "top1" in c.roles), None)
        base = next((c for c in self.candidates if c.is_baseline), None)
        return None if best is None or base is None or best is base else (best.name, base.name)

    def trial_counts(self) -> dict[str, int]:
        """How many trials: the first round (every sweep), at least (no sweep extends, no seed added) and at most."""
        cells = len(self.candidates) * len(self.sizes)
        first = cells * len(self.grid)
        least = first + cells * (self.config.first_seeds - 1)
        extend = cells * self.config.lr_extend if len(self.grid) > 1 else 0
        pair = 2 * len(self.sizes) * (self.config.max_seeds - self.config.first_seeds) if (
            self.config.auto_seeds and self.auto_pair()) else 0
        return {"first_round": first, "at_least": least, "at_most": least + extend + pair}

    def ladder(self) -> Ladder:
        """The ladder the trials run through (scaling.ladder: runners, resumable ladder.json)."""
        budget = ({"tokens": self.config.tokens} if self.config.tokens is not None
                  else {"tokens_per_param": self.config.tokens_per_param})
        train = TrainConfig().with_values(self.train)
        if self.final_splits:
            train = train.with_settings(final_splits=self.final_splits)
        return Ladder(name=LADDER_NAME, task=self.task, architectures={c.name: c.spec for c in self.candidates},
                      sizes=list(self.sizes), count=self.config.count, method=self.config.method,
                      tolerance=self.config.tolerance, budget=budget, seeds=list(range(self.config.first_seeds)),
                      train=train, bootstrap=min(self.config.bootstrap, 500),
                      workers_per_trial=self.workers_per_trial)

    def describe(self) -> dict[str, Any]:
        return {"run": str(self.run.root), "objective": {"metric": self.metric, "mode": self.mode},
                "task": self.task.flat(), "train": self.train, "config": self.config.as_dict(),
                "candidates": [c.as_dict() for c in self.candidates],
                "sizes": [{"label": label, "target": target} for label, target in self.sizes],
                "sizing": [{"candidate": name, "size": label, **sized.as_dict()}
                           for (name, label), sized in self.sized.items()],
                "tokens": {label: self.tokens(target) for label, target in self.sizes},
                "tokens_per_param": {label: self.tokens_per_param(target) for label, target in self.sizes},
                "lr_grid": self.grid, "splits": {"select": "validation", "judge": self.judge_split or "validation",
                                                 "comparable": COMPARABLE_SPLIT if COMPARABLE_SPLIT in self.splits
                                                 else None},
                "trials": self.trial_counts(), "notes": self.notes}


def build_plan(run_dir: str | Path, config: ConfirmConfig) -> ConfirmPlan:
    """Read the run and plan every trial; every problem is a UserError, and nothing is written."""
    search = read_search(run_dir)
    candidates = select_candidates(search, config.top_k, config.consensus, config.baselines, config.spread)
    task, built = target_task(search, config)
    notes: list[str] = []
    train = recipe(search, config, notes)
    for c in candidates:
        c.spec = adapt_to_task(c.spec, built.vocab_size, built.seq_len)
    best = candidates[0]
    sizes = resolve_sizes(config.sizes, param_count(best.spec, config.count), best.name)
    workers = config.workers_per_trial or int(search.space.resources.get("workers_per_trial") or 1)
    check_workers_per_trial(train, workers)
    plan = ConfirmPlan(search.run, config, search.metric, search.mode, task, train, candidates, sizes, {},
                       tuple(getattr(built, "splits", ())), notes, workers)
    for c in candidates:
        for label, target in sizes:
            plan.sized[(c.name, label)] = fit_hardware(c.spec, target, method=config.method, count=config.count,
                                                       tolerance=config.tolerance / 2,
                                                       what=f"{c.name} at size {label}")
    batch = TrainConfig().with_values(train).runtime.batch_size * built.seq_len
    for label, target in sizes:
        if plan.tokens(target) < batch:
            raise UserError(f"size {label}: {plan.tokens(target):,} training tokens are fewer than one batch "
                            f"({batch:,} tokens); raise tokens_per_param or tokens", path="tokens")
    if plan.judge_split is None:
        notes.append(f"the task {task.name!r} has no test split: the learning rates and the verdict both read its "
                     "validation split")
    for label, ratio in plan.undertrained().items():
        notes.append(f"size {label} trains on {ratio:.2g} tokens per parameter (below {UNDERTRAINED:g}): "
                     "undertrained, its differences reflect early learning speed")
    return plan


def check_workers_per_trial(train: dict[str, Any], workers: int) -> None:
    """The recipe's settings must suit `workers` data-parallel workers (the batch splits over them)."""
    if workers == 1:
        return
    from composer.training.ray_train import check_settings

    try:
        check_settings(TrainConfig().with_values(train).with_settings(workers=workers))
    except UserError as e:
        raise UserError(e.message, path="workers_per_trial" if e.path == "workers" else f"train.{e.path}") from None


def resolve_sizes(given: tuple[str, ...], best_params: int, best_name: str) -> list[tuple[str, int]]:
    """(label, target) per size, increasing; `10x` is ten times the best trial's parameter count."""
    out = []
    for i, text in enumerate(given):
        multiple = size_multiple(text)
        try:
            target = int(round(multiple * best_params)) if multiple is not None else parse_count(text)
        except ValueError as e:
            raise UserError(str(e), path=f"sizes[{i}]") from None
        out.append((text, target))
    out.sort(key=lambda s: s[1])
    targets = [t for _, t in out]
    if len(set(targets)) != len(targets):
        raise UserError(f"two sizes give the same target ({', '.join(given)}; {best_name} has {best_params:,})",
                        path="sizes")
    return out


def target_task(search: SearchRun, config: ConfirmConfig) -> tuple[TaskRef, Any]:
    """The task to confirm on, and the task built (its vocabulary size, sequence length and splits)."""
    from composer.tasks import TaskSuite

    task = config.task or search.space.task
    built = task.built(Reader(), "task")
    if isinstance(built, TaskSuite):
        raise UserError(f"confirm compares validation losses: give a single task, not the suite {task.name!r} "
                        "(e.g. --task text --data FILE, or mad:<task>)", path="task")
    return task, built


def recipe(search: SearchRun, config: ConfirmConfig, notes: list[str]) -> dict[str, Any]:
    """One set of flat training settings for every trial (see the module docstring)."""
    best = search.ranked()[0]
    sampled = json.loads(best.get("params_json") or "{}")
    out: dict[str, Any] = {}
    for key, value in search.space.train.items():
        if key in LEFT_TO_THE_SEARCH:
            continue
        if isinstance(value, Dist):
            if key not in sampled:
                continue
            value = sampled[key]
            notes.append(f"{key} was searched: every candidate trains with the best trial's {key} = {value}")
        out[key] = value
    out = parse_settings(out, "train")
    out.update(config.train)
    out.setdefault("eval_every", EVALUATE_AT_THE_END)
    return out
