"""The Tune callback that keeps the leaderboard (`runs/<name>/leaderboard.csv`) and shows live progress (elapsed
time, an ETA from finished trials' durations, the running trials' steps), and Tune's own file loggers.

A progress line is shown when a trial starts and when one finishes, so the running count it shows is the trials
running until the next line: a line shown only at a finish says one fewer than run from the next trial's start
on (the trial that replaces the finished one starts just after it)."""

from __future__ import annotations

import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from ray.tune import Callback

from composer.atomic import write_atomic
from composer.runs import LEADERBOARD_COLUMNS, RunDir
from composer.search.aggregate import searched
from composer.search.optuna_search import trial_status

ROW_KEYS = tuple(k for k in LEADERBOARD_COLUMNS if k not in ("trial", "params_json"))


class Recorder(Callback):
    """One leaderboard row per trial (keyed by Optuna trial number), rewritten atomically on every finish."""

    def __init__(self, run: RunDir, space: Any, rows: list[dict[str, Any]],
                 progress: Callable[[dict[str, Any]], None] | None = None, show: bool = True):
        self.run, self.space, self.progress, self.show = run, space, progress, show
        self.metrics = space.objective_names()
        self.by_trial: dict[int, dict[str, Any]] = {int(r["trial"]): r for r in rows}
        self.started = time.monotonic()
        self.started_at: dict[int, float] = {}      # trial -> when it started (this session)
        self.durations: list[float] = []             # seconds of each trial finished in this session
        self.steps: dict[int, int] = {}              # running trial -> its last reported training step

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [r for _, r in sorted(self.by_trial.items())]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._started(trial)
        self._show("started", int(trial.config["meta"]["trial"]))

    def _started(self, trial: Any) -> None:
        meta = trial.config["meta"]
        number = int(meta["trial"])
        self.started_at.setdefault(number, time.monotonic())
        if meta.get("spec"):
            write_atomic(self.run.trial_dir(number) / "spec.yaml", yaml.safe_dump(meta["spec"], sort_keys=False))
        self.by_trial[number] = {"trial": number, "status": "running", "arch_id": meta.get("arch_id"),
                                 "stripe": meta.get("stripe"), **meta.get("costs", {}),
                                 "lr": meta["train"].get("lr"), "seed": self.space.seed,
                                 **{k: v for k, v in (meta.get("record") or {}).items() if k in ROW_KEYS},
                                 "params_json": json.dumps(meta["params"], sort_keys=True, default=str)}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        row = self._row(trial)
        row.update({k: result[k] for k in (*ROW_KEYS, *self.metrics) if k in result and k != "status"})
        row["evaluations"] = result.get("evaluation")
        if isinstance(result.get("step"), int):
            self.steps[int(row["trial"])] = result["step"]

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        row = self._row(trial)
        row.update({k: result[k] for k in (*ROW_KEYS, *self.metrics) if k in result})
        row["status"] = trial_status(result, error=False)
        if row["status"] == "pruned":
            row["reason"] = f"stopped early by the scheduler after {result.get('evaluation')} evaluations"
        self._finished(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        row = self._row(trial)
        row["status"] = "failed"
        row["reason"] = error_reason(self.run.trial_dir(row["trial"]), trial)
        self._finished(trial)

    def _row(self, trial: Any) -> dict[str, Any]:
        number = int(trial.config["meta"]["trial"])
        if number not in self.by_trial:
            self._started(trial)
        return self.by_trial[number]

    def _finished(self, trial: Any) -> None:
        number = int(trial.config["meta"]["trial"])
        if number in self.started_at:
            self.durations.append(time.monotonic() - self.started_at.pop(number))
        self.steps.pop(number, None)
        self.run.write_leaderboard(self.rows, self.metrics)
        self._show("finished", number)

    def _show(self, event: str, trial: int) -> None:
        state = {**self.state(), "event": event, "trial": trial}
        if self.progress is not None:
            self.progress(state)
        if self.show:
            print(format_progress(state), file=sys.stderr, flush=True)

    def state(self) -> dict[str, Any]:
        """The search's progress: its own trials counted against `space.trials`, the best of them, and the
        consensus (trained after them) on its own."""
        own = searched(list(self.by_trial.values()))
        counts = dict(Counter(row["status"] for row in own))
        metric, mode = self.metrics[0], self.space.modes()[0]
        done = [r for r in own if r["status"] == "completed" and r.get(metric) is not None]
        best = (min if mode == "min" else max)(done, key=lambda r: r[metric]) if done else None
        finished = sum(v for k, v in counts.items() if k != "running")
        running = counts.get("running", 0)
        consensus = [r for r in self.by_trial.values() if r.get("consensus")]
        return {"total": max(self.space.trials, finished + running), "finished": finished, "running": running,
                "counts": counts, "metric": metric, "best": best, "consensus": consensus[-1] if consensus else None,
                "elapsed_s": time.monotonic() - self.started,
                "eta_s": eta(self.durations, self.space.trials - finished, running),
                "steps": {n: self.steps[n] for n in sorted(self.steps)}}


def eta(durations: list[float], left: int, concurrency: int) -> float | None:
    """Seconds until the search ends: the mean finished trial's duration x the rounds of trials left (`left`
    trials, `concurrency` at once); None before any trial has finished."""
    if not durations:
        return None
    if left <= 0:
        return 0.0
    return sum(durations) / len(durations) * math.ceil(left / max(1, concurrency))


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def error_reason(trial_dir: Path, trial: Any) -> str:
    """The exception that failed a trial: the trial's error.txt, else the last line of Tune's error trace."""
    path = trial_dir / "error.txt"
    text = path.read_text() if path.is_file() else str(trial.get_error() or "error")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "error"


def format_progress(state: dict[str, Any]) -> str:
    counts = state["counts"]
    parts = [f"{k} {v}" for k, v in sorted(counts.items()) if k != "running"]
    line = f"[{state['finished']}/{state['total']}] {', '.join(parts)}; running {state['running']}"
    if state.get("steps"):
        line += " (" + ", ".join(f"trial {n} step {s}" for n, s in state["steps"].items()) + ")"
    if "elapsed_s" in state:
        line += f"; elapsed {clock(state['elapsed_s'])}"
        line += f", ETA {clock(state['eta_s'])}" if state.get("eta_s") is not None else ""
    best = state["best"]
    if best is not None:
        line += f"; best {state['metric']} {best[state['metric']]:.4g} (trial {best['trial']}: {best['stripe']})"
    consensus = state.get("consensus")
    if consensus is not None:
        value = consensus.get(state["metric"])
        scored = f"{value:.4g}" if consensus["status"] == "completed" and isinstance(value, (int, float)) else \
            consensus["status"]
        line += f"; consensus (trial {consensus['trial']}: {consensus['stripe']}) {scored}"
    return line


def tune_loggers(names: list[str] | None, run_root: Path, project: str) -> list[Any]:
    """Ray Tune's own logger callbacks for a space's `logging:`: each backend's `ray_callback` (composer/tracking).
    Each trial's result.json is always written; without `logging:`, the backends a search logs by default
    (csv, and TensorBoard when tensorboardX is installed)."""
    from ray.tune.logger import JsonLoggerCallback

    from composer.tracking import backends, search_defaults

    table = backends()
    return [JsonLoggerCallback(), *(table[name].ray_callback(run_root, project)
                                    for name in (search_defaults() if names is None else names))]
