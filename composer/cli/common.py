"""What the subcommands share: JSON output, the `--context` check, and the training-setting flags generated
from TrainConfig (`composer train` and `composer confirm` take them alike)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from composer.errors import UserError
from composer.limits import MAX_INTEGER


def print_json(data: object) -> None:
    print(json.dumps(data, indent=2, default=str))


def check_context(context: int | None) -> None:
    """`--context L`: a context length in [1, MAX_INTEGER] when given."""
    if context is not None and not 1 <= context <= MAX_INTEGER:
        raise UserError(f"expected a context length in [1, {MAX_INTEGER:,}], got {context}", path="--context")


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def add_setting_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per TrainConfig setting (but `skip`: settings a command sets itself), grouped by section; the budget
    flags exclude each other."""
    from composer.training.config import SETTINGS

    groups: dict[str, Any] = {}
    for key, s in SETTINGS.items():
        if key in skip:
            continue
        if s.section not in groups:
            group = parser.add_argument_group(f"{s.section.replace('_', ' ')} settings")
            groups[s.section] = group.add_mutually_exclusive_group() if s.section == "budget" else group
        options: dict[str, Any] = {"default": None, "help": s.help + ("" if s.default is None else
                                                                       f" (default {_default(s.default)})")}
        # argparse neither rejects a value nor checks a choice: TrainConfig's own check does, so that a bad value
        # is one `error:` line naming the flag (argparse would print its usage too)
        if s.kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif s.kind is tuple:
            options.update(type=lenient(float), nargs=s.length or "+", metavar="X")
        elif s.kind is str:
            options.update(metavar="{" + ",".join(s.choices) + "}" if s.choices else "NAME")
        else:
            options.update(type=lenient(s.kind), metavar="N" if s.kind is int else "X")
        groups[s.section].add_argument(flag(key), dest=key, **options)


def lenient(kind: type) -> Callable[[str], Any]:
    """An argparse type: the flag's value as a number of `kind` (1e3 is the integer 1000), or as given when it
    is not one, for the setting's check to reject by name."""
    def convert(text: str) -> Any:
        try:
            number = float(text)
        except ValueError:
            return text
        return int(number) if kind is int and number.is_integer() else number

    return convert


def _default(value: Any) -> str:
    return " ".join(f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value:g}" if isinstance(
        value, float) else str(value)
