"""The `mlflow` backend (`pip install -e .[mlflow]`): an MLflow run through `MlflowClient`, in the tracking store
MLFLOW_TRACKING_URI names, else in a SQLite database inside the run's folder (`<folder>/mlflow.db`, artifacts
under `<folder>/mlartifacts/`): current MLflow refuses the plain `mlruns/` file store it used to default to
(MLflow 3 asks for MLFLOW_ALLOW_FILE_STORE=true), and a database is what it supports locally. The experiment is
MLFLOW_EXPERIMENT_NAME, else `composer`. In a search, Ray's MLflow logger writes to the same kind of store
(`<run>/mlflow.db`, the space's name as the experiment).

    mlflow ui --backend-store-uri sqlite:///runs/demo/mlflow.db
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from composer.tracking.base import Backend, Tracker, flat_params, numbers, register_backend

DATABASE = "mlflow.db"
ARTIFACTS = "mlartifacts"
PARAM_VALUE_LIMIT = 6000     # MLflow's limit on a parameter's value (from 2.8; Composer needs 2.10)
BATCH = 100                  # parameters per log_batch call (MLflow's limit)


def tracking_uri(folder: Path) -> str:
    """MLFLOW_TRACKING_URI when set, else the SQLite database in `folder`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(folder) / DATABASE).resolve()}"


def experiment_id(client: Any, name: str, folder: Path) -> str:
    """The experiment `name` in the client's store, created when missing (its artifacts in `folder` when the
    store is Composer's own database there)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    own = "MLFLOW_TRACKING_URI" not in os.environ
    location = (Path(folder) / ARTIFACTS).resolve().as_uri() if own else None
    return client.create_experiment(name, artifact_location=location)


@contextlib.contextmanager
def quiet_database_setup() -> Iterator[None]:
    """Without MLflow's INFO lines about creating its database tables (a first run prints two)."""
    logger = logging.getLogger("mlflow.store.db.utils")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class MLflowTracker(Tracker):
    """One MLflow run: settings as parameters, numbers as metrics under the names every backend uses
    (`train/loss`: MLflow accepts `/`)."""

    def __init__(self, folder: Path, name: str | None):
        from mlflow import MlflowClient

        with quiet_database_setup():
            self.client = MlflowClient(tracking_uri=tracking_uri(folder))
            experiment = experiment_id(self.client, os.environ.get("MLFLOW_EXPERIMENT_NAME", "composer"), folder)
        self.run_id = self.client.create_run(experiment, run_name=name).info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:PARAM_VALUE_LIMIT]) for k, v in flat_params(params).items()]
        for start in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + BATCH])

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in numbers(metrics).items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def ray_callback(run_root: Path, project: str) -> Any:
    from mlflow import MlflowClient
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    uri = tracking_uri(run_root)
    with quiet_database_setup():
        experiment_id(MlflowClient(tracking_uri=uri), project, run_root)   # its artifacts inside the run folder
    return MLflowLoggerCallback(tracking_uri=uri, experiment_name=project)


register_backend(Backend("mlflow", tracker=MLflowTracker, ray_callback=ray_callback, package="mlflow",
                         install="pip install -e .[mlflow]"))
