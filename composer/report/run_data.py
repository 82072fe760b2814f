"""Reading a search run directory for the report: leaderboard, per-trial specs and histories, study, ladder.

Layout read (missing parts are skipped): `leaderboard.csv` (one row per trial, in trial order, a `trial`
column plus metrics), `summary.json` (objectives, best trial, wall time), `consensus.yaml`,
`trials/<id>/spec.yaml`, `trials/<id>/metrics.jsonl` (the trainer's evaluations), `study.db` (Optuna),
`ladder.json` + `fits.png` (scaling ladder).

`RunData.trials` are ranked best first: trials that ran their full budget (status `completed`, or no status
column) before the others (pruned, failed, ...), each group by the quality column, then by trial number.
`RunData.leaderboard` is the same list with each reused duplicate (a candidate identical to one already trained,
whose result was reused) folded into the trial that trained it (`Trial.reused_by`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from composer.errors import UserError
from composer.runs import MEASURED_KEY, RunDir, read_json, read_jsonl
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
    reused_by: list[str] = field(default_factory=list)    # duplicates that reused this trial's result

    @property
    def status(self) -> str:
        return str(self.row.get("status", "completed"))

    @property
    def full_budget(self) -> bool:
        return self.status == "completed"

    @property
    def reused(self) -> bool:
        return self.row.get("reused") in (True, "True", "true", 1)


@dataclass
class RunData:
    path: Path
    trials: list[Trial]
    quality_key: str | None
    lower_is_better: bool
    importances: dict[str, float] | None = None
    importance_trials: int = 0          # the finished trials the importances were computed from
    ladder: dict[str, Any] | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    consensus: ArchSpec | None = None
    columns: list[str] = field(default_factory=list)     # leaderboard.csv's columns, in file order

    def quality(self, trial: Trial) -> float | None:
        value = trial.row.get(self.quality_key) if self.quality_key else None
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None

    def rank_key(self, trial: Trial) -> tuple:
        """Full-budget trials first, then by quality (best first), then by trial number."""
        quality = self.quality(trial)
        score = math.inf if quality is None else (quality if self.lower_is_better else -quality)
        number = int(trial.trial_id) if trial.trial_id.isdigit() else math.inf
        return (not trial.full_budget, score, number)

    @property
    def leaderboard(self) -> list[Trial]:
        """The ranked trials without the reused duplicates (each is listed in its original's `reused_by`)."""
        folded = {dup for t in self.trials for dup in t.reused_by}
        return [t for t in self.trials if t.trial_id not in folded]

    @property
    def objectives(self) -> list[dict[str, Any]]:
        """The search's objectives ({metric, mode}); the guessed quality column when summary.json has none."""
        named = [o for o in self.summary.get("objectives") or [] if o.get("metric") in self.columns]
        if named or self.quality_key is None:
            return named
        return [{"metric": self.quality_key, "mode": "min" if self.lower_is_better else "max"}]

    def best(self) -> Trial | None:
        """The search's own best trial (summary.json), else the top-ranked full-budget trial."""
        named = str((self.summary.get("best") or {}).get("trial", ""))
        by_id = {t.trial_id: t for t in self.trials}
        if named in by_id:
            return by_id[named]
        return next((t for t in self.trials if t.full_budget and self.quality(t) is not None), None)

    def counts(self) -> dict[str, int]:
        """Trials per status, most common first."""
        counts: dict[str, int] = {}
        for t in self.trials:
            counts[t.status] = counts.get(t.status, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def reported_objectives(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary with each measured objective (`{metric, context}`) named by its leaderboard column,
    `metric@context` (composer/measure)."""
    objectives = summary.get("objectives")
    if not isinstance(objectives, list):
        return summary
    named = [{**o, "metric": f"{o.get('metric')}@{o['context']}"} if isinstance(o, dict) and o.get("context")
             else o for o in objectives]
    return {**summary, "objectives": named}


def measured_columns(columns: list[str]) -> list[str]:
    """The leaderboard's measured costs (`decode_ms_per_token@8192`, composer/measure), in column order."""
    return [c for c in columns if MEASURED_KEY.fullmatch(c)]


def read_run(path: str | Path, progress=print) -> RunData:
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: not a run directory")
    run_dir = RunDir(path)
    rows = run_dir.read_leaderboard()
    if not rows and not (path / "trials").is_dir():
        raise UserError(f"{path}: not a search run (no leaderboard.csv and no trials/)")
    trials = []
    for row in rows:
        trial = Trial(trial_id(row), {k: v for k, v in row.items() if k and v not in (None, "")})
        folder = path / "trials" / trial.trial_id
        if (folder / "spec.yaml").exists():
            trial.spec = _load_spec(folder / "spec.yaml", f"trial {trial.trial_id}", progress)
        if (folder / "metrics.jsonl").exists():
            trial.history = read_jsonl(folder / "metrics.jsonl")
        trials.append(trial)
    columns = list(dict.fromkeys(k for row in rows for k in row if k))
    summary = reported_objectives(run_dir.read_summary())
    objectives = [o for o in summary.get("objectives") or [] if o.get("metric") in columns]
    if objectives:      # the search's own (first) objective
        quality_key, lower = objectives[0]["metric"], objectives[0].get("mode") == "min"
    else:
        quality_key, lower = next(((k, low) for k, low in QUALITY_KEYS if k in columns), (None, True))
    data = RunData(path, trials, quality_key, lower, summary=summary, columns=columns)
    data.trials = sorted(trials, key=data.rank_key)
    _fold_duplicates(data.trials)
    data.importances, data.importance_trials = _importances(path, progress)
    if (path / "consensus.yaml").exists():
        data.consensus = _load_spec(path / "consensus.yaml", "consensus.yaml", progress)
    data.ladder = read_json(path / "ladder.json", default=None)
    return data


def trial_id(row: dict[str, Any]) -> str:
    """The row's trial id as its folder name under trials/ (trial 0 included)."""
    for key in ("trial", "trial_id", "id", "number"):
        if row.get(key) not in (None, ""):
            return str(row[key])
    return ""


def _load_spec(path: Path, what: str, progress) -> ArchSpec | None:
    try:
        return load_spec(path)
    except UserError as e:
        progress(f"warning: {what}: {e}")
        return None


def _fold_duplicates(trials: list[Trial]) -> None:
    """Record each reused duplicate in `reused_by` of the trial that trained it (`reused_from`, else the first
    trial of the same arch_id that was not reused itself)."""
    by_id = {t.trial_id: t for t in trials}
    trained: dict[str, Trial] = {}
    for t in sorted(trials, key=lambda t: int(t.trial_id) if t.trial_id.isdigit() else math.inf):
        if not t.reused and t.row.get("arch_id") is not None:
            trained.setdefault(t.row["arch_id"], t)
    for t in trials:
        original = by_id.get(str(t.row.get("reused_from"))) or trained.get(t.row.get("arch_id"))
        if t.reused and original is not None and original is not t and not original.reused:
            original.reused_by.append(t.trial_id)


def _importances(path: Path, progress) -> tuple[dict[str, float] | None, int]:
    """Parameter importances of the run's Optuna study and the number of finished trials they rest on."""
    db = path / "study.db"
    if not db.exists():
        return None, 0
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = f"sqlite:///{db}"
        summaries = optuna.get_all_study_summaries(storage)
        if not summaries:
            return None, 0
        study = optuna.load_study(study_name=summaries[0].study_name, storage=storage)
        finished = sum(1 for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                       if not t.user_attrs.get("consensus"))       # the consensus samples no parameters
        if len(study.directions) > 1:
            return optuna.importance.get_param_importances(study, target=lambda t: t.values[0]), finished
        return optuna.importance.get_param_importances(study), finished
    except Exception as e:  # noqa: BLE001  (too few trials, a single parameter value, ...: skip the figure)
        progress(f"note: no parameter importances ({type(e).__name__}: {e})")
        return None, 0
