"""The budgeted candidate trainer: train a spec on a task, report quality and cost, stop when told to.

    from composer.train import Budget, train
    result = train(spec, "mqar", Budget(steps=500), lr=1e-3, callback=lambda m: m["accuracy"] > 0.1 or None)
    result.status, result.metrics["accuracy"], result.metrics["tokens_per_s"]

`callback(metrics)` is called after every evaluation; returning `False` (or raising `StopTraining`) stops the
run with status "stopped" (an early-stopping scheduler prunes this way). NaN/inf losses or gradients end the
run with status "diverged", never an exception. With `out_dir`, every evaluation appends to
`metrics.jsonl` and checkpoints are written; a later call with the same `out_dir` resumes from the checkpoint
and reaches the same weights as an uninterrupted run. `lrs=[...]` sweeps learning rates and keeps the best
run; a `TaskSuite` (the `mad` suite) trains one model per member and reports each accuracy and the mean.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from composer.costs import model_cost
from composer.errors import UserError
from composer.model import build_model
from composer.spec import ArchSpec
from composer.spec_parse import load_spec
from composer.tasks import Task, TaskSuite, get_task
from composer.training.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from composer.training.schedule import Budget, lr_factor

__all__ = ["Budget", "StopTraining", "TrainResult", "fit_spec", "make_optimizer", "train", "train_suite",
           "train_sweep"]


class StopTraining(Exception):
    """Raise from a callback (or return False) to stop a run early with status "stopped"."""


@dataclass
class TrainResult:
    status: str                                   # completed | diverged | stopped
    metrics: dict[str, Any]                       # the last evaluation's metrics and the model's costs
    history: list[dict[str, Any]] = field(default_factory=list)
    step: int = 0
    diverged_step: int | None = None
    out_dir: str | None = None
    sweep: list[dict[str, Any]] = field(default_factory=list)    # one row per learning rate, when swept
    members: dict[str, dict[str, Any]] = field(default_factory=dict)  # per suite member, for a suite

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def fit_spec(spec: ArchSpec | dict | str, task: Task) -> ArchSpec:
    """The spec with the task's vocabulary and a context long enough for it."""
    spec = load_spec(spec)
    return dataclasses.replace(spec, vocab_size=task.vocab_size, max_seq_len=max(spec.max_seq_len, task.seq_len))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                   betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: not on norms, biases or embeddings (nor a head tied to them)."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if p.ndim < 2 or id(p) in embedding_ids else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=False)


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    scale = 1 if sys.platform == "darwin" else 1024    # ru_maxrss is KiB on Linux, bytes on macOS
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


def _resolve_task(task: Task | TaskSuite | str, task_params: dict[str, Any] | None) -> Task | TaskSuite:
    if isinstance(task, str):
        return get_task(task, **(task_params or {}))
    if task_params:
        raise UserError("task_params only apply when the task is given by name", path="task_params")
    return task


def train(spec: ArchSpec | dict | str, task: Task | TaskSuite | str, budget: Budget | int | dict, *,
          lr: float = 1e-3, lrs: list[float] | None = None, seed: int = 0, batch_size: int = 32,
          weight_decay: float = 0.1, grad_clip: float = 1.0, schedule: str = "cosine", warmup_steps: int = 50,
          min_lr_ratio: float = 0.1, eval_every: int | None = None, eval_batch_size: int = 128,
          callback: Callable[[dict[str, Any]], Any] | None = None, out_dir: str | os.PathLike | None = None,
          checkpoint_every: int | None = None, resume: bool = True, threads: int | None = None,
          compile: bool = False, device: str | torch.device | None = None,
          on_step: Callable[[dict[str, Any]], None] | None = None, log_every: int = 10,
          task_params: dict[str, Any] | None = None) -> TrainResult:
    """Train `spec` on `task` within `budget`; see the module docstring. Returns a TrainResult."""
    task = _resolve_task(task, task_params)
    kwargs = dict(seed=seed, batch_size=batch_size, weight_decay=weight_decay, grad_clip=grad_clip,
                  schedule=schedule, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio, eval_every=eval_every,
                  eval_batch_size=eval_batch_size, callback=callback, checkpoint_every=checkpoint_every,
                  resume=resume, threads=threads, compile=compile, device=device, on_step=on_step,
                  log_every=log_every)
    previous_threads = torch.get_num_threads()
    try:
        if isinstance(task, TaskSuite):
            return train_suite(spec, task, budget, lr=lr, lrs=lrs, out_dir=out_dir, **kwargs)
        if lrs:
            return train_sweep(spec, task, budget, lrs=lrs, out_dir=out_dir, **kwargs)
        return _train_one(spec, task, Budget.of(budget), lr=lr, out_dir=out_dir, **kwargs)
    finally:
        torch.set_num_threads(previous_threads)   # `threads` applies to this call only


def _train_one(spec: ArchSpec | dict | str, task: Task, budget: Budget, *, lr: float, seed: int, batch_size: int,
               weight_decay: float, grad_clip: float, schedule: str, warmup_steps: int, min_lr_ratio: float,
               eval_every: int | None, eval_batch_size: int, callback: Callable | None,
               out_dir: str | os.PathLike | None, checkpoint_every: int | None, resume: bool,
               threads: int | None, compile: bool, device: str | torch.device | None,
               on_step: Callable | None, log_every: int) -> TrainResult:
    if threads:
        torch.set_num_threads(threads)
    lr_factor(warmup_steps, 0.0, 0, schedule)   # reject an unknown schedule before any work
    if not (isinstance(batch_size, int) and batch_size > 0):
        raise UserError(f"expected a positive batch size, got {batch_size!r}", path="batch_size")
    spec = fit_spec(spec, task)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    model = build_model(spec).to(device)
    model.train()
    optimizer = make_optimizer(model, lr, weight_decay)
    forward = torch.compile(model) if compile else model
    costs = model_cost(spec, seq_len=task.seq_len)
    tokens_per_step = batch_size * task.seq_len
    total_steps = budget.total_steps(tokens_per_step)
    if eval_every is None:
        eval_every = max(1, total_steps // 10) if total_steps else 200
    warmup = min(warmup_steps, max(1, total_steps // 10)) if total_steps else warmup_steps
    static = {"lr": lr, "seed": seed, "batch_size": batch_size, "seq_len": task.seq_len, "task": task.name,
              "params": costs.params, "non_embedding_params": costs.non_embedding_params,
              "active_params": costs.active_params, "flops_per_token": costs.flops_per_token,
              "train_flops_per_token": costs.train_flops_per_token, "state_bytes": costs.state_bytes}

    step, train_time, history, status, diverged_step = 0, 0.0, [], "completed", None
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        if resume and has_checkpoint(out_dir):
            loop = load_checkpoint(out_dir, model, optimizer)
            step, train_time, history = loop["step"], loop["train_time"], loop["history"]
        _rewrite_metrics(out_dir, history)

    def evaluate(train_loss: float) -> dict[str, Any]:
        task_metrics = task.evaluate(model, eval_batch_size)
        metrics = {("val_loss" if k == "loss" else k): v for k, v in task_metrics.items()}
        metrics.update(static, step=step, tokens=step * tokens_per_step, train_loss=train_loss,
                       tokens_per_s=(step * tokens_per_step / train_time) if train_time > 0 else 0.0,
                       train_time_s=train_time, peak_memory_bytes=peak_memory_bytes(device))
        history.append(metrics)
        if out_dir is not None:
            with open(Path(out_dir) / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
        return metrics

    def checkpoint() -> None:
        if out_dir is not None:
            save_checkpoint(out_dir, model, optimizer, {"step": step, "train_time": train_time, "history": history})

    metrics: dict[str, Any] = history[-1] if history else {}
    train_loss = float("nan")
    done = total_steps is not None and step >= total_steps
    while not done:
        start = time.perf_counter()
        factor = lr_factor(step, budget.progress(step, train_time, tokens_per_step), warmup, schedule,
                           min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr * factor
        inputs, targets = task.train_batch(step, batch_size)
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = forward(inputs)
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.reshape(-1), ignore_index=-100)
            loss = loss + model.aux_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        train_loss = loss.item()
        if not (math.isfinite(train_loss) and math.isfinite(grad_norm.item())):
            status, diverged_step = "diverged", step
            break
        optimizer.step()
        step += 1
        train_time += time.perf_counter() - start
        if on_step is not None and (step % log_every == 0 or step == 1):
            on_step(_progress(step, train_loss, lr * factor, train_time, tokens_per_step, budget))
        done = budget.progress(step, train_time, tokens_per_step) >= 1.0
        if step % eval_every == 0 or done:
            metrics = evaluate(train_loss)
            if _should_stop(callback, metrics):
                status = "stopped"
                break
            if checkpoint_every and step % checkpoint_every == 0 and not done:
                checkpoint()

    if status == "diverged":
        metrics = {**(history[-1] if history else static), "diverged_step": diverged_step}
    elif not metrics:
        metrics = evaluate(train_loss)
    if status != "diverged":
        checkpoint()
    metrics = {**metrics, "status": status}
    return TrainResult(status, metrics, history, step, diverged_step, None if out_dir is None else str(out_dir))


def _should_stop(callback: Callable | None, metrics: dict[str, Any]) -> bool:
    if callback is None:
        return False
    try:
        return callback(dict(metrics)) is False
    except StopTraining:
        return True


def _progress(step: int, loss: float, lr: float, elapsed: float, tokens_per_step: int,
              budget: Budget) -> dict[str, Any]:
    fraction = budget.progress(step, elapsed, tokens_per_step)
    eta = elapsed * (1 - fraction) / fraction if fraction > 0 else float("nan")
    return {"step": step, "loss": loss, "lr": lr, "tokens": step * tokens_per_step,
            "tokens_per_s": step * tokens_per_step / elapsed if elapsed > 0 else 0.0, "elapsed_s": elapsed,
            "eta_s": eta, "fraction": fraction}


def _rewrite_metrics(out_dir: str | os.PathLike, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl holds exactly the evaluations up to the checkpoint we continue from."""
    path = Path(out_dir) / "metrics.jsonl"
    path.write_text("".join(json.dumps(m) + "\n" for m in history))


def _score(task: Task, result: TrainResult) -> float:
    """Higher is better: accuracy, or minus the validation loss for tasks scored by loss."""
    if result.status == "diverged":
        return float("-inf")
    value = result.metrics.get("accuracy" if task.primary_metric == "accuracy" else "val_loss", float("nan"))
    value = value if task.primary_metric == "accuracy" else -value
    return value if math.isfinite(value) else float("-inf")


def train_sweep(spec: ArchSpec | dict | str, task: Task, budget: Budget | int | dict, *, lrs: list[float],
                out_dir: str | os.PathLike | None = None, **kwargs: Any) -> TrainResult:
    """One run per learning rate (MAD protocol: 1e-4, 5e-4, 1e-3); returns the best, with every run in `sweep`."""
    if not lrs:
        raise UserError("expected at least one learning rate", path="lrs")
    best, best_score, rows = None, float("-inf"), []
    for lr in lrs:
        run_dir = None if out_dir is None else Path(out_dir) / f"lr={lr:g}"
        result = _train_one(spec, task, Budget.of(budget), lr=lr, out_dir=run_dir, **kwargs)
        score = _score(task, result)
        rows.append({"lr": lr, "status": result.status, "val_loss": result.metrics.get("val_loss"),
                     "accuracy": result.metrics.get("accuracy"), "out_dir": result.out_dir})
        if best is None or score > best_score:
            best, best_score = result, score
    assert best is not None
    best.sweep = rows
    return best


def train_suite(spec: ArchSpec | dict | str, suite: TaskSuite, budget: Budget | int | dict, *, lr: float = 1e-3,
                lrs: list[float] | None = None, out_dir: str | os.PathLike | None = None,
                callback: Callable | None = None, **kwargs: Any) -> TrainResult:
    """One model per suite member; metrics hold each member's and each task's accuracy and the overall mean.

    `callback` gets the suite's progress after each member: the running per-task and mean accuracy over the
    members done so far, `member`, `member_accuracy`, `members_done` and `members_total`. Members are
    evaluated once, at the end of their budget, unless `eval_every` (or `checkpoint_every`, which saves at
    evaluations) is given: nothing reads a member's intermediate evaluations, which cost more than the
    training itself on short MAD budgets.
    """
    if kwargs.get("eval_every") is None and not kwargs.get("checkpoint_every"):
        kwargs["eval_every"] = 1 << 62
    members: dict[str, dict[str, Any]] = {}
    statuses = []
    for label, task in suite.members:
        run_dir = None if out_dir is None else Path(out_dir) / label.replace("/", "__")
        if lrs:
            result = train_sweep(spec, task, budget, lrs=lrs, out_dir=run_dir, callback=None, **kwargs)
        else:
            result = _train_one(spec, task, Budget.of(budget), lr=lr, out_dir=run_dir, callback=None, **kwargs)
        statuses.append(result.status)
        accuracy = result.metrics.get("accuracy", float("nan")) if result.status != "diverged" else 0.0
        members[label] = {"task": task.name, "status": result.status, "accuracy": accuracy,
                          "val_loss": result.metrics.get("val_loss"), "lr": result.metrics.get("lr"),
                          "steps": result.step, "train_time_s": result.metrics.get("train_time_s"),
                          "tokens_per_s": result.metrics.get("tokens_per_s")}
        progress = {**_suite_metrics(suite, members), "member": label, "member_accuracy": members[label]["accuracy"],
                    "members_done": len(members), "members_total": len(suite.members)}
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
