"""Evaluation tasks, selectable by name: `get_task("mqar", seq_len=128)`, `get_task("mad:memorization")`,
`get_task("text", data="corpus.txt")`, or the suite `get_task("mad")` (one model per MAD task).

Every module of this package registers its tasks when it is imported (composer/tasks/registry.py), and all are
imported here, so a new task is one new file."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from composer.errors import UserError
from composer.tasks.base import IGNORE, DataRepeatWarning, SyntheticTask, Task, stable_seed
from composer.tasks.mad import MADTask, mad_suite
from composer.tasks.mqar import MQAR
from composer.tasks.registry import REGISTRY, build_task, names, register_family, register_task, task_factory
from composer.tasks.suite import TaskSuite
from composer.tasks.text import TextLM

for _module in pkgutil.iter_modules(__path__):       # every other task module (a new task is one file)
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")


def get_task(name: str, **params: Any) -> Task | TaskSuite:
    """A task (or the `mad` suite) by name with its parameters; unknown names and bad values are UserErrors."""
    return build_task(name, **params)


def task_params(task: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a task mapping, given either under `params` ({name: text, params: {seq_len: 128}})
    or beside `name` ({name: text, seq_len: 128}); both at once is a UserError at `params`."""
    beside = {k: v for k, v in task.items() if k not in ("name", "params")}
    if "params" not in task:
        return beside
    if beside:
        raise UserError("give the task's parameters under `params` or beside `name`, not both", path="params")
    if not isinstance(task["params"] or {}, dict):
        raise UserError(f"expected a mapping, got {type(task['params']).__name__}", path="params")
    return dict(task["params"] or {})


__all__ = ["IGNORE", "REGISTRY", "DataRepeatWarning", "MADTask", "MQAR", "SyntheticTask", "Task", "TaskSuite",
           "TextLM", "get_task", "mad_suite", "names", "register_family", "register_task", "stable_seed",
           "task_factory", "task_params"]
