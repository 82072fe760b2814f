"""The `csv` backend: `metrics.csv` and `params.json` in the run's folder; in a search, Ray Tune's CSV logger
(each trial's progress.csv)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from composer.atomic import write_atomic, write_json
from composer.tracking.base import Backend, Tracker, numbers, register_backend


class CSVTracker(Tracker):
    """`metrics.csv` (one row per call; columns grow as new metrics appear) and `params.json`."""

    def __init__(self, folder: Path, name: str | None = None):
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


def ray_callback(run_root: Path, project: str) -> Any:
    from ray.tune.logger import CSVLoggerCallback

    return CSVLoggerCallback()


register_backend(Backend("csv", tracker=CSVTracker, ray_callback=ray_callback, search_default=True))
