"""The tracking interface and the backend table: every backend is one `Backend` entry, registered by its own
module in this package (composer/tracking/<backend>.py), holding everything Composer needs of it.

    register_backend(Backend("csv", tracker=CSVTracker, ray_callback=csv_callback))

`tracker(folder, name)` is what `composer train --log` and a ladder's trials write through; `ray_callback(run_root,
project)` is the Ray Tune logger callback a search's `logging:` adds; `package` is what the tracker imports (and
`install` how to get it), `search_package` what the Ray callback imports when that is another package.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class Tracker:
    """The interface: parameters once, numbers at a step, then close."""

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None: ...

    def close(self) -> None: ...


class Trackers(Tracker):
    """Several backends as one."""

    def __init__(self, members: list[Tracker]):
        self.members = members

    def log_params(self, params: dict[str, Any]) -> None:
        for m in self.members:
            m.log_params(params)

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        for m in self.members:
            m.log_metrics(metrics, step)

    def close(self) -> None:
        """Close every member, even when closing one fails (its error is raised after the others closed)."""
        error = None
        for m in self.members:
            try:
                m.close()
            except Exception as e:  # noqa: BLE001
                error = error or e
        if error is not None:
            raise error


@dataclass(frozen=True)
class Backend:
    """One tracking backend (see the module docstring)."""

    name: str
    tracker: Callable[[Path, str | None], Tracker]      # (folder, run name) -> the tracker writing there
    ray_callback: Callable[[Path, str], Any]            # (run folder, project) -> Ray Tune's logger callback
    package: str | None = None          # what the tracker imports (None: nothing beyond Composer's dependencies)
    install: str | None = None          # how to install `package` (default: pip install <package>)
    search_package: str | None = None   # what the Ray callback imports, when not `package`
    search_default: bool = False        # logged by a search without `logging:`, when installed

    def missing(self, search: bool = False) -> str | None:
        """Why this backend cannot log here (a package it needs is not installed, and how to install it); None
        when it can. `search`: through its Ray Tune callback."""
        if search and self.search_package:
            package, hint = self.search_package, f"pip install {self.search_package}"
        else:
            package, hint = self.package, self.install or f"pip install {self.package}"
        if package is None or importlib.util.find_spec(package) is not None:
            return None
        return f"{self.name} needs the {package} package: {hint}"


_BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Add a backend to the table (a backend module does this when it is imported)."""
    _BACKENDS[backend.name] = backend
    return backend


def backends() -> dict[str, Backend]:
    """The table: name -> Backend, in registration order."""
    return dict(_BACKENDS)


# What every evaluation of a run repeats (trainer set-up: its settings and the model's costs): parameters of the
# run, logged once with its settings, never as metrics.
RUN_CONSTANTS = ("lr", "seed", "batch_size", "seq_len", "task", "params", "non_embedding_params", "active_params",
                 "flops_per_token", "train_flops_per_token", "state_bytes")


def evaluation_metrics(metrics: dict[str, Any], prefix: str = "eval/") -> dict[str, Any]:
    """An evaluation's measurements under `prefix`: without its step and the run's constants (RUN_CONSTANTS)."""
    return {f"{prefix}{k}": v for k, v in metrics.items() if k != "step" and k not in RUN_CONSTANTS}


def numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numeric entries (booleans excluded): what every backend can plot."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def flat_params(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as `section.key` -> a scalar (lists and None as text)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, name + "."))
        else:
            out[name] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value, default=str)
    return out
