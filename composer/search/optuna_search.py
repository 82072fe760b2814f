"""The bridge between Ray Tune and the Optuna study: a Tune `Searcher` that owns the study through ask and tell.

For each new Tune trial, `suggest` asks the study for a trial (`study.ask()`, which first takes any enqueued
trial, such as one a resume asked again) and runs the define-by-run function (the search space compiled from
YAML) on it; Tune's config is the sampled parameters plus what the function returns. Each intermediate
evaluation goes to the study with `trial.report` (single objective: Optuna keeps no intermediate values for
several). When Tune finishes the trial, the study is told what really happened to it:

- COMPLETE only when the trial reported its `final` full-budget result, with the objective value(s);
- PRUNED when ASHA stopped it early (its evaluations stay as intermediate values, the one that got it stopped
  included) and for a rejected candidate (constraint, invalid);
- FAIL when it diverged or crashed.

The status and reason are kept as the trial's user attributes (readable in optuna-dashboard), with its arch_id
and stripe. (Tune's own OptunaSearch tells a trial COMPLETE whenever its last result has the metric, so a trial
that ASHA stopped early would enter the sampler as a finished full-budget trial.)

The study is the searcher's whole state: `save` writes no Tune searcher checkpoint, and a killed search
resumes from the study (composer/search/resume.py: `prepare_resume`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage
from optuna.trial import TrialState
from ray.tune.search import Searcher

logger = logging.getLogger(__name__)

STATES = {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "constraint": TrialState.PRUNED,
          "invalid": TrialState.PRUNED, "diverged": TrialState.FAIL, "failed": TrialState.FAIL}
DIRECTIONS = {"min": "minimize", "max": "maximize"}
USER_ATTRS = ("reason", "arch_id", "stripe")


def trial_status(result: dict[str, Any] | None, error: bool) -> str:
    """completed | pruned | constraint | invalid | diverged | failed, from a trial's last result."""
    if error or not result:
        return "failed"
    if not result.get("final"):
        return "pruned"
    return str(result.get("status", "completed"))


class StudySearch(Searcher):
    """A Tune searcher over one Optuna study (created, or loaded when `study_name` exists in `storage`).

    `space(trial)` samples a candidate on an `optuna.Trial` and returns the rest of Tune's config; `metric` and
    `mode` are a name and min|max, or lists of them for several objectives."""

    def __init__(self, space: Callable[[optuna.Trial], dict[str, Any] | None], metric: str | list[str],
                 mode: str | list[str], sampler: BaseSampler | None = None, storage: str | BaseStorage | None = None,
                 study_name: str | None = None):
        super().__init__(metric=metric, mode=mode)
        modes = mode if isinstance(mode, list) else [mode]
        self.space = space
        self.study = optuna.create_study(storage=storage, sampler=sampler, pruner=optuna.pruners.NopPruner(),
                                         study_name=study_name, directions=[DIRECTIONS[m] for m in modes],
                                         load_if_exists=True)
        self.trials: dict[str, optuna.Trial] = {}       # Tune trial id -> the study's trial
        self.finished: set[str] = set()                 # Tune trial ids already told

    @property
    def metrics(self) -> list[str]:
        return self.metric if isinstance(self.metric, list) else [self.metric]

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        trial = self.study.ask()
        self.trials[trial_id] = trial
        try:
            config = self.space(trial) or {}
        except Exception:
            self.study.tell(trial, state=TrialState.FAIL)
            self.finished.add(trial_id)
            raise
        return {**trial.params, **config}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        trial = self.trials.get(trial_id)
        if trial is None or trial_id in self.finished or len(self.metrics) > 1 or result.get("final") \
                or not result.get("evaluation"):
            return
        trial.report(float(result[self.metric]), int(result["evaluation"]))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        trial = self.trials.get(trial_id)
        if trial is None or trial_id in self.finished:
            return
        self.finished.add(trial_id)
        status = trial_status(result, error)
        state = STATES.get(status, TrialState.FAIL)
        trial.set_user_attr("status", status)
        for key in USER_ATTRS:
            if result and result.get(key):
                trial.set_user_attr(key, result[key])
        if status == "pruned" and len(self.metrics) == 1 and result.get("evaluation"):
            trial.report(float(result[self.metric]), int(result["evaluation"]))   # the result that got it stopped
        values = [float(result[m]) for m in self.metrics] if state == TrialState.COMPLETE else None
        try:
            self.study.tell(trial, values, state=state)
        except Exception as exc:        # never lose the search over one bad tell (e.g. a NaN value)
            # Optuna stores the trial before its sampler's after_trial hook runs; that hook may raise (the grid
            # sampler calls Study.stop, outside optimize, once the grid is used up) with the trial recorded
            if not self.told(trial.number):
                logger.warning("could not record trial %s in the study: %s", trial_id, exc)

    def told(self, number: int) -> bool:
        """Whether the study holds trial `number` as finished."""
        return any(t.number == number and t.state.is_finished() for t in self.study.get_trials(deepcopy=False))

    def __getstate__(self) -> dict[str, Any]:
        """What Tune pickles with its experiment state (tuner.pkl): everything but the study, which its storage
        holds (a resume reopens it from study.db, composer/search/resume.py) and whose sampler may not pickle
        (Optuna's NSGA-II sampler holds a thread lock)."""
        return {**self.__dict__, "study": None}

    def save(self, checkpoint_path: str) -> None:
        """Nothing to write: the study holds the searcher's state (Tune then keeps no searcher file)."""
