"""Evaluation tasks, selectable by name: `get_task("mqar", seq_len=128)`, `get_task("mad:memorization")`,
`get_task("text", data="corpus.txt")`, or the suite `get_task("mad")` (one model per MAD task).

A document names its task (`task:` of a search space, a confirmation, a ladder) as a `TaskRef`:

    task: mqar                                          # a name
    task: {name: mqar, params: {seq_len: 64}}           # a name and its parameters under `params`
    task: {name: mqar, seq_len: 64}                     # or beside `name` (not both)

`TaskRef.parse` is how the reader (composer/reader.py) reads a field of that type, so every document reads a
task the same way; `get_task(ref)` (or `ref.build()`) makes the task.

Every module of this package registers its tasks when it is imported (composer/tasks/registry.py), and all are
imported here, so a new task is one new file."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any

from composer.errors import UserError
from composer.reader import Reader, join
from composer.tasks.base import IGNORE, DataRepeatWarning, SyntheticTask, Task, stable_seed
from composer.tasks.mad import MADTask, mad_suite
from composer.tasks.mqar import MQAR
from composer.tasks.registry import REGISTRY, build_task, names, register_family, register_task, task_factory
from composer.tasks.suite import TaskSuite
from composer.tasks.text import TextLM

for _module in pkgutil.iter_modules(__path__):       # every other task module (a new task is one file)
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")


def get_task(name: str | TaskRef, **params: Any) -> Task | TaskSuite:
    """A task (or the `mad` suite) by name (or TaskRef) with its parameters; unknown names and bad values are
    UserErrors."""
    if isinstance(name, TaskRef):
        name, params = name.name, {**name.params, **params}
    return build_task(name, **params)


@dataclass(frozen=True)
class TaskRef:
    """A task by name with its parameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, reader: Reader, value: Any, path: str) -> TaskRef:
        """From a task name or a mapping with `name` (parameters under `params` or beside `name`)."""
        if isinstance(value, str):
            return cls(value)
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise reader.fail("expected a task name (mqar, mad, mad:<task>, text) or a mapping with `name`", path)
        beside = {k: v for k, v in value.items() if k not in ("name", "params")}
        if "params" not in value:
            return cls(value["name"], beside)
        if beside:
            raise reader.fail("give the task's parameters under `params` or beside `name`, not both",
                              join(path, "params"))
        return cls(value["name"], dict(reader.mapping(value["params"] or {}, join(path, "params"))))

    @classmethod
    def of(cls, value: TaskRef | str | dict[str, Any]) -> TaskRef:
        """A TaskRef from Python: a TaskRef, a name or a mapping (errors name `task`)."""
        return value if isinstance(value, TaskRef) else cls.parse(Reader(), value, "task")

    def build(self) -> Any:
        """The task (or task suite); a UserError for an unknown name or bad parameters."""
        return get_task(self.name, **self.params)

    def built(self, reader: Reader, path: str) -> Any:
        """`build()`, its errors named under `path` of the reader's document."""
        try:
            return self.build()
        except UserError as e:
            raise reader.fail(e.message, path + (f".{e.path}" if e.path and e.path != "task" else "")) from None

    def as_dict(self) -> dict[str, Any]:
        """{name, params}: how a search and a confirmation record their task."""
        return {"name": self.name, "params": dict(self.params)}

    def flat(self) -> dict[str, Any]:
        """{name, **params}: how a ladder records its task."""
        return {"name": self.name, **self.params}


__all__ = ["IGNORE", "REGISTRY", "DataRepeatWarning", "MADTask", "MQAR", "SyntheticTask", "Task", "TaskRef",
           "TaskSuite", "TextLM", "get_task", "mad_suite", "names", "register_family", "register_task", "stable_seed",
           "task_factory"]
