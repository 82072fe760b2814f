"""The task registry: every task module of this package registers what it provides when it is imported
(composer/tasks/__init__.py imports them all), so a new task is one new file:

    register_task("mqar", MQAR)                      # get_task("mqar", **params) -> MQAR(**params)
    register_family("mad", MADTask, TASKS)           # get_task("mad:<member>", **params) -> MADTask(member, **params)

A factory may return a `TaskSuite` (`register_task("mad", mad_suite)`)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from composer.errors import UserError

REGISTRY: dict[str, Callable[..., Any]] = {}                          # name -> factory(**params)
FAMILIES: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {}  # prefix -> (factory(member, ...), members)


def register_task(name: str, factory: Callable[..., Any]) -> None:
    """Add a task under `name` (e.g. from a plugin); `factory(**params)` builds it (a Task or a TaskSuite)."""
    REGISTRY[name] = factory


def register_family(prefix: str, factory: Callable[..., Any], members: Sequence[str]) -> None:
    """Add tasks named `<prefix>:<member>`, built by `factory(member, **params)` (which checks the member)."""
    FAMILIES[prefix] = (factory, tuple(members))


def names() -> list[str]:
    """Every task name: the registered ones, then each family's members."""
    return [*REGISTRY, *(f"{prefix}:{m}" for prefix, (_, members) in FAMILIES.items() for m in members)]


def task_factory(name: str) -> Callable[..., Any] | None:
    """What builds the task `name` from its parameters; None for an unknown name."""
    prefix, colon, member = name.partition(":")
    if colon and prefix in FAMILIES:
        return functools.partial(FAMILIES[prefix][0], member)
    return REGISTRY.get(name)


def build_task(name: str, **params: Any) -> Any:
    """The task (or suite) `name` with its parameters; an unknown name or parameter is a UserError."""
    factory = task_factory(name)
    if factory is None:
        raise UserError(f"unknown task {name!r}; expected one of {', '.join(names())}", path="task")
    try:
        return factory(**params)
    except TypeError as e:
        raise UserError(f"bad parameters for task {name!r}: {e}", path="task") from e
