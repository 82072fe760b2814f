"""Evaluations: the task's metrics plus the run's progress, speed, memory and costs, kept in the run's history
and appended to `<out_dir>/metrics.jsonl`."""

from __future__ import annotations

import os
from typing import Any

from composer.training.checkpoint import append_metrics
from composer.training.runtime import peak_memory_bytes
from composer.training.setup import TrainState


def evaluate(state: TrainState, train_loss: float, eval_batch_size: int,
             out_dir: str | os.PathLike | None) -> dict[str, Any]:
    """Evaluate the model now; the metrics (the task's `loss` named `val_loss`) are recorded and returned."""
    task_metrics = state.task.evaluate(state.model, eval_batch_size)
    metrics = {("val_loss" if k == "loss" else k): v for k, v in task_metrics.items()}
    tokens = state.step * state.tokens_per_step
    metrics.update(state.static, step=state.step, tokens=tokens, train_loss=train_loss,
                   tokens_per_s=tokens / state.train_time if state.train_time > 0 else 0.0,
                   train_time_s=state.train_time, peak_memory_bytes=peak_memory_bytes(state.device))
    state.history.append(metrics)
    if out_dir is not None:
        append_metrics(out_dir, metrics)
    return metrics


def progress(state: TrainState, loss: float, lr: float) -> dict[str, Any]:
    """The progress line's numbers after a step (what `train(on_step=...)` receives)."""
    fraction, elapsed, tokens = state.progress(), state.train_time, state.step * state.tokens_per_step
    eta = elapsed * (1 - fraction) / fraction if fraction > 0 else float("nan")
    return {"step": state.step, "loss": loss, "lr": lr, "tokens": tokens,
            "tokens_per_s": tokens / elapsed if elapsed > 0 else 0.0, "elapsed_s": elapsed, "eta_s": eta,
            "fraction": fraction}


def evaluate_splits(state: TrainState, splits: tuple[str, ...], eval_batch_size: int) -> dict[str, Any]:
    """The final model's metrics on other held-out splits of the task, each prefixed: `test_loss`, ..."""
    return {f"{split}_{key}": value for split in splits
            for key, value in state.task.evaluate_split(state.model, split, eval_batch_size).items()}
