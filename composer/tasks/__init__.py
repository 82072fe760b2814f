"""Evaluation tasks, selectable by name: `get_task("mqar", seq_len=128)`, `get_task("mad:memorization")`,
`get_task("text", data="corpus.txt")`, or the suite `get_task("mad")` (one model per MAD task)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from composer.errors import UserError
from composer.tasks.base import IGNORE, DataRepeatWarning, SyntheticTask, Task, stable_seed
from composer.tasks.mad import TASKS as MAD_TASKS
from composer.tasks.mad import MADTask, canonical_task, task_settings
from composer.tasks.mqar import MQAR
from composer.tasks.text import TextLM

REGISTRY: dict[str, Callable[..., Any]] = {
    "mqar": MQAR,
    "text": TextLM,
}


@dataclass
class TaskSuite:
    """Several tasks scored together: one model is trained per member and the suite reports each member's
    accuracy and their mean (MAD: a task's score is the mean over its settings)."""

    name: str
    members: list[tuple[str, Task]] = field(default_factory=list)   # (label, task)

    @property
    def metrics(self) -> tuple[str, ...]:
        """The keys the suite reports: the mean accuracy and each task's."""
        return ("accuracy", *(f"accuracy/{name.split(':')[-1]}" for name in self.groups()))

    def groups(self) -> dict[str, list[str]]:
        """Member labels per task name (`mad:in_context_recall` -> its setting labels)."""
        out: dict[str, list[str]] = {}
        for label, task in self.members:
            out.setdefault(task.name, []).append(label)
        return out


def mad_suite(variants: bool = False, tasks: list[str] | tuple[str, ...] | None = None, seed: int = 0,
              **overrides: Any) -> TaskSuite:
    """The MAD suite: each task at its baseline (and, with `variants`, each difficulty variant). `overrides`
    (e.g. `num_train_examples=1280`) apply to every member, for cheaper runs than the published protocol."""
    names = [canonical_task(t) for t in (tasks or MAD_TASKS)]
    members = []
    for name in names:
        for label, settings in task_settings(name, variants):
            members.append((f"{name}/{label}", MADTask(name, seed=seed, **{**settings, **overrides})))
    return TaskSuite("mad", members)


def get_task(name: str, **params: Any) -> Task | TaskSuite:
    """A task (or the `mad` suite) by name with its parameters; unknown names and bad values are UserErrors."""
    if name == "mad":
        return mad_suite(**params)
    if name.startswith("mad:"):
        return MADTask(name.split(":", 1)[1], **params)
    if name not in REGISTRY:
        raise UserError(f"unknown task {name!r}; expected one of {', '.join(names())}", path="task")
    try:
        return REGISTRY[name](**params)
    except TypeError as e:
        raise UserError(f"bad parameters for task {name!r}: {e}", path="task") from e


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


def names() -> list[str]:
    return [*REGISTRY, "mad", *(f"mad:{t}" for t in MAD_TASKS)]


def register_task(name: str, factory: Callable[..., Task]) -> None:
    """Add a task under `name` (e.g. from a plugin)."""
    REGISTRY[name] = factory


__all__ = ["IGNORE", "DataRepeatWarning", "MADTask", "MQAR", "SyntheticTask", "Task", "TaskSuite", "TextLM",
           "get_task", "mad_suite", "names", "register_task", "stable_seed", "task_params"]
