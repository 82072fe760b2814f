"""The `mlflow` backend (`pip install -e .[mlflow]`): an MLflow run in a local `<folder>/mlruns/` file store
unless MLFLOW_TRACKING_URI says otherwise; in a search, Ray's MLflow logger (`<run>/mlruns`, the space's name as
the experiment)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from composer.tracking.base import Backend, Tracker, flat_params, numbers, register_backend


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


def ray_callback(run_root: Path, project: str) -> Any:
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    uri = os.environ.get("MLFLOW_TRACKING_URI") or (Path(run_root) / "mlruns").resolve().as_uri()
    return MLflowLoggerCallback(tracking_uri=uri, experiment_name=project)


register_backend(Backend("mlflow", tracker=MLflowTracker, ray_callback=ray_callback, package="mlflow",
                         install="pip install -e .[mlflow]"))
