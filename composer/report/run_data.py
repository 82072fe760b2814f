"""Reading a search run directory for the report: leaderboard, per-trial specs and histories, study, ladder.

Layout read (missing parts are skipped): `leaderboard.csv` (one row per trial, in trial order, a `trial`
column plus metrics), `trials/<id>/spec.yaml`, `trials/<id>/metrics.jsonl` (the trainer's evaluations),
`study.db` (Optuna), `ladder.json` + `fits.png` (scaling ladder).

`RunData.trials` are ranked best first: trials that ran their full budget (status `completed`, or no status
column) before the others (pruned, failed, ...), each group by the quality column, then by trial number.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from composer.errors import UserError
from composer.export.sources import _trial_key, read_leaderboard
from composer.runs import RunDir
from composer.spec import ArchSpec
from composer.spec_parse import load_spec

# Without a summary.json naming the search's objectives: quality columns by preference, and whether lower is better.
QUALITY_KEYS = (("val_loss", True), ("loss", True), ("eval_loss", True), ("accuracy", False), ("val_accuracy", False))
COST_KEYS = (("params", "parameters"), ("flops_per_token", "FLOPs / token"), ("state_bytes", "state bytes"))


@dataclass
class Trial:
    trial_id: str
    row: dict[str, Any]
    spec: ArchSpec | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RunData:
    path: Path
    trials: list[Trial]
    quality_key: str | None
    lower_is_better: bool
    importances: dict[str, float] | None = None
    ladder: dict[str, Any] | None = None

    def quality(self, trial: Trial) -> float | None:
        value = trial.row.get(self.quality_key) if self.quality_key else None
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None

    def rank_key(self, trial: Trial) -> tuple:
        """Full-budget trials first, then by quality (best first), then by trial number."""
        quality = self.quality(trial)
        score = math.inf if quality is None else (quality if self.lower_is_better else -quality)
        number = int(trial.trial_id) if trial.trial_id.isdigit() else math.inf
        return (trial.row.get("status", "completed") != "completed", score, number)


def read_run(path: str | Path, progress=print) -> RunData:
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: not a run directory")
    rows = read_leaderboard(path)
    if not rows and not (path / "trials").is_dir():
        raise UserError(f"{path}: not a search run (no leaderboard.csv and no trials/)")
    trials = []
    for row in rows:
        trial = Trial(_trial_key(row), {k: v for k, v in row.items() if k and v not in (None, "")})
        folder = path / "trials" / trial.trial_id
        if (folder / "spec.yaml").exists():
            try:
                trial.spec = load_spec(folder / "spec.yaml")
            except UserError as e:
                progress(f"warning: trial {trial.trial_id}: {e}")
        if (folder / "metrics.jsonl").exists():
            trial.history = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()
                             if line.strip()]
        trials.append(trial)
    columns = set().union(*(t.row for t in trials)) if trials else set()
    objectives = [o for o in RunDir(path).read_summary().get("objectives") or [] if o.get("metric") in columns]
    if objectives:      # the search's own (first) objective
        quality_key, lower = objectives[0]["metric"], objectives[0].get("mode") == "min"
    else:
        quality_key, lower = next(((k, low) for k, low in QUALITY_KEYS if k in columns), (None, True))
    data = RunData(path, trials, quality_key, lower)
    data.trials = sorted(trials, key=data.rank_key)
    data.importances = _importances(path, progress)
    if (path / "ladder.json").exists():
        data.ladder = json.loads((path / "ladder.json").read_text())
    return data


def _importances(path: Path, progress) -> dict[str, float] | None:
    """Parameter importances of the run's Optuna study (None without a study or enough trials)."""
    db = path / "study.db"
    if not db.exists():
        return None
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = f"sqlite:///{db}"
        summaries = optuna.get_all_study_summaries(storage)
        if not summaries:
            return None
        study = optuna.load_study(study_name=summaries[0].study_name, storage=storage)
        if len(study.directions) > 1:
            return optuna.importance.get_param_importances(study, target=lambda t: t.values[0])
        return optuna.importance.get_param_importances(study)
    except Exception as e:  # noqa: BLE001  (too few trials, a single parameter value, ...: skip the figure)
        progress(f"note: no parameter importances ({type(e).__name__}: {e})")
        return None
