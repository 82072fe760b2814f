"""Experiment tracking for `composer train --log tensorboard csv wandb mlflow`: one small class per backend
behind one interface (log_params once, log_metrics at a step, close), each using the library's own writer.

    tracker = open_trackers(["tensorboard", "csv"], "runs/demo", params={"lr": 1e-3, ...})
    tracker.log_metrics({"loss": 2.1}, step=10); tracker.close()

TensorBoard is torch.utils.tensorboard's SummaryWriter (the `tensorboard` package); wandb and mlflow are
optional extras (`pip install -e .[wandb]`, `.[mlflow]`), used offline: wandb in `offline` mode unless
WANDB_MODE says otherwise, mlflow with a local `mlruns/` file store unless MLFLOW_TRACKING_URI says otherwise.
Searches log through Ray Tune's own logger callbacks instead (composer/search/runner.py).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from composer.atomic import write_atomic, write_json
from composer.errors import UserError

BACKENDS = ("tensorboard", "csv", "wandb", "mlflow")
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}   # backend -> what it imports


class Tracker:
    """The interface: parameters once, numbers at a step, then close."""

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None: ...

    def close(self) -> None: ...


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


class TensorBoardTracker(Tracker):
    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder / "tensorboard"))

    def log_params(self, params: dict[str, Any]) -> None:
        self.writer.add_text("params", "\n".join(f"    {k}: {v}" for k, v in flat_params(params).items()))

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        for key, value in numbers(metrics).items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class CSVTracker(Tracker):
    """`metrics.csv` (one row per call; columns grow as new metrics appear) and `params.json`."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.rows: list[dict[str, Any]] = []

    def log_params(self, params: dict[str, Any]) -> None:
        write_json(self.folder / "params.json", params)

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        self.rows.append({"step": step, **numbers(metrics)})
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.rows)
        write_atomic(self.folder / "metrics.csv", text.getvalue())


class WandbTracker(Tracker):
    def __init__(self, folder: Path, name: str | None):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "composer"), name=name, dir=str(folder),
                              mode=os.environ.get("WANDB_MODE", "offline"))

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.config.update(flat_params(params), allow_val_change=True)

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        self.run.log(numbers(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


class MLflowTracker(Tracker):
    def __init__(self, folder: Path, name: str | None):
        import mlflow

        self.mlflow = mlflow
        if "MLFLOW_TRACKING_URI" not in os.environ:
            mlflow.set_tracking_uri((folder / "mlruns").resolve().as_uri())
        self.run = mlflow.start_run(run_name=name)

    def log_params(self, params: dict[str, Any]) -> None:
        self.mlflow.log_params({k: str(v)[:250] for k, v in flat_params(params).items()})

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        self.mlflow.log_metrics({k.replace("/", "_"): v for k, v in numbers(metrics).items()}, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


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
        for m in self.members:
            m.close()


def check_backends(names: Any, path: str = "--log", search: bool = False) -> list[str]:
    """The backend names, known and installed; else a UserError saying what installs it. A search logs
    TensorBoard through Ray Tune's logger, which needs `tensorboardX`."""
    from composer.names import unknown_name_message

    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError(f"expected a list of loggers ({', '.join(BACKENDS)}), got {names!r}", path=path)
    for name in names:
        if name not in BACKENDS:
            raise UserError(unknown_name_message("logger", name, list(BACKENDS)), path=path)
        package = "tensorboardX" if search and name == "tensorboard" else PACKAGES.get(name)
        if package and importlib.util.find_spec(package) is None:
            hint = "pip install tensorboardX" if package == "tensorboardX" else f"pip install -e .[{name}]"
            raise UserError(f"{name} needs the {package} package: {hint}", path=path)
    return list(dict.fromkeys(names))


def open_trackers(names: list[str], folder: str | os.PathLike, params: dict[str, Any] | None = None,
                  name: str | None = None) -> Trackers:
    """The trackers `names` writing under `folder` (created), with `params` logged."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    make = {"tensorboard": lambda: TensorBoardTracker(folder), "csv": lambda: CSVTracker(folder),
            "wandb": lambda: WandbTracker(folder, name), "mlflow": lambda: MLflowTracker(folder, name)}
    tracker = Trackers([make[n]() for n in check_backends(names)])
    if params:
        tracker.log_params(params)
    return tracker
