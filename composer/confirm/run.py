"""Run a confirmation: plan it, train its trials through the ladder runner in rounds, analyse, write `confirm.json`.

The trials go through `scaling.ladder.run_ladder` as a ladder named `confirm` inside the run folder, so they
run on the same runners (Ray tasks by default, or processes here) and resume the same way: every finished
trial is written to `runs/<name>/confirm/ladder.json` at once (atomically), and a rerun trains only the
trials missing there. The trials come in rounds (composer/confirm/schedule.py: the learning-rate sweeps, then
the seeds at each chosen learning rate, then the seeds `seeds: auto` adds): each round is what the finished
trials call for, so a killed confirmation loses only the trials in flight. A rerun with more seeds, sizes or
candidates reuses what matches; one whose task, training settings, token budgets or fitted specs differ from
the finished trials is refused before anything is trained, since mixing them would compare unlike runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from composer.atomic import write_json
from composer.confirm.analysis import analyse
from composer.confirm.plan import ConfirmPlan, build_plan
from composer.confirm.schedule import schedule
from composer.confirm.table import format_results
from composer.errors import UserError
from composer.search.space_confirm import ConfirmConfig, parse_confirm
from composer.training.config import TrainConfig
from scaling.ladder import LocalRunner, Trial, TrialRunner, run_ladder

MAX_ROUNDS = 64                     # more rounds than sweeps extend and seeds are added: a guard, never reached

CONFIRM_FILE = "confirm.json"


def plan_confirm(run_dir: str | Path, config: ConfirmConfig | None = None) -> ConfirmPlan:
    """The confirmation's plan (candidates, sizing, trials), checked; nothing is written or trained."""
    return build_plan(run_dir, config or ConfirmConfig())


def confirm(run_dir: str | Path, config: ConfirmConfig | None = None, *, runner: str | TrialRunner = "ray",
            workers: int | None = None, threads: int | None = None, address: str | None = None,
            log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Confirm a search's candidates at larger sizes (see the module docstring); returns the `confirm.json` data.

    `runner`: "ray" (Ray tasks, embedded or the cluster at `address`; at most `workers` at once, default as
    many as the CPUs allow), "local" (`workers` processes here, default 1: in this process), or any
    `scaling.ladder.TrialRunner`. `threads`: torch threads per trial.
    """
    return run_plan(build_plan(run_dir, config or ConfirmConfig()), runner=runner, workers=workers, threads=threads,
                    address=address, log=log)


def confirm_block(run_dir: str | Path, *, address: str | None = None,
                  log: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """The `confirm:` block of the search in `run_dir` (its space.yaml), run once that search has finished and
    released its folder; None when the space has no block. `search_then_confirm` (`composer search`) runs it
    after the search; its trials use the search's CPUs per trial."""
    from composer.runs import RunDir
    from composer.search.space_parse import load_space

    run = RunDir(run_dir)
    space = load_space(str(run.path("space.yaml")))
    if "confirm" not in space.data:
        return None
    threads = max(1, int(float(space.resources["cpus_per_trial"])))
    try:
        result = confirm(run.root, parse_confirm(space.data["confirm"]), address=address, threads=threads, log=log)
    except UserError as e:
        raise UserError(f"the search finished (results in {run.root}); its confirmation did not start: {e}") from None
    if log is not None:
        log(format_results(result))
    return result


def search_then_confirm(space: Any, **options: Any) -> Any:
    """What `composer search` runs: `composer.search.search(space, **options)`, then the space's `confirm:` block
    (`confirm_block`), whose result is the SearchResult's `confirm`. An interrupted search raises
    SearchInterrupted before any confirmation."""
    from composer.search import search

    result = search(space, **options)
    result.confirm = confirm_block(result.run_dir, address=options.get("address"),
                                   log=print if options.get("progress") is None else None)
    return result


def run_plan(plan: ConfirmPlan, *, runner: str | TrialRunner = "ray", workers: int | None = None,
             threads: int | None = None, address: str | None = None,
             log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train a plan's missing trials, analyse them all and write `confirm.json` (see `confirm`)."""
    log = log or (lambda message: None)
    with plan.run.lock():                 # one driver per run folder (a search, or a confirmation of it)
        check_resume(plan)
        trained = make_runner(runner, workers, threads, address, log)
        rows = finished_rows(plan)
        for _ in range(MAX_ROUNDS):
            needed = schedule(plan, rows).trials
            check_rows(plan, needed, rows)
            if all(t.key in {r["key"] for r in rows} for t in needed):
                break
            rows = run_ladder(plan.ladder(), plan.run.root, trained, log, trials=needed, report=False)["trials"]
        result = {**plan.describe(), **analyse(plan, rows), "trials_file": str(plan.out_dir / "ladder.json")}
        write_json(plan.run.path(CONFIRM_FILE), result)
    return result


def finished_rows(plan: ConfirmPlan) -> list[dict[str, Any]]:
    path = plan.out_dir / "ladder.json"
    return json.loads(path.read_text(encoding="utf-8")).get("trials", []) if path.is_file() else []


def make_runner(runner: str | TrialRunner, workers: int | None, threads: int | None, address: str | None,
                log: Callable[[str], None]) -> TrialRunner:
    if not isinstance(runner, str):
        return runner
    if runner == "ray":
        from scaling.ray_runner import RayRunner

        return RayRunner(address, threads=threads or 1, log=log, max_concurrent=workers)
    if runner == "local":
        return LocalRunner(workers or 1, threads, log=log)
    raise UserError(f"unknown runner {runner!r}; expected ray or local", path="runner")


def _normal(value: Any) -> Any:
    """As it reads back from the trials file."""
    return json.loads(json.dumps(value, default=float))


def _trained_with(train: dict[str, Any]) -> Any:
    """A ladder file's `train` settings as the ones changed from the defaults (files written before the ladder
    held a TrainConfig list the settings given, defaults included); unreadable ones as they are."""
    try:
        return TrainConfig.from_dict(train).changed()
    except UserError:
        return train


def check_resume(plan: ConfirmPlan) -> None:
    """Refuse to mix finished trials trained differently from this plan (see the module docstring)."""
    path = plan.out_dir / "ladder.json"
    if not path.is_file():
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        before = data.get("ladder", {})
    except (ValueError, UnicodeDecodeError, AttributeError) as e:
        raise UserError(f"{path} is damaged ({type(e).__name__}: {e}); move it away to start afresh") from None
    start_over = (f"move {plan.out_dir} (and {plan.run.path(CONFIRM_FILE)}) away to confirm with these settings, "
                  "or rerun with the earlier ones")
    for key, now in (("task", plan.task.flat()), ("train", plan.ladder().train.changed())):
        then = _trained_with(before[key]) if key == "train" and isinstance(before.get(key), dict) else before.get(key)
        if key in before and _normal(then) != _normal(now):
            raise UserError(f"{path} holds trials with another {key} ({json.dumps(before[key])}); {start_over}")


def check_rows(plan: ConfirmPlan, trials: list[Trial], rows: list[dict[str, Any]]) -> None:
    """Refuse finished trials with the key of a planned one that were trained on other tokens or another spec."""
    planned = {t.key: t for t in trials}
    for row in rows:
        trial = planned.get(row.get("key"))
        if trial is None:
            continue
        if row.get("tokens") != trial.tokens or _normal(row.get("spec")) != _normal(trial.spec.to_dict()):
            raise UserError(f"{plan.out_dir / 'ladder.json'}: trial {trial.arch} at {trial.size} seed {trial.seed} "
                            f"lr {trial.lr:g} was trained "
                            f"{'on other tokens' if row.get('tokens') != trial.tokens else 'with another spec'}; "
                            f"move {plan.out_dir} (and {plan.run.path(CONFIRM_FILE)}) away to confirm with these "
                            "settings, or rerun with the earlier ones")
