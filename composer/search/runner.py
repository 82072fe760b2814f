"""Run a search: Ray Tune executes the trials, Optuna (an SQLite study in `runs/<name>/study.db`, asked and told
through composer/search/optuna_search.py) chooses them, ASHA stops the poor ones early, and a Tune callback keeps
the leaderboard. See composer/runs.py for the files a search writes.

    from composer.search import search
    result = search("search_spaces/quickstart.yaml", trials=8)
    result.best, result.consensus, result.rows

Resuming (`resume=True`, or `composer search --resume runs/<name>`) reads the study and the leaderboard:
finished trials are kept, trials the interruption cut short are asked again with the same parameters, and
the remaining trials are run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from composer.canonical_form import arch_id, stripe
from composer.errors import UserError
from composer.runs import RunDir, write_atomic, write_json
from composer.search.aggregate import majority_vote, select_top
from composer.search.space import SearchSpace
from composer.search.space_parse import load_space
from composer.search.strategies import make_sampler
from composer.search.trial import cache_key, run_trial
from composer.spec_parse import load_spec

QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0", "RAY_AIR_NEW_OUTPUT": "0",
             "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_TRAIN_V2_ENABLED": "0",
             "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "60"}


@dataclass
class SearchResult:
    run_dir: Path
    rows: list[dict[str, Any]]
    best: Any = None                  # ArchSpec
    best_row: dict[str, Any] | None = None
    consensus: Any = None             # ArchSpec
    pareto: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


class DefineByRun:
    """The define-by-run function of the searcher: sample a candidate, cost it, check constraints.
    A class (not a closure) so Tune can pickle the searcher with its experiment state."""

    def __init__(self, space: SearchSpace):
        self.space = space

    def __call__(self, trial: Any) -> dict[str, Any]:
        from composer.costs import model_cost

        space = self.space
        candidate = space.sample(trial)
        meta: dict[str, Any] = {"trial": trial.number, "train": candidate.train, "params": candidate.params}
        if candidate.invalid:
            return {"meta": {**meta, "status": "invalid", "reason": candidate.invalid}}
        spec = candidate.spec
        costs = model_cost(spec, seq_len=space.task_seq_len())
        meta.update(spec=spec.to_dict(), arch_id=arch_id(spec), stripe=stripe(spec),
                    costs={"params": costs.params, "active_params": costs.active_params,
                           "flops_per_token": costs.flops_per_token, "state_bytes": costs.state_bytes},
                    cache_key=cache_key(arch_id(spec), candidate.train, space.task, space.seed, space.repeats))
        violation = space.check_constraints(spec)
        if violation:
            meta.update(status="constraint", reason=violation)
        return {"meta": meta}


def _study_searcher(space: SearchSpace, storage: Any, sampler: Any) -> Any:
    from composer.search.optuna_search import StudySearch

    names = [f"objective_{i}" for i in range(len(space.objectives))]
    modes = space.modes()
    single = len(names) == 1
    return StudySearch(space=DefineByRun(space), metric=names[0] if single else names,
                       mode=modes[0] if single else modes, sampler=sampler, storage=storage, study_name=space.name)


def evaluations_per_trial(space: SearchSpace) -> int | None:
    """How many evaluations a full-budget trial reports (ASHA's max_t), when the budget says."""
    from composer.tasks import get_task

    train = space.train
    if any(not isinstance(train.get(k), (int, float, type(None))) for k in ("steps", "tokens", "eval_every",
                                                                            "batch_size")):
        return None
    task = get_task(space.task["name"], **space.task.get("params", {}))
    seq_len = getattr(task, "seq_len", None) or space.task_seq_len()
    limits = [train["steps"]] if train.get("steps") else []
    if train.get("tokens"):
        limits.append(math.ceil(train["tokens"] / (train.get("batch_size", 32) * seq_len)))
    if not limits or train.get("seconds"):
        return None
    steps = min(limits)
    every = train.get("eval_every") or max(1, steps // 10)
    return math.ceil(steps / every)


def make_scheduler(space: SearchSpace) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    options = dict(space.scheduler)
    name = options.pop("name")
    if name in ("fifo", "none"):
        return FIFOScheduler()
    if name != "asha":
        raise UserError(f"unknown scheduler {name!r}; expected asha or none", path="scheduler.name")
    max_t = options.pop("max_t", None) or evaluations_per_trial(space)
    if max_t is None:
        raise UserError("ASHA needs scheduler.max_t (evaluations per trial) for a time budget",
                        path="scheduler.max_t")
    grace = min(options.pop("grace_period", 1), max_t)
    try:
        return ASHAScheduler(time_attr="evaluation", metric="objective_0", mode=space.modes()[0], max_t=max_t,
                             grace_period=grace, **options)
    except (TypeError, AssertionError) as e:
        raise UserError(f"bad scheduler options: {e}", path="scheduler") from None


def start_ray(address: str | None, verbose: bool) -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    if not verbose:      # trial errors are in the leaderboard; Tune's tracebacks only with --verbose
        for name in ("ray", "ray.tune", "ray.train"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": verbose,
                              "logging_level": logging.INFO if verbose else logging.ERROR}
    if address is None:
        kwargs["num_cpus"] = os.cpu_count() or 1
    ray.init(address=address, **kwargs)


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


def search(space: Any, *, name: str | None = None, runs_dir: str | os.PathLike = "runs",
           run_dir: str | os.PathLike | None = None, resume: bool = False, trials: int | None = None,
           max_concurrent: int | None = None, address: str | None = None, verbose: bool = False,
           progress: Callable[[dict[str, Any]], None] | None = None) -> SearchResult:
    """Run (or, with `resume`, continue) the search described by `space` (a path, a YAML string, a dict or a
    SearchSpace); see the module docstring. Returns the leaderboard rows, the best and consensus specs."""
    started = time.time()
    if resume:
        run = RunDir(run_dir or Path(runs_dir) / (name or ""))
        if not run.exists():
            raise UserError(f"nothing to resume: {run.root} holds no search (no space.yaml)")
        space = load_space(str(run.path("space.yaml")))
    else:
        space = load_space(space)
        run = RunDir(run_dir or Path(runs_dir) / (name or space.name))
    space = space.with_overrides(trials=trials)
    if max_concurrent:
        space.resources = {**space.resources, "max_concurrent": max_concurrent}
    data = {**space.data, "trials": space.trials, "resources": {**space.data.get("resources", {}),
                                                                **{k: v for k, v in space.resources.items() if v}}}
    run.create(yaml.safe_dump(data, sort_keys=False), resume=resume)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(run.study_url)
    directions = ["minimize" if m == "min" else "maximize" for m in space.modes()]
    study = optuna.create_study(storage=storage, study_name=space.name, directions=directions, load_if_exists=True)
    rows = prepare_resume(run, study) if resume else []
    remaining = space.trials - len(rows)
    from composer.search.callbacks import Recorder

    recorder = Recorder(run, space, rows, progress=progress, show=progress is None)
    if space.strategy["name"] == "incremental":
        for stage_space, stage_trials in incremental_stages(space, recorder, remaining):
            _run_tune(stage_space, run, storage, recorder, stage_trials, address, verbose)
    elif remaining > 0:
        _run_tune(space, run, storage, recorder, remaining, address, verbose)
    return finish(run, space, recorder.rows, study, time.time() - started)


def incremental_stages(space: SearchSpace, recorder: Any, trials: int) -> Any:
    """Composer's incremental layer-wise search: search the first `step` slots, freeze them to the per-slot
    majority vote of the stage's top candidates, search the next `step` slots, and so on. Yields
    (stage space, trials) one stage at a time, so each stage sees the previous stage's results."""
    kind, cfg = space.layers
    if kind != "slots":
        raise UserError("the incremental strategy needs a `slots` layer space", path="strategy.name")
    options = space.strategy.get("options") or {}
    step = int(options.get("step", 2))
    depth = len(cfg["slots"])
    stages = math.ceil(depth / step)
    frozen: list[dict[str, Any]] = []
    for stage in range(stages):
        n = min(depth, (stage + 1) * step)
        slots = frozen + cfg["slots"][len(frozen):n]
        staged = space.with_overrides(layers=("slots", {**cfg, "n_layers": n, "slots": slots}))
        before = len(recorder.rows)
        yield staged, max(1, trials // stages) if stage < stages - 1 else max(1, trials - before)
        top = select_top(recorder.rows[before:], staged.objective_names()[0], staged.modes()[0],
                         top_k=options.get("top_k"), threshold=options.get("threshold"))
        frozen = [_freeze(slots[i], _vote_slot([json.loads(r["params_json"]) for r in top], i)) if top
                  else slots[i] for i in range(n)]


def _vote_slot(params: list[dict[str, Any]], i: int) -> dict[str, Any]:
    """Slot i's sampled values (`op`, `d_ff`, `channel.op`, ...) by majority vote over the top candidates
    (ties go to the better-ranked)."""
    from collections import Counter

    prefix = f"layer{i}."
    choices = [json.dumps({k[len(prefix):]: v for k, v in p.items() if k.startswith(prefix)}, sort_keys=True)
               for p in params]
    counts = Counter(choices)
    return json.loads(next(c for c in choices if counts[c] == max(counts.values())))


def _freeze(template: dict[str, Any], voted: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The slot template with its voted values fixed (a channel template recursively)."""
    out = {}
    for key, value in template.items():
        if key == "channel" and isinstance(value, dict):
            out[key] = _freeze(value, voted, prefix + "channel.")
        else:
            out[key] = voted.get(prefix + key, value)
    return out


def _run_tune(space: SearchSpace, run: RunDir, storage: Any, recorder: Any, trials: int, address: str | None,
              verbose: bool) -> None:
    start_ray(address, verbose)
    import ray
    from ray import tune

    cpus = float(space.resources["cpus_per_trial"])
    gpus = float(space.resources.get("gpus_per_trial") or 0)
    available = ray.cluster_resources().get("CPU", 1)
    concurrent = space.resources.get("max_concurrent") or max(1, int(available // cpus))
    context = {"run_dir": str(run.root), "task": space.task, "objectives": space.objective_names(),
               "modes": space.modes(), "repeats": space.repeats, "seed": space.seed,
               "threads": max(1, int(cpus))}
    trainable = tune.with_resources(tune.with_parameters(run_trial, context=context), {"cpu": cpus, "gpu": gpus})
    sampler = make_sampler(space.strategy, space, space.seed + len(recorder.rows))
    sessions = sorted(p.name for p in run.path("tune").glob("session*")) if run.path("tune").is_dir() else []
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=_study_searcher(space, storage, sampler),
                                    scheduler=make_scheduler(space), num_samples=trials,
                                    max_concurrent_trials=concurrent, reuse_actors=True,
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(storage_path=str(run.path("tune")), name=f"session{len(sessions)}",
                                  verbose=2 if verbose else 0, callbacks=[recorder],
                                  failure_config=tune.FailureConfig(max_failures=int(space.resources.get(
                                      "max_failures", 1))),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )
    tuner.fit()


def trial_dirname(trial: Any) -> str:
    return f"trial_{trial.config['meta']['trial']}_{trial.trial_id}"


def finish(run: RunDir, space: SearchSpace, rows: list[dict[str, Any]], study: optuna.Study,
           elapsed: float) -> SearchResult:
    """Write the leaderboard, best.yaml, consensus.yaml, pareto.json and summary.json."""
    metrics = space.objective_names()
    run.write_leaderboard(rows, metrics)
    result = SearchResult(run.root, rows)
    metric, mode = metrics[0], space.modes()[0]
    ranked = select_top(rows, metric, mode, top_k=len(rows) or 1)
    if ranked:
        result.best_row = ranked[0]
        result.best = _spec_of(run, ranked[0])
        write_atomic(run.path("best.yaml"), _spec_yaml(result.best, f"best of {run.name}: trial "
                                                                    f"{ranked[0]['trial']}"))
        options = space.strategy.get("options") or {}
        top = select_top(rows, metric, mode, top_k=options.get("top_k"), threshold=options.get("threshold"))
        result.consensus = majority_vote([_spec_of(run, r) for r in top], name=f"{run.name}-consensus")
        write_atomic(run.path("consensus.yaml"), _spec_yaml(result.consensus, result.consensus.description))
    if len(metrics) > 1:
        by_number = {int(r["trial"]): r for r in rows}
        result.pareto = [by_number[t.number] for t in study.best_trials if t.number in by_number]
        write_json(run.path("pareto.json"), {"objectives": space.objectives, "trials": result.pareto})
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    result.summary = {"name": run.name, "strategy": space.strategy["name"], "trials": len(rows), "counts": counts,
                      "objectives": space.objectives, "best": result.best_row,
                      "consensus_arch_id": arch_id(result.consensus) if result.consensus else None,
                      "elapsed_s": round(elapsed, 1)}
    write_json(run.path("summary.json"), result.summary)
    return result


def _spec_of(run: RunDir, row: dict[str, Any]) -> Any:
    return load_spec(str(run.trial_dir(int(row["trial"])) / "spec.yaml"))


def _spec_yaml(spec: Any, comment: str) -> str:
    from composer.spec_parse import dump_spec

    return f"# {comment}\n" + dump_spec(spec)
