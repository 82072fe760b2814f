"""The run directory of one search, `runs/<name>/`, written by `composer search` and read by report, export
and scaling. Layout:

    space.yaml          the resolved search space (the YAML the search ran with, with CLI overrides)
    study.db            the Optuna study (SQLite): `optuna-dashboard sqlite:///runs/<name>/study.db`
    tune/               the Ray Tune experiment directory (trial logs, experiment state)
    leaderboard.csv     one row per trial: LEADERBOARD_COLUMNS, then the objective metrics
    trials/<n>/         per trial (n = Optuna trial number): spec.yaml, result.json, metrics.jsonl (the learning
                        curve, one evaluation per line), the trainer's checkpoint
    cache/<key>.json    finished results by (arch_id, training settings): a duplicate candidate reuses them
    best.yaml           the best architecture (valid spec: `composer.load_spec` reads it)
    consensus.yaml      the per-layer majority vote of the top candidates (valid spec)
    pareto.json         the Pareto set, for a multi-objective search
    summary.json        counts, best row, consensus arch_id, strategy, wall time

Every file is written atomically (temporary file, then `os.replace`), so a killed search leaves no
half-written file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from composer.errors import UserError

LEADERBOARD_COLUMNS = ("trial", "status", "reason", "arch_id", "stripe", "params", "active_params",
                       "flops_per_token", "state_bytes", "val_loss", "accuracy", "step", "tokens", "evaluations",
                       "budget_fraction", "tokens_per_s", "train_time_s", "lr", "seed", "reused", "params_json")


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


class RunDir:
    """Paths and readers/writers of one `runs/<name>/` folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    @property
    def name(self) -> str:
        return self.root.name

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def study_url(self) -> str:
        return f"sqlite:///{self.path('study.db')}"

    def trial_dir(self, number: int) -> Path:
        return self.path("trials", str(number))

    def exists(self) -> bool:
        return self.path("space.yaml").is_file()

    def create(self, space_yaml: str, resume: bool) -> None:
        """Make the folder; an existing search is never overwritten silently."""
        if self.exists() and not resume:
            raise UserError(f"{self.root} already holds a search; use --resume {self.root} to continue it, "
                            "or --name to start a new one")
        if resume and not self.exists():
            raise UserError(f"nothing to resume: {self.root} holds no search (no space.yaml)")
        self.root.mkdir(parents=True, exist_ok=True)
        if not resume:
            write_atomic(self.path("space.yaml"), space_yaml)

    # -- leaderboard ----------------------------------------------------------------------------
    def write_leaderboard(self, rows: list[dict[str, Any]], metrics: list[str]) -> None:
        columns = list(LEADERBOARD_COLUMNS) + [m for m in metrics if m not in LEADERBOARD_COLUMNS]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in sorted(rows, key=lambda r: int(r["trial"])):
            writer.writerow({k: _cell(row.get(k)) for k in columns})
        write_atomic(self.path("leaderboard.csv"), out.getvalue())

    def read_leaderboard(self) -> list[dict[str, Any]]:
        """The rows as dicts with numbers parsed; empty when there is no leaderboard yet."""
        path = self.path("leaderboard.csv")
        if not path.is_file():
            return []
        with open(path, newline="", encoding="utf-8") as f:
            return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(f)]

    def read_summary(self) -> dict[str, Any]:
        path = self.path("summary.json")
        return json.loads(path.read_text()) if path.is_file() else {}

    def best_trial(self) -> int | None:
        """The number of the best trial (from summary.json; the leaderboard is in trial order)."""
        best = self.read_summary().get("best") or {}
        return best.get("trial")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def _parse(text: str) -> Any:
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text

