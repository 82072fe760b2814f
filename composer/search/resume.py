"""Opening a run's study, and resuming a search: the run folder is checked against its study before anything
runs, so a resume never writes a new trial over a finished one.

A resume is refused, with one error naming the file, when
- space.yaml's fingerprint differs from the one run.json recorded at creation (the name, choices, widths,
  task, training or objectives were edited; `trials` and `resources` may change),
- the leaderboard is damaged or lists a trial twice,
- study.db is missing, damaged, emptied or holds another study while the leaderboard or trials/ hold trials,
- a leaderboard row or a trials/<n> folder has no trial in the study, or its parameters differ from the
  study's, or a trial of the study drew a parameter from a distribution the space no longer has, or a
  finished trial's parameters build another architecture in the space as it is now (these hold without the
  fingerprint, for folders made before run.json).

Then `prepare_resume` keeps the finished rows and asks again the trials the interruption cut short.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from composer.errors import UserError
from composer.runs import RunDir, space_fingerprint
from composer.search.space import SearchSpace
from composer.search.strategies import strategy_of
from composer.yaml_source import read_source


def open_study(run: RunDir, space: SearchSpace) -> optuna.Study:
    """The run's study (created when new), its objectives named as the space names them (`val_loss`, not
    `Objective 0`); a damaged study.db is a UserError naming it."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = ["minimize" if m == "min" else "maximize" for m in space.modes()]
    try:
        storage = optuna.storages.RDBStorage(run.study_url)
        study = optuna.create_study(storage=storage, study_name=space.name, directions=directions,
                                    load_if_exists=True)
        with warnings.catch_warnings():         # experimental since Optuna 3.2, stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(space.objective_names())     # the dashboard and plots name the objectives
        return study
    except Exception as e:        # sqlalchemy's DatabaseError for a file that is not SQLite, Optuna's own ...
        raise UserError(f"{run.path('study.db')} is not a readable Optuna study ({_first_line(e)})") from None


def study_names(run: RunDir) -> list[str]:
    try:
        return optuna.get_all_study_names(optuna.storages.RDBStorage(run.study_url))
    except Exception as e:
        raise UserError(f"{run.path('study.db')} is not a readable Optuna study ({_first_line(e)})") from None


def verify_resume(run: RunDir, space: SearchSpace) -> None:
    """Refuse to resume when the folder and its study disagree (see the module docstring)."""
    recorded = run.read_run_info().get("space_fingerprint")
    space_file = run.path("space.yaml")
    if recorded and recorded != space_fingerprint(read_source(space_file).data):
        raise UserError(f"{space_file} was edited after the search started (only `trials` and `resources` may "
                        "change): its trials were drawn from the space as it was. Restore it, or start a new "
                        "search with --name")
    board = run.path("leaderboard.csv")
    rows = run.read_leaderboard()
    numbers = [int(r["trial"]) for r in rows]
    twice = sorted({n for n in numbers if numbers.count(n) > 1})
    if twice:
        raise UserError(f"{board} lists trial {twice[0]} more than once; the leaderboard is damaged")
    folders = sorted(int(p.name) for p in run.path("trials").glob("*") if p.name.isdigit()) \
        if run.path("trials").is_dir() else []
    if not rows and not folders:
        return                    # killed before any trial: nothing to protect
    db = run.path("study.db")
    where = f"the leaderboard holds {len(rows)} trials" if rows else f"{run.path('trials')} holds {len(folders)}"
    if not db.is_file():
        raise UserError(f"{db} is missing but {where}; a resume without the study would write new trials over "
                        "them")
    names = study_names(run)
    if space.name not in names:
        held = f"holds the study {names[0]!r}, not {space.name!r}" if names else "holds no study (emptied?)"
        raise UserError(f"{db} {held} but {where}")
    study = optuna.load_study(study_name=space.name, storage=run.study_url)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for row in rows:
        trial = trials.get(int(row["trial"]))
        if trial is None:
            raise UserError(f"{board} has trial {row['trial']} but {db} has {len(trials)} trials; they are not "
                            "of the same search")
        if row.get("params_json") is not None and _params(row["params_json"], board) != _params(trial.params):
            raise UserError(f"{board} trial {row['trial']} has other parameters than {db} trial {row['trial']}; "
                            "they are not of the same search")
    beyond = [n for n in folders if n not in trials]
    if beyond:
        raise UserError(f"{run.trial_dir(beyond[0])} has no trial in {db} ({len(trials)} trials); a resume "
                        "would write a new trial over it")
    expected = distributions(space)
    for trial in trials.values():
        for name, dist in trial.distributions.items():
            if expected.get(name) != dist:
                now = f"gives {_describe(expected[name])}" if name in expected else "no longer has it"
                raise UserError(f"{db} trial {trial.number} drew {name!r} from {_describe(dist)} but "
                                f"{space_file} {now}")
    if strategy_of(space).stages is None:       # a staged search's stages fix slots: their params are partial
        for row in rows:          # (the consensus trial carries its spec, not parameters)
            if row.get("arch_id") and row.get("params_json") and not row.get("consensus"):
                if _arch_now(space, trials[int(row["trial"])].params) != row["arch_id"]:
                    raise UserError(f"{board} trial {row['trial']} was {row['arch_id']} but its parameters "
                                    f"build another architecture from {space_file} now; the space was edited")


def distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """The Optuna distribution of every searched name, as `Dist.suggest` asks for it."""
    out: dict[str, BaseDistribution] = {}
    for name, dist in space.distributions().items():
        if dist.kind == "choice":
            out[name] = CategoricalDistribution(list(dist.values))
        elif dist.kind == "int":
            out[name] = IntDistribution(int(dist.low), int(dist.high), log=dist.log, step=int(dist.step or 1))
        else:
            out[name] = FloatDistribution(dist.low, dist.high, log=dist.log, step=dist.step)
    return out


def prepare_resume(run: RunDir, study: optuna.Study) -> list[dict[str, Any]]:
    """Keep the finished rows; trials an interruption cut short (left RUNNING, or told but missing from the
    leaderboard) are told FAIL and enqueued again with the same parameters, once. Enqueued trials still WAITING
    are left to be asked. Returns the kept rows."""
    from composer.search.optuna_search import STATES

    rows = [r for r in run.read_leaderboard() if r.get("status") in STATES]
    finished = {int(r["trial"]) for r in rows}
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for trial in trials:
        running = trial.state == optuna.trial.TrialState.RUNNING
        if running or (trial.state.is_finished() and trial.number not in finished):
            if running:
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            if trial.params and trial.number not in retried:
                study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    return rows


def _arch_now(space: SearchSpace, params: dict[str, Any]) -> str | None:
    from composer.canonical_form import arch_id

    try:
        candidate = space.sample(optuna.trial.FixedTrial(params))
    except ValueError:                  # a parameter the space no longer asks for, or one it lacks
        return None
    return arch_id(candidate.spec) if candidate.spec is not None else None


def _params(value: Any, source: Any = None) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise UserError(f"{source}: damaged params_json {value[:80]!r}") from None
    return json.dumps(value, sort_keys=True, default=str)


def _describe(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return f"choices {list(dist.choices)}"
    return f"[{dist.low}, {dist.high}]" + (" log" if getattr(dist, "log", False) else "")


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
