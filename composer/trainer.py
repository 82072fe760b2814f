"""The budgeted candidate trainer: train a spec on a task, report quality and cost, stop when told to.

    from composer.trainer import Budget, train
    result = train(spec, "mqar", Budget(steps=500), lr=1e-3, callback=lambda m: m["accuracy"] > 0.1 or None)
    result = train(spec, "mqar", config=TrainConfig.from_dict({"steps": 500, "warmup_steps": 20}))
    result.status, result.metrics["accuracy"], result.metrics["tokens_per_s"]

Settings come from a `TrainConfig` (composer/training/config.py lists every one, with its help text), a dict
of them (flat or by section), or flat keyword arguments (`lr=`, `warmup_steps=`), applied in that order; a
`budget` argument replaces the config's budget. `callback(metrics)` is called after every evaluation;
returning `False` (or raising `StopTraining`) stops the run with status "stopped" (an early-stopping scheduler
prunes this way). NaN/inf losses or gradients end the run with status "diverged", never an exception. With
`out_dir`, every evaluation appends to `metrics.jsonl`, the fitted spec is written to `spec.yaml`, and checkpoints
are written every `checkpoint_every` steps, every `checkpoint_seconds` and at the end; a later call with the same
`out_dir` resumes from the checkpoint (after checking it belongs to the same run: training/fingerprint.py) and
reaches the same weights and metrics.jsonl as an uninterrupted run; when that run already reached the budget, the
call returns it and writes nothing (`completed_run`), and a larger budget continues it. Inside `stop_on_signals()`
(the CLI), SIGINT or SIGTERM ends the run after its current step with a checkpoint and status "interrupted". A run
whose estimated memory exceeds the device's available memory is refused before anything is built
(training/memory.py).

With `final_splits` (e.g. `("test",)`) the final model is also scored on those
held-out splits of the task (`test_loss`, ...): the splits that judge what validation chose.

`lrs=[...]` sweeps learning rates (and `weight_decays=[...]` weight decays: one run per pair) and keeps the best
run; a `TaskSuite` (the `mad` suite) trains one model per member and reports each accuracy and the mean.
`threads` applies to the call only: every entry point restores torch's thread count. With `workers` > 1 one model
trains on that many data-parallel processes on Ray Train (composer/training/ray_train.py), with the same results,
outputs and resume as here.

The run's pieces live in composer/training/: set-up (setup.py), one step (step.py), evaluation (evaluate.py),
checkpoints (checkpoint.py, fingerprint.py), the memory estimate (memory.py), the learning-rate schedule and
budget (schedule.py); signals are composer/interrupt.py's.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from composer.errors import UserError
from composer.interrupt import interrupt_signal
from composer.spec import ArchSpec
from composer.spec_parse import load_spec
from composer.tasks import Task, TaskSuite, get_task
from composer.training.checkpoint import PeriodicCheckpoints, has_checkpoint, read_fingerprint, read_loop_state
from composer.training.config import TrainConfig, eval_interval, train_config
from composer.training.evaluate import evaluate, evaluate_splits, progress
from composer.training.fingerprint import run_fingerprint
from composer.training.runtime import torch_threads
from composer.training.schedule import Budget, lr_factor
from composer.training.setup import fit_spec, make_optimizer, set_up
from composer.training.step import train_step

__all__ = ["Budget", "StopTraining", "TrainConfig", "TrainResult", "completed_run", "fit_spec", "make_optimizer",
           "saved_loop", "train", "train_suite", "train_sweep"]

Callback = Callable[[dict[str, Any]], Any]
PathLike = str | os.PathLike


class StopTraining(Exception):
    """Raise from a callback (or return False) to stop a run early with status "stopped"."""


@dataclass
class TrainResult:
    status: str                                   # completed | diverged | stopped | interrupted
    metrics: dict[str, Any]                       # the last evaluation's metrics and the model's costs
    history: list[dict[str, Any]] = field(default_factory=list)
    step: int = 0
    diverged_step: int | None = None
    out_dir: str | None = None
    sweep: list[dict[str, Any]] = field(default_factory=list)    # one row per learning rate, when swept
    members: dict[str, dict[str, Any]] = field(default_factory=dict)  # per suite member, for a suite

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _resolve_task(task: Task | TaskSuite | str, task_params: dict[str, Any] | None) -> Task | TaskSuite:
    if isinstance(task, str):
        return get_task(task, **(task_params or {}))
    if task_params:
        raise UserError("task_params only apply when the task is given by name", path="task_params")
    return task


def train(spec: ArchSpec | dict | str, task: Task | TaskSuite | str, budget: Budget | int | dict | None = None,
          config: TrainConfig | dict[str, Any] | None = None, *, callback: Callback | None = None,
          out_dir: PathLike | None = None, on_step: Callable[[dict[str, Any]], None] | None = None,
          task_params: dict[str, Any] | None = None, **settings: Any) -> TrainResult:
    """Train `spec` on `task` within `budget`; see the module docstring. Returns a TrainResult."""
    task = _resolve_task(task, task_params)
    config = train_config(config, budget, **settings)
    with torch_threads(config.runtime.threads):
        if isinstance(task, TaskSuite):
            return train_suite(spec, task, config=config, callback=callback, out_dir=out_dir, on_step=on_step)
        if config.optimizer.lrs or config.optimizer.weight_decays:
            return train_sweep(spec, task, config=config, callback=callback, out_dir=out_dir, on_step=on_step)
        return _train_one(spec, task, config, callback, out_dir, on_step)


def train_sweep(spec: ArchSpec | dict | str, task: Task, budget: Budget | int | dict | None = None,
                config: TrainConfig | dict[str, Any] | None = None, *, callback: Callback | None = None,
                out_dir: PathLike | None = None, on_step: Callable | None = None, **settings: Any) -> TrainResult:
    """One run per learning rate in `lrs` x weight decay in `weight_decays` (MAD protocol: lrs 1e-4, 5e-4, 1e-3;
    either list alone sweeps with the other setting fixed); returns the best, with every run in `sweep`."""
    config = train_config(config, budget, **settings)
    opt = config.optimizer
    if not opt.lrs and not opt.weight_decays:
        raise UserError("expected at least one learning rate", path="lrs")
    best, best_score, rows = None, float("-inf"), []
    with torch_threads(config.runtime.threads):
        for lr, wd in [(lr, wd) for lr in opt.lrs or (opt.lr,) for wd in opt.weight_decays or (opt.weight_decay,)]:
            name = f"lr={lr:g}" + (f",wd={wd:g}" if opt.weight_decays else "")
            run_dir = None if out_dir is None else Path(out_dir) / name
            one = config.with_settings(lr=lr, lrs=None, weight_decay=wd, weight_decays=None)
            result = _train_one(spec, task, one, callback, run_dir, on_step)
            score = _score(task, result)
            rows.append({"lr": lr, "weight_decay": wd, "status": result.status,
                         "val_loss": result.metrics.get("val_loss"), "accuracy": result.metrics.get("accuracy"),
                         "out_dir": result.out_dir})
            if result.status == "interrupted":      # the sweep stops with this run (a rerun resumes it)
                result.sweep = rows
                return result
            if best is None or score > best_score:
                best, best_score = result, score
    assert best is not None
    best.sweep = rows
    return best


def completed_run(spec: ArchSpec | dict | str, task: Task | TaskSuite, config: TrainConfig,
                  out_dir: PathLike | None) -> TrainResult | None:
    """The run in `out_dir` when it already reached this call's budget; None when there is nothing complete to
    return (see `saved_loop`, or budget left). Reads the folder, writes nothing: a finished run run again with
    the same settings changes nothing."""
    loop = saved_loop(spec, task, config, out_dir)
    if loop is None or not loop["history"]:
        return None
    tokens_per_step = config.runtime.batch_size * task.seq_len
    if config.budget.progress(loop["step"], loop["train_time"], tokens_per_step) < 1.0:
        return None
    metrics = {**loop["history"][-1], "status": "completed"}
    return TrainResult("completed", metrics, loop["history"], loop["step"], None, str(out_dir))


def saved_loop(spec: ArchSpec | dict | str, task: Task | TaskSuite, config: TrainConfig,
               out_dir: PathLike | None) -> dict[str, Any] | None:
    """The loop state (step, train_time, history) of the checkpoint in `out_dir` that this call would resume
    from; None without one: no folder or checkpoint, `resume` off, a sweep or suite (their runs are in
    sub-folders), or another run's checkpoint (training/fingerprint.py; `train` then says what differs)."""
    if out_dir is None or not config.checkpoint.resume or isinstance(task, TaskSuite) or not has_checkpoint(out_dir):
        return None
    if config.optimizer.lrs or config.optimizer.weight_decays:
        return None
    if read_fingerprint(out_dir) != run_fingerprint(fit_spec(spec, task), task, config):
        return None
    return read_loop_state(out_dir)


def _train_one(spec: ArchSpec | dict | str, task: Task, config: TrainConfig, callback: Callback | None,
               out_dir: PathLike | None, on_step: Callable | None) -> TrainResult:
    for split in config.evaluation.final_splits or ():
        task.check_split(split)
    finished = completed_run(spec, task, config, out_dir)
    if finished is not None:
        return finished
    if config.parallel.workers > 1 or config.parallel.fsdp:     # on Ray Train: composer/training/ray_train.py
        from composer.training.ray_train import train_data_parallel

        outcome = train_data_parallel(spec, task, config, lambda m: _should_stop(callback, m), out_dir, on_step)
        return TrainResult(outcome["status"], {**outcome["metrics"], "status": outcome["status"]},
                           outcome["history"], outcome["step"], outcome["diverged_step"],
                           None if out_dir is None else str(out_dir))
    state = set_up(spec, task, config, out_dir)
    opt, schedule = config.optimizer, config.lr_schedule
    total_steps = state.budget.total_steps(state.tokens_per_step)
    if total_steps is not None:
        task.warn_if_repeated(total_steps * state.tokens_per_step)
    eval_every = eval_interval(config.evaluation.eval_every, total_steps)
    warmup = min(schedule.warmup_steps, max(1, total_steps // 10)) if total_steps else schedule.warmup_steps
    checkpoints = PeriodicCheckpoints(config.checkpoint.checkpoint_every, config.checkpoint.checkpoint_seconds)

    status, diverged_step, train_loss = "completed", None, float("nan")
    metrics: dict[str, Any] = state.history[-1] if state.history else {}
    done = state.progress() >= 1.0
    while not done:
        start = time.perf_counter()
        lr = opt.lr * lr_factor(state.step, state.progress(), warmup, schedule.schedule, schedule.min_lr_ratio,
                                warmup_fraction=schedule.warmup_fraction)
        loss = train_step(state, lr, config.runtime.batch_size, opt.grad_clip)
        if loss is None:
            status, diverged_step = "diverged", state.step
            break
        train_loss = loss
        state.train_time += time.perf_counter() - start
        if on_step is not None and (state.step % config.runtime.log_every == 0 or state.step == 1):
            on_step(progress(state, train_loss, lr))
        done = state.progress() >= 1.0
        if state.step % eval_every == 0 or done:
            metrics = evaluate(state, train_loss, config.evaluation.eval_batch_size, out_dir)
            if _should_stop(callback, metrics):
                status = "stopped"
                break
        if done:
            break
        if interrupt_signal() is not None:      # a signal during this step: save it and stop (composer/interrupt.py)
            status = "interrupted"
            break
        if out_dir is not None and checkpoints.due(state.step):
            state.save(out_dir)
            checkpoints.saved()

    if status == "diverged":
        metrics = {**(state.history[-1] if state.history else state.static), "diverged_step": diverged_step}
    elif status == "interrupted":
        metrics = {**(state.history[-1] if state.history else state.static), "interrupted_step": state.step}
    elif not metrics:
        metrics = evaluate(state, train_loss, config.evaluation.eval_batch_size, out_dir)
    if status in ("completed", "stopped") and config.evaluation.final_splits:
        metrics = {**metrics, **evaluate_splits(state, config.evaluation.final_splits,
                                                config.evaluation.eval_batch_size)}
    if status != "diverged":
        state.save(out_dir)
    return TrainResult(status, {**metrics, "status": status}, state.history, state.step, diverged_step,
                       None if out_dir is None else str(out_dir))


def _should_stop(callback: Callback | None, metrics: dict[str, Any]) -> bool:
    if callback is None:
        return False
    try:
        return callback(dict(metrics)) is False
    except StopTraining:
        return True


def _score(task: Task, result: TrainResult) -> float:
    """Higher is better: accuracy, or minus the validation loss for tasks scored by loss."""
    if result.status == "diverged":
        return float("-inf")
    value = result.metrics.get("accuracy" if task.primary_metric == "accuracy" else "val_loss", float("nan"))
    value = value if task.primary_metric == "accuracy" else -value
    return value if math.isfinite(value) else float("-inf")


def train_suite(spec: ArchSpec | dict | str, suite: TaskSuite, budget: Budget | int | dict | None = None,
                config: TrainConfig | dict[str, Any] | None = None, *, callback: Callback | None = None,
                out_dir: PathLike | None = None, on_step: Callable | None = None, **settings: Any) -> TrainResult:
    """One model per suite member, each at the member's own vocabulary (MAD's protocol: the tasks' vocabularies
    differ, so a suite is the one place a spec's vocab_size does not apply); metrics hold each member's and each
    task's accuracy and the overall mean.

    `callback` gets the suite's progress after each member: the running per-task and mean accuracy over the
    members done so far, `member`, `member_accuracy`, `members_done` and `members_total`. Members are
    evaluated once, at the end of their budget, unless `eval_every` is given: nothing reads a member's
    intermediate evaluations, which cost more than the training itself on short MAD budgets.
    """
    config = train_config(config, budget, **settings)
    if config.evaluation.eval_every is None:
        config = config.with_settings(eval_every=1 << 62)
    members: dict[str, dict[str, Any]] = {}
    statuses = []
    spec = load_spec(spec)
    with torch_threads(config.runtime.threads):
        for label, task in suite.members:
            run_dir = None if out_dir is None else Path(out_dir) / label.replace("/", "__")
            member_spec = spec.replace(vocab_size=task.vocab_size)    # each member's own vocabulary (MAD's protocol)
            if config.optimizer.lrs or config.optimizer.weight_decays:
                result = train_sweep(member_spec, task, config=config, out_dir=run_dir, on_step=on_step)
            else:
                result = _train_one(member_spec, task, config, None, run_dir, on_step)
            statuses.append(result.status)
            if result.status == "interrupted":     # the member's own step and folder: where its checkpoint is
                return TrainResult("interrupted", {**_suite_metrics(suite, members), "status": "interrupted"}, [],
                                   result.step, None, result.out_dir, members=members)
            accuracy = result.metrics.get("accuracy", float("nan")) if result.status != "diverged" else 0.0
            members[label] = {"task": task.name, "status": result.status, "accuracy": accuracy,
                              "val_loss": result.metrics.get("val_loss"), "lr": result.metrics.get("lr"),
                              "steps": result.step, "train_time_s": result.metrics.get("train_time_s"),
                              "tokens_per_s": result.metrics.get("tokens_per_s")}
            progress = {**_suite_metrics(suite, members), "member": label,
                        "member_accuracy": members[label]["accuracy"], "members_done": len(members),
                        "members_total": len(suite.members)}
            if callback is not None and _should_stop(callback, progress):
                return TrainResult("stopped", _suite_metrics(suite, members), [], 0, None,
                                   None if out_dir is None else str(out_dir), members=members)
    status = "completed" if all(s == "completed" for s in statuses) else "diverged"
    return TrainResult(status, _suite_metrics(suite, members), [], 0, None,
                       None if out_dir is None else str(out_dir), members=members)


def _suite_metrics(suite: TaskSuite, members: dict[str, dict[str, Any]]) -> dict[str, Any]:
    metrics: dict[str, Any] = {"suite": suite.name}
    task_scores = []
    for task_name, labels in suite.groups().items():
        values = [members[label]["accuracy"] for label in labels if label in members]
        if values:
            score = sum(values) / len(values)
            metrics[f"accuracy/{task_name.split(':')[-1]}"] = score
            task_scores.append(score)
    metrics["accuracy"] = sum(task_scores) / len(task_scores) if task_scores else float("nan")
    return metrics
