"""`TaskSuite`: several tasks scored together (the `mad` suite). The trainer trains one model per member
(composer/trainer.py: train_suite) and a suite reports its accuracies only; code that treats a suite apart
from a single task asks `isinstance(task, TaskSuite)`."""

from __future__ import annotations

from dataclasses import dataclass, field

from composer.tasks.base import Task


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

    @property
    def first(self) -> Task:
        """The first member: where a suite must answer for one task (a model's vocabulary and context)."""
        return self.members[0][1]

    def groups(self) -> dict[str, list[str]]:
        """Member labels per task name (`mad:in_context_recall` -> its setting labels)."""
        out: dict[str, list[str]] = {}
        for label, task in self.members:
            out.setdefault(task.name, []).append(label)
        return out
