"""What identifies a run, saved with its checkpoint and compared before a resume: the architecture (`arch_id`
of the spec fitted to the task), the task with its settings, and the training settings that shape the run's
trajectory. A resume into a folder whose checkpoint has another fingerprint is a UserError naming what
differs, never a size-mismatch traceback or a silent mix of two runs.

Settings left out (they change neither the weights' shapes nor the trajectory): how often the run evaluates,
logs and checkpoints, whether it resumes, threads, compilation, the device, the memory check and how many
data-parallel workers share it (their losses equal one process's to float rounding: a run may resume with
another number of workers); and the budget (steps, tokens, seconds): a run given a larger budget continues from
its checkpoint (its learning-rate schedule then spans the new budget), one given the same or a smaller budget is
complete (composer/trainer.py).
"""

from __future__ import annotations

import json
import os
from typing import Any

from composer.canonical_form import arch_id
from composer.errors import UserError
from composer.spec import ArchSpec
from composer.tasks import Task
from composer.training.checkpoint import read_fingerprint
from composer.training.config import TrainConfig

NOT_IDENTIFYING = ("lrs", "weight_decays", "eval_every", "eval_batch_size", "checkpoint_every", "checkpoint_seconds",
                   "resume", "threads", "compile", "device", "log_every", "memory_check", "memory_share", "steps",
                   "tokens", "seconds", "workers", "fsdp", "worker_restarts", "storage", "final_splits")


def run_fingerprint(spec: ArchSpec, task: Task, config: TrainConfig) -> dict[str, Any]:
    """The run's identity as plain JSON data (`spec` already fitted to `task`)."""
    settings = {k: v for k, v in config.flat().items() if k not in NOT_IDENTIFYING}
    data = {"arch_id": arch_id(spec), "task": {"name": task.name, "params": task.params()}, "settings": settings}
    return json.loads(json.dumps(data, default=str))


def check_resumable(out_dir: str | os.PathLike, fingerprint: dict[str, Any]) -> None:
    """A UserError when the checkpoint in `out_dir` belongs to another run (one saved without a fingerprint
    passes: loading it checks the shapes)."""
    saved = read_fingerprint(out_dir)
    if saved is None or saved == fingerprint:
        return
    differences = []
    if saved.get("arch_id") != fingerprint["arch_id"]:
        differences.append(f"architecture {saved.get('arch_id')} there, {fingerprint['arch_id']} here")
    differences += _differences(saved.get("task"), fingerprint["task"])
    differences += _changed(saved.get("settings"), fingerprint["settings"])
    if not differences:
        differences.append("its record differs")
    raise UserError(f"{out_dir} holds a checkpoint of another run ({'; '.join(differences)}): use another output "
                    "folder, or --no-resume to start this run over in it", path="out")


def _differences(saved: Any, task: dict[str, Any]) -> list[str]:
    if not isinstance(saved, dict) or saved.get("name") != task["name"]:
        name = saved.get("name") if isinstance(saved, dict) else saved
        return [f"task {name} there, {task['name']} here"]
    return [f"task {item}" for item in _changed(saved.get("params"), task["params"])]


def _changed(saved: Any, current: dict[str, Any]) -> list[str]:
    """`key X there, Y here` for each key whose value changed (keys only one side has are not compared)."""
    saved = saved if isinstance(saved, dict) else {}
    return [f"{key} {saved[key]} there, {value} here" for key, value in current.items()
            if saved.get(key, value) != value]
