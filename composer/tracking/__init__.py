"""Experiment tracking for `composer train --log tensorboard csv wandb mlflow`, a ladder's `logging:` and a
search's `logging:`: one backend table (composer/tracking/base.py), each backend one module here that registers
its `Backend`: the tracker class (log_params once, log_metrics at a step, close; each using the library's own
writer), the Ray Tune logger callback a search uses instead, and the package it needs. Every module of this
package except `base` is imported here, so a new backend is one new file.

    tracker = open_trackers(["tensorboard", "csv"], "runs/demo", params={"lr": 1e-3, ...})
    tracker.log_metrics({"loss": 2.1}, step=10); tracker.close()

TensorBoard is torch.utils.tensorboard's SummaryWriter (the `tensorboard` package); wandb and mlflow are
optional extras (`pip install -e .[wandb]`, `.[mlflow]`), used offline: wandb in `offline` mode unless
WANDB_MODE says otherwise, mlflow with a SQLite database in the run folder unless MLFLOW_TRACKING_URI says
otherwise. Every backend sees the same metric names (`train/loss`, `eval/val_loss`) and the run's settings once,
as parameters; a backend that cannot start is one UserError naming it, after the ones already started are
closed, before anything trains. Each start of a run adds to what is there (a new event file, run or rows), never
rewriting what an earlier start logged.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
from pathlib import Path
from typing import Any

from composer.errors import UserError, one_line
from composer.tracking.base import (
    RUN_CONSTANTS,
    Backend,
    Tracker,
    Trackers,
    backends,
    evaluation_metrics,
    flat_params,
    numbers,
    register_backend,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")


def check_backends(names: Any, path: str = "--log", search: bool = False) -> list[str]:
    """The backend names, known and installed; else a UserError saying what installs it. `search`: logged
    through the backends' Ray Tune callbacks (TensorBoard's needs `tensorboardX`)."""
    from composer.names import unknown_name_message

    table = backends()
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError(f"expected a list of loggers ({', '.join(table)}), got {names!r}", path=path)
    for name in names:
        if name not in table:
            raise UserError(unknown_name_message("logger", name, list(table)), path=path)
        missing = table[name].missing(search)
        if missing:
            raise UserError(missing, path=path)
    return list(dict.fromkeys(names))


def open_trackers(names: list[str], folder: str | os.PathLike, params: dict[str, Any] | None = None,
                  name: str | None = None, path: str = "--log") -> Trackers:
    """The trackers `names` writing under `folder` (created), with `params` logged. A backend that fails to
    start (or to log `params`) is a UserError at `path` naming it, raised after closing the ones started."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = backends()
    started: list[Tracker] = []
    for backend in check_backends(names, path):
        try:
            member = table[backend].tracker(folder, name)
            started.append(member)
            if params:
                member.log_params(params)
        except Exception as e:  # noqa: BLE001  (each library raises its own errors; all end this run the same way)
            close_quietly(started)
            raise UserError(f"{backend} could not start logging in {folder}: {type(e).__name__}: {one_line(e, 400)}",
                            path=path) from None
    return Trackers(started)


def close_quietly(trackers: list[Tracker]) -> None:
    """Close each of `trackers`, whatever closing one of them raises."""
    for tracker in trackers:
        try:
            tracker.close()
        except Exception:  # noqa: BLE001  (the error being reported is the one that matters)
            pass


def search_defaults() -> list[str]:
    """What a search without `logging:` logs: the backends marked `search_default` that can log here."""
    return [b.name for b in backends().values() if b.search_default and b.missing(search=True) is None]


__all__ = ["RUN_CONSTANTS", "Backend", "Tracker", "Trackers", "backends", "check_backends", "evaluation_metrics",
           "flat_params", "numbers", "open_trackers", "register_backend", "search_defaults"]
