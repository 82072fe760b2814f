"""What runs inside one Ray Tune trial: train the candidate (or reuse an identical one's result) and report
every evaluation to Tune.

Each report holds the trainer's metrics plus `objective_<i>` (the objectives, with a worst-case stand-in when
there is no value), `evaluation` (ASHA's time axis) and `final` (True only for the full-budget result; a
trial that ends without a final report was stopped early, i.e. pruned). A candidate that is not a valid
architecture or breaks a constraint reports once, at evaluation 0, with `status` and `reason`, and never
trains; so does one whose estimated training memory exceeds what the trial's machine has (status `constraint`,
checked by the trainer before it builds anything). Finished results are cached by `cache_key` so a duplicate
candidate does not train again. The candidate's `record` (its size match, the consensus flag) goes into every
report and its result.json, never into the cache (a duplicate has its own).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from composer.atomic import write_json
from composer.provenance import provenance

WORST = 1e30


def cache_key(arch_id: str, train: dict[str, Any], task: dict[str, Any], seed: int, repeats: int) -> str:
    data = json.dumps({"arch": arch_id, "train": train, "task": task, "seed": seed, "repeats": repeats},
                      sort_keys=True, default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:20]


def objectives(metrics: dict[str, Any], names: list[str], modes: list[str]) -> dict[str, float]:
    out = {}
    for i, (name, mode) in enumerate(zip(names, modes)):
        value = metrics.get(name)
        ok = isinstance(value, (int, float)) and math.isfinite(value) and metrics.get("status") != "diverged"
        out[f"objective_{i}"] = float(value) if ok else (WORST if mode == "min" else -WORST)
    return out


def run_trial(config: dict[str, Any], context: dict[str, Any]) -> None:
    """The Tune function trainable; `config["meta"]` is the candidate built by the define-by-run function."""
    from ray import tune

    from composer.training.memory import MemoryLimitError

    meta = config["meta"]
    names, modes = context["objectives"], context["modes"]
    trial_dir = Path(context["run_dir"]) / "trials" / str(meta["trial"])
    trial_dir.mkdir(parents=True, exist_ok=True)
    record = meta.get("record") or {}
    base = {"trial": meta["trial"], "arch_id": meta.get("arch_id"), "stripe": meta.get("stripe"),
            **meta.get("costs", {}), **record}

    def report(metrics: dict[str, Any], evaluation: int, final: bool) -> None:
        tune.report({**base, **metrics, **objectives({**base, **metrics}, names, modes),
                     "evaluation": evaluation, "final": final})

    if meta.get("reason"):
        result = {**base, "status": meta["status"], "reason": meta["reason"]}
        write_json(trial_dir / "result.json", {**result, "provenance": provenance()})
        report(result, 0, True)
        return
    cache = Path(context["run_dir"]) / "cache" / f"{meta['cache_key']}.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        result = {**cached["result"], "reused": True, "reused_from": cached["result"].get("trial"), **record}
        write_json(trial_dir / "result.json", {**result, "provenance": provenance()})
        report(result, len(cached["history"]), True)
        return

    try:
        result, history = train_candidate(meta, context, trial_dir, report)
    except MemoryLimitError as e:   # refused before anything was built: a constraint of this machine, not a failure
        result = {**base, "status": "constraint", "reason": e.message}
        write_json(trial_dir / "result.json", {**result, "provenance": provenance()})
        report(result, 0, True)
        return
    except Exception as e:       # recorded for the leaderboard; Tune retries the trial, then marks it failed
        (trial_dir / "error.txt").write_text(f"{type(e).__name__}: {e}\n")
        raise
    write_json(trial_dir / "result.json", {**result, **record, "provenance": provenance()})
    if result["status"] == "completed":
        write_json(cache, {"result": result, "history": history})
    report(result, max(1, len(history)), True)


def placement(context: dict[str, Any], device: str | None) -> dict[str, Any]:
    """Where a trial trains: on the GPUs `resources.gpus_per_trial` gives it (Tune makes them its visible CUDA
    devices), else on the CPU, even on a machine with GPUs (a trial never takes one it was not given); the
    trial's own `train.device` when it runs in one process. With `resources.workers_per_trial`, on that many
    Ray Train workers, each on its share of the trial's CPUs (`threads`) and GPUs."""
    workers = context.get("workers", 1)
    gpus = context.get("gpus_per_worker") or 0
    gpu = "cuda" if gpus else "cpu"
    if workers == 1:
        return {"device": device or gpu, **({"memory_share": gpus} if 0 < gpus < 1 else {})}
    return {"workers": workers, "device": gpu}


def train_candidate(meta: dict[str, Any], context: dict[str, Any], trial_dir: Path,
                    report: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train every repeat (seed); the first reports each evaluation, the result averages the repeats. A
    learning-rate x weight-decay sweep (`lrs`, `weight_decays`: the MAD protocol) keeps each candidate's best run,
    lists every run under `sweep`, and reports only its final result (its runs' evaluations are not one time
    axis for a scheduler)."""
    from composer.trainer import TrainConfig, train

    config = TrainConfig.from_dict(meta["train"])
    threads = config.runtime.threads or context.get("threads")
    task = context["task"]
    total_steps = config.budget.total_steps(config.runtime.batch_size * task["seq_len"])
    counter = iter(range(1, 1 << 30))

    def callback(metrics: dict[str, Any]) -> None:
        # the last evaluation of a full run is reported once, as the final result (after the repeats); a
        # suite (MAD) reports after each member instead, with the running mean accuracy
        if "members_done" in metrics:
            last = metrics["members_done"] == metrics["members_total"]
        else:
            last = total_steps is not None and metrics["step"] >= total_steps
        if not last:
            report(metrics, next(counter), False)

    sweep = bool(config.optimizer.lrs or config.optimizer.weight_decays)
    runs = []
    for r in range(context["repeats"]):
        out_dir = trial_dir if r == 0 else trial_dir / f"seed{r}"
        run_config = config.with_settings(seed=context["seed"] + r, threads=threads, resume=False,
                                          **placement(context, config.runtime.device))
        runs.append(train(meta["spec"], task["name"], config=run_config,
                          callback=callback if r == 0 and not sweep else None, out_dir=out_dir,
                          task_params=task.get("params")))
    first = runs[0]
    metrics = dict(first.metrics)
    if len(runs) > 1:
        for key in first.metrics:
            values = [run.metrics.get(key) for run in runs]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                metrics[key] = sum(values) / len(values)
    status = "diverged" if any(run.status == "diverged" for run in runs) else first.status
    total = first.metrics.get("step", first.step)
    result = {**metrics, "trial": meta["trial"], "arch_id": meta["arch_id"], "stripe": meta["stripe"],
              **meta.get("costs", {}), "status": status, "repeats": len(runs), "evaluations": len(first.history),
              "budget_fraction": 1.0 if status == "completed" else None, "step": total}
    if status == "diverged":
        result["reason"] = f"diverged at step {first.diverged_step}"
    if first.sweep:
        kept = next((row for row in first.sweep if row["out_dir"] == first.out_dir), None)
        result.update(sweep=[{**row, "seed": context["seed"] + r} for r, run in enumerate(runs) for row in run.sweep],
                      **({"lr": kept["lr"], "weight_decay": kept["weight_decay"]} if kept else {}))
    return result, first.history
