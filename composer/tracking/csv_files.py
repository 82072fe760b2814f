"""The `csv` backend: `metrics.csv` and `params.jsonl` in the run's folder; in a search, Ray Tune's CSV logger
(each trial's progress.csv).

Both files are only ever appended to, so a rerun, a resume or a continued run adds to what an earlier start
logged and never rewrites it: `metrics.csv` is one row per number (`step,metric,value`: a new metric needs no new
column), `params.jsonl` one line of settings per start of the run.

    pandas.read_csv("DIR/metrics.csv").pivot_table(index="step", columns="metric", values="value")
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from composer.errors import UserError
from composer.tracking.base import Backend, Tracker, numbers, register_backend

METRICS_FILE = "metrics.csv"
PARAMS_FILE = "params.jsonl"
HEADER = ["step", "metric", "value"]


class CSVTracker(Tracker):
    """`metrics.csv` (a row per step and metric) and `params.jsonl` (a line per start), both appended to."""

    def __init__(self, folder: Path, name: str | None = None):
        self.metrics_file, self.params_file = folder / METRICS_FILE, folder / PARAMS_FILE
        if self.metrics_file.is_file() and self.metrics_file.stat().st_size:
            with self.metrics_file.open(newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), None)
            if header != HEADER:
                raise UserError(f"{self.metrics_file} has the columns {header}, not {','.join(HEADER)} (written by "
                                "an older Composer?): move it aside to log here")
        else:
            _append(self.metrics_file, [HEADER])

    def log_params(self, params: dict[str, Any]) -> None:
        with _open_append(self.params_file) as f:
            f.write(json.dumps(params, default=str) + "\n")

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        _append(self.metrics_file, [[step, key, repr(value)] for key, value in numbers(metrics).items()])


def _open_append(path: Path) -> Any:
    """`path` opened for appending (a new file gets 0666 less the umask, as any `open()`)."""
    return path.open("a", newline="", encoding="utf-8")


def _append(path: Path, rows: list[list[Any]]) -> None:
    with _open_append(path) as f:
        csv.writer(f).writerows(rows)


def read_metrics(folder: str | Path) -> dict[str, list[tuple[int, float]]]:
    """`metrics.csv` of a run folder as metric -> [(step, value), ...], in the order logged."""
    out: dict[str, list[tuple[int, float]]] = {}
    with (Path(folder) / METRICS_FILE).open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["metric"], []).append((int(row["step"]), float(row["value"])))
    return out


def read_params(folder: str | Path) -> list[dict[str, Any]]:
    """`params.jsonl` of a run folder: the settings of each start, oldest first."""
    text = (Path(folder) / PARAMS_FILE).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def ray_callback(run_root: Path, project: str) -> Any:
    from ray.tune.logger import CSVLoggerCallback

    return CSVLoggerCallback()


register_backend(Backend("csv", tracker=CSVTracker, ray_callback=ray_callback, search_default=True))
