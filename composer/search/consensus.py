"""The consensus of a search: made from its top candidates (composer/search/aggregate.py), then trained and
scored like every trial.

At the end of every search that was not interrupted (`aggregate: {train: false}` turns it off), the consensus is
enqueued in the study as a trial whose user attributes carry the spec (`consensus: true`, `spec`, `train`: the best
trial's training settings), and run as one more Tune trial: the same budget, seeds and repeats as the others (an
identical, already trained architecture reuses its cached result). It is a real Optuna trial (its value is in the
study; it samples no parameters) and a leaderboard row flagged `consensus`. It never votes, is never the best
single trial, and is trained once per consensus (a resume does not train it again). summary.json compares it with
the best single trial.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import optuna

from composer.runs import RunDir
from composer.search.aggregate import Aggregation
from composer.search.equal_size import MatchError
from composer.search.space import SearchSpace
from composer.search.space_layers import Dist
from composer.search.strategies import final_rows
from composer.spec import ArchSpec


def make_consensus(space: SearchSpace, run_dir: Any, rows: list[dict[str, Any]],
                   spec_of: Callable[[dict[str, Any]], ArchSpec], name: str) -> ArchSpec | None:
    """The consensus of the search's candidates (incremental: the full-depth ones), or None without any. With
    `match`, the vote leaves the matched width out and the consensus is matched like every candidate."""
    metric, mode = space.objective_names()[0], space.modes()[0]
    top = space.aggregate.top(final_rows(space, run_dir, rows), metric, mode)
    if not top:
        return None
    ignore = (space.match.by,) if space.match is not None and space.match.by != "d_model" else ()
    spec = space.aggregate.merge([spec_of(r) for r in top], name=name, ignore=ignore)
    description = f"{space.aggregate.describe()} of {len(top)} candidates"
    if space.match is not None:
        try:
            spec, record = space.match.fit(spec, space.match_target(), space.task_seq_len())
            description += f"; matched to {record['target']:,} {record['quantity']} by {record['by']}"
        except MatchError as e:
            description += f"; not matched ({e})"
    return spec.replace(description=description)


def consensus_rows(rows: list[dict[str, Any]], consensus: ArchSpec | None) -> list[dict[str, Any]]:
    """The trials that trained this consensus."""
    from composer.canonical_form import arch_id

    if consensus is None:
        return []
    key = arch_id(consensus)
    return [r for r in rows if r.get("consensus") and r.get("arch_id") == key]


def train_consensus(run: RunDir, space: SearchSpace, rows: list[dict[str, Any]], spec_of: Callable,
                    run_trials: Callable[[SearchSpace, int], None]) -> None:
    """Enqueue the consensus in the study and run it as one trial, unless this consensus was trained already or
    the space does not train it."""
    if not space.aggregate.train:
        return
    consensus = make_consensus(space, run.root, rows, spec_of, f"{run.name}-consensus")
    if consensus is None or any(r.get("status") == "completed" for r in consensus_rows(rows, consensus)):
        return
    study = optuna.load_study(study_name=space.name, storage=run.study_url)
    study.enqueue_trial({}, user_attrs={"consensus": True, "spec": consensus.to_dict(),
                                        "train": best_train(space, final_rows(space, run.root, rows))})
    run_trials(space.with_overrides(strategy={"name": "random"}, scheduler={"name": "none"}), 1)


def best_train(space: SearchSpace, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The training settings of the best candidate (searched settings at its values)."""
    metric, mode = space.objective_names()[0], space.modes()[0]
    top = Aggregation(top_k=1).top(rows, metric, mode)
    params = json.loads(top[0]["params_json"]) if top and isinstance(top[0].get("params_json"), str) else {}
    reference = space.reference_params()
    return {key: params.get(key, reference[key]) if isinstance(value, Dist) else value
            for key, value in space.train.items()}


def consensus_summary(space: SearchSpace, run_dir: Any, rows: list[dict[str, Any]],
                      consensus: ArchSpec | None) -> dict[str, Any]:
    """summary.json's `consensus`: its trial and score beside the best single trial's, and whether it wins."""
    metric, mode = space.objective_names()[0], space.modes()[0]
    trained = [r for r in consensus_rows(rows, consensus) if r.get("status") == "completed"]
    best = Aggregation(top_k=1).top(final_rows(space, run_dir, rows), metric, mode)
    out: dict[str, Any] = {"metric": metric, "mode": mode, "aggregate": space.aggregate.describe(),
                           "trained": space.aggregate.train,
                           "trial": None, "value": None, "best_trial": None, "best_value": None, "beats_best": None,
                           "same_as_best": None}
    if best:
        out.update(best_trial=best[0]["trial"], best_value=best[0][metric])
        if consensus is not None:
            from composer.canonical_form import arch_id

            out["same_as_best"] = best[0].get("arch_id") == arch_id(consensus)
    if trained:
        row = trained[-1]
        out.update(trial=row["trial"], value=row.get(metric))
        if best and isinstance(row.get(metric), (int, float)):
            value = row[metric]
            out["beats_best"] = bool(value < best[0][metric] if mode == "min" else value > best[0][metric])
    return out
