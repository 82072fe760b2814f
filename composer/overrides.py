"""`--set PATH=VALUE ...`: one override syntax for `composer train`, `search` and `ladder`.

A path is dotted into the YAML document the command reads (`train.warmup_steps=5`, `task.params.seq_len=64`,
`base.d_model=96`, `layers.0.op=mamba`); the value is read as YAML (safe types only, no tags). Each path is
checked before anything runs: its first key against the document's fields, `train.*` against TrainConfig's
settings, `task.params.*` against the task's parameters, each with a "did you mean"; deeper paths are checked by
the document's own parser, which names them too.

    doc = apply_overrides(doc, parse_overrides(["train.lr=3e-3", "task.params.seq_len=64"]), SPACE_FIELDS)
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from composer.errors import UserError
from composer.names import unknown_name_message
from composer.yaml_source import Source, parse_yaml

FLAG = "--set"


@dataclass(frozen=True)
class Override:
    path: tuple[str, ...]     # ("train", "warmup_steps")
    value: Any

    @property
    def name(self) -> str:
        return ".".join(self.path)


def parse_overrides(items: Iterable[str]) -> list[Override]:
    """`PATH=VALUE` strings -> Overrides; the value as safe YAML without tags (`64` an int, `[1, 2]` a list)."""
    out: list[Override] = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"expected PATH=VALUE (e.g. train.warmup_steps=5), got {item!r}", path=FLAG)
        path = tuple(key.split("."))
        if any(not part for part in path):
            raise UserError(f"expected a dotted path like train.warmup_steps, got {key!r}", path=FLAG)
        out.append(Override(path, parse_value(text, f"{FLAG} {key}")))
    return out


def parse_value(text: str, where: str) -> Any:
    """A value as YAML's safe types; a tag (`!!python/...`, `!foo`) is refused."""
    try:
        if any(isinstance(token, yaml.TagToken) for token in yaml.scan(text, Loader=yaml.SafeLoader)):
            raise UserError(f"YAML tags are not accepted in a value, got {text!r}", path=where)
    except yaml.YAMLError:
        pass                                   # parse_yaml below reports the syntax error with its position
    try:
        return parse_yaml(text).data
    except UserError as e:
        raise UserError(e.message, path=where) from None


def apply_overrides(data: Any, overrides: Iterable[Override], fields: Iterable[str]) -> dict[str, Any]:
    """A copy of the document `data` with each override set at its path; `fields`: the document's top-level
    keys. Missing mappings on the way are created."""
    doc = copy.deepcopy(data) if data is not None else {}
    if not isinstance(doc, dict):
        raise UserError("the document is not a mapping, so --set cannot apply to it", path=FLAG)
    fields = list(fields)
    for o in overrides:
        check_path(o, doc, fields)
        path = list(o.path)
        if path[0] == "task":
            doc["task"], path = _task_form(doc.get("task"), path)
        _set(doc, path, o.value, o.name)
    return doc


def apply_to_source(source: Source, items: Iterable[str], fields: Iterable[str]) -> Source:
    """The Source with `items` (`PATH=VALUE` strings) applied; lines and file name kept (relative paths in the
    document still resolve beside the file)."""
    items = list(items)
    if not items:
        return source
    return Source(apply_overrides(source.data, parse_overrides(items), fields), source.lines, source.filename)


def check_path(o: Override, doc: dict[str, Any], fields: list[str]) -> None:
    """The first key against `fields`; `train.*` against TrainConfig; `task.params.*` against the task."""
    head = o.path[0]
    if head not in fields:
        raise UserError(unknown_name_message("field", head, fields), path=f"{FLAG} {o.name}")
    if head == "train" and len(o.path) > 1:
        check_train(o)
    if head == "base" and len(o.path) == 2:
        import dataclasses

        from composer.spec import ArchSpec

        known = [f.name for f in dataclasses.fields(ArchSpec) if f.name != "layers"]
        if o.path[1] not in known:
            raise UserError(unknown_name_message("architecture field", o.path[1], known), path=f"{FLAG} {o.name}")
    if head == "task" and len(o.path) > 1 and o.path[1] not in ("name", "params"):
        check_task_param(o, o.path[1], doc.get("task"))
    if head == "task" and len(o.path) > 2 and o.path[1] == "params":
        check_task_param(o, o.path[2], doc.get("task"))


def check_train(o: Override) -> None:
    """`train.KEY` or `train.SECTION.KEY`: a TrainConfig setting, and a value it accepts."""
    from composer.training.config import SETTINGS, parse_settings

    rest = o.path[1:]
    sections = sorted({s.section for s in SETTINGS.values()})
    if len(rest) > 2 or (len(rest) == 2 and rest[0] not in sections):
        raise UserError(unknown_name_message("training setting", ".".join(rest), sorted(SETTINGS) + sections),
                        path=f"{FLAG} {o.name}")
    data: Any = o.value
    for key in reversed(rest):
        data = {key: data}
    try:
        parse_settings(data, path="train")
    except UserError as e:
        raise UserError(e.message, path=f"{FLAG} {e.path or o.name}") from None


def check_task_param(o: Override, key: str, task: Any) -> None:
    """`key` against the parameters of the document's task (when its factory names them)."""
    name = task if isinstance(task, str) else task.get("name") if isinstance(task, dict) else None
    known = task_param_names(name) if isinstance(name, str) else None
    if known is not None and key not in known:
        raise UserError(unknown_name_message(f"{name} task parameter", key, sorted(known)),
                        path=f"{FLAG} {o.name}")


def task_param_names(name: str) -> list[str] | None:
    """The keyword parameters the task `name` takes; None when unknown or open (`**kwargs`)."""
    from composer.tasks import task_factory

    factory = task_factory(name)
    if factory is None:
        return None
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL and p.name != "self"]


def task_overrides(task: str, items: Iterable[str]) -> dict[str, Any]:
    """`composer train --set`: the task parameters set by `task.params.KEY=V`, `task.KEY=V` or the short alias
    `KEY=V` (a bare key is a task parameter, as before the dotted form)."""
    out: dict[str, Any] = {}
    for o in parse_overrides(items):
        path = o.path[2:] if o.path[:2] == ("task", "params") else o.path[1:] if o.path[0] == "task" else o.path
        if len(path) != 1:
            continue
        check_task_param(o, path[0], task)
        out[path[0]] = o.value
    return out


def train_overrides(items: Iterable[str]) -> dict[str, Any]:
    """`composer train --set`: the training settings set by `train.KEY=V` (nested form: `{section: {key: v}}`)."""
    data: dict[str, Any] = {}
    for o in parse_overrides(items):
        if o.path[0] != "train":
            continue
        if len(o.path) == 1:
            raise UserError("expected train.SETTING=VALUE", path=f"{FLAG} {o.name}")
        check_train(o)
        target = data
        for key in o.path[1:-1]:
            target = target.setdefault(key, {})
        target[o.path[-1]] = o.value
    return data


TRAIN_FIELDS = ("train", "task")        # what `composer train --set` reaches (a bare key: a task parameter)


def check_train_command(items: Iterable[str], task: str) -> None:
    """Every `composer train --set` path: under train. or task., or a bare task parameter."""
    for o in parse_overrides(items):
        if len(o.path) > 1 and o.path[0] not in TRAIN_FIELDS:
            raise UserError(unknown_name_message("field", o.path[0], list(TRAIN_FIELDS)) + " (train --set reaches "
                            "train.* and task.*; the architecture is the spec file)", path=f"{FLAG} {o.name}")
        if o.path[0] == "task" and len(o.path) == 2 and o.path[1] == "name":
            raise UserError("the task is chosen with --task", path=f"{FLAG} {o.name}")


def _task_form(task: Any, path: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The task as a mapping, and the path in the form it uses (`params:` or parameters beside `name`)."""
    task = {"name": task} if isinstance(task, str) else task if isinstance(task, dict) else {}
    if len(path) > 2 and path[1] == "params" and "params" not in task and len(task) > 1:
        return task, ["task", *path[2:]]                    # parameters written beside `name`
    if len(path) > 1 and path[1] not in ("name", "params") and "params" in task:
        return task, ["task", "params", *path[1:]]
    return task, path


def _set(doc: dict[str, Any], path: list[str], value: Any, name: str) -> None:
    target: Any = doc
    for key in path[:-1]:
        target = _step(target, key, name)
    last = path[-1]
    if isinstance(target, list):
        target[_index(target, last, name)] = value
    elif isinstance(target, dict):
        target[last] = value
    else:
        raise UserError(f"{'.'.join(path[:-1])} is {target!r}, not a mapping or list", path=f"{FLAG} {name}")


def _step(target: Any, key: str, name: str) -> Any:
    if isinstance(target, list):
        return target[_index(target, key, name)]
    if not isinstance(target, dict):
        raise UserError(f"cannot set {key!r} inside {target!r}", path=f"{FLAG} {name}")
    if key not in target or target[key] is None:
        target[key] = {}
    return target[key]


def _index(items: list[Any], key: str, name: str) -> int:
    if not key.lstrip("-").isdigit() or not -len(items) <= int(key) < len(items):
        raise UserError(f"expected a list index in [0, {len(items)}), got {key!r}", path=f"{FLAG} {name}")
    return int(key)
