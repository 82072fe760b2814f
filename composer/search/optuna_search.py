"""Tune's OptunaSearch, telling the study what really happened to each trial.

Ray 2.60's `OptunaSearch.on_trial_complete` tells a trial COMPLETE whenever its last result has the metric,
so a trial that ASHA stopped early would enter the sampler as a finished full-budget trial. Here a trial is
COMPLETE only when it reported its `final` full-budget result; one stopped early is PRUNED (its evaluations
stay as intermediate values), a rejected candidate (constraint, invalid) is PRUNED, a diverged or crashed
one is FAIL. The status and reason are kept as the trial's user attributes (readable in optuna-dashboard).
"""

from __future__ import annotations

import logging
from typing import Any

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

logger = logging.getLogger(__name__)

STATES = {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "constraint": TrialState.PRUNED,
          "invalid": TrialState.PRUNED, "diverged": TrialState.FAIL, "failed": TrialState.FAIL}


def trial_status(result: dict[str, Any] | None, error: bool) -> str:
    """completed | pruned | constraint | invalid | diverged | failed, from a trial's last result."""
    if error or not result:
        return "failed"
    if not result.get("final"):
        return "pruned"
    return str(result.get("status", "completed"))


class StudySearch(OptunaSearch):
    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if isinstance(self.metric, list) or result.get("final") or not result.get("evaluation"):
            return
        self._ot_trials[trial_id].report(float(result[self.metric]), int(result["evaluation"]))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        status = trial_status(result, error)
        state = STATES.get(status, TrialState.FAIL)
        ot_trial.set_user_attr("status", status)
        for key in ("reason", "arch_id", "stripe"):
            if result and result.get(key):
                ot_trial.set_user_attr(key, result[key])
        if status == "pruned" and not isinstance(self.metric, list) and result.get("evaluation"):
            ot_trial.report(float(result[self.metric]), int(result["evaluation"]))   # the result that got it stopped
        values = None
        if state == TrialState.COMPLETE:
            metrics = self.metric if isinstance(self.metric, list) else [self.metric]
            values = [float(result[m]) for m in metrics]
        try:
            self._ot_study.tell(ot_trial, values, state=state)
        except Exception as exc:        # never lose the search over one bad tell (e.g. a NaN value)
            # Optuna stores the trial before its sampler's after_trial hook runs; that hook may raise (the grid
            # sampler calls Study.stop, outside optimize, once the grid is used up) with the trial recorded
            if not self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished():
                logger.warning("could not record trial %s in the study: %s", trial_id, exc)
        self._completed_trials.add(trial_id)
