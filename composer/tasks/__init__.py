"""Evaluation tasks, selectable by name: `get_task("mqar", seq_len=128)`, `get_task("mad:memorization")`,
`get_task("text", data="corpus.txt")`, or the suite `get_task("mad")` (one model per MAD task).

A document names its task (`task:` of a search space, a confirmation, a ladder) as a `TaskRef`:

    task: mqar                                          # a name
    task: {name: mqar, params: {seq_len: 64}}           # a name and its parameters under `params`
    task: {name: mqar, seq_len: 64}                     # or beside `name` (not both)

`TaskRef.parse` is how the reader (composer/reader.py) reads a field of that type, so every document reads a
task the same way; `get_task(ref)` (or `ref.build()`) makes the task."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from composer.errors import UserError
from composer.reader import Reader, join
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


def get_task(name: str | TaskRef, **params: Any) -> Task | TaskSuite:
    """A task (or the `mad` suite) by name (or TaskRef) with its parameters; unknown names and bad values are
    UserErrors."""
    if isinstance(name, TaskRef):
        name, params = name.name, {**name.params, **params}
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


def names() -> list[str]:
    return [*REGISTRY, "mad", *(f"mad:{t}" for t in MAD_TASKS)]


def register_task(name: str, factory: Callable[..., Task]) -> None:
    """Add a task under `name` (e.g. from a plugin)."""
    REGISTRY[name] = factory


__all__ = ["IGNORE", "DataRepeatWarning", "MADTask", "MQAR", "SyntheticTask", "Task", "TaskRef", "TaskSuite",
           "TextLM", "get_task", "mad_suite", "names", "register_task", "stable_seed"]
