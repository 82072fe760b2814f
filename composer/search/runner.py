"""Run a search: Ray Tune executes the trials, Optuna (an SQLite study in `runs/<name>/study.db`, asked and told
through composer/search/optuna_search.py) chooses them, ASHA stops the poor ones early, and a Tune callback keeps
the leaderboard. See composer/runs.py for the files a search writes.

    from composer.search import search
    result = search("search_spaces/quickstart.yaml", trials=8)
    result.best, result.consensus, result.rows

Resuming (`resume=True`, or `composer search --resume runs/<name>`) checks the folder against its study
(composer/search/resume.py), then reads the study and the leaderboard: finished trials are kept, trials the
interruption cut short are asked again with the same parameters, and the remaining trials are run.

Before anything is written, the whole search is checked (composer/search/setup.py) and the cluster started or
reached (composer/ray_cluster.py); one driver at a time works in a run folder (composer.runs.RunLock);
Ctrl-C and SIGTERM end the run with what finished, marked partial (composer/interrupt.py, SearchInterrupted).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from composer.atomic import write_atomic, write_json
from composer.canonical_form import arch_id, stripe
from composer.errors import UserError
from composer.interrupt import Interruption, signal_name
from composer.provenance import provenance
from composer.ray_cluster import check_trial_resources, start_ray
from composer.runs import RunDir, contained, safe_name
from composer.search.aggregate import select_top
from composer.search.consensus import consensus_summary, make_consensus, train_consensus
from composer.search.pareto import hypervolume
from composer.search.resume import open_study, prepare_resume, verify_resume
from composer.search.setup import COST_METRICS, check_search, make_scheduler
from composer.search.space import SearchSpace
from composer.search.space_parse import load_space
from composer.search.strategies import final_rows, make_sampler, strategy_of
from composer.search.trial import cache_key, run_trial
from composer.spec_parse import load_spec


@dataclass
class SearchResult:
    run_dir: Path
    rows: list[dict[str, Any]]
    best: Any = None                  # ArchSpec
    best_row: dict[str, Any] | None = None
    consensus: Any = None             # ArchSpec
    pareto: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    confirm: dict[str, Any] | None = None     # the `confirm:` block's result (composer.confirm.search_then_confirm)


class SearchInterrupted(KeyboardInterrupt):
    """A search stopped by a signal; `result` holds what finished (its summary says `interrupted`)."""

    def __init__(self, result: Any, signum: int):
        super().__init__(f"search interrupted by {signal_name(signum)}")
        self.result = result
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def tune_stopper(interruption: Interruption) -> Any:
    """A Tune `Stopper` that ends the whole run once `interruption` has caught a signal: Tune stops the running
    trials without telling the study anything about them (they stay RUNNING, so a resume asks them again with
    the same parameters) and returns."""
    from ray.tune.stopper import Stopper

    class StopOnSignal(Stopper):
        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            return False

        def stop_all(self) -> bool:
            return interruption.signum is not None

    return StopOnSignal()


class DefineByRun:
    """The define-by-run function of the searcher: sample a candidate, cost it, check constraints; measure it when
    the space has measured objectives or constraints (composer/search/measured.py), so a candidate that breaks a
    bound is rejected before it trains. A class (not a closure) so Tune can pickle the searcher with its
    experiment state; `run_root` is the run folder whose `measure/` keeps the measurements."""

    def __init__(self, space: SearchSpace, run_root: str | os.PathLike | None = None):
        self.space = space
        self.run_root = None if run_root is None else str(run_root)

    def __call__(self, trial: Any) -> dict[str, Any]:
        from composer.costs import model_cost

        space = self.space
        candidate = space.sample(trial)
        meta: dict[str, Any] = {"trial": trial.number, "train": candidate.train, "params": candidate.params,
                                "record": candidate.record}
        if candidate.invalid:
            return {"meta": {**meta, "status": "invalid", "reason": candidate.invalid}}
        spec = candidate.spec
        costs = model_cost(spec, seq_len=space.task_seq_len())
        meta.update(spec=spec.to_dict(), arch_id=arch_id(spec), stripe=stripe(spec),
                    costs={k: getattr(costs, k) for k in COST_METRICS},
                    cache_key=cache_key(arch_id(spec), candidate.train, space.task_data(), space.seed, space.repeats))
        violation = space.check_constraints(spec)
        if violation:
            meta.update(status="constraint", reason=violation)
        elif space.measured_needs():
            from composer.search.measured import measure_candidate

            values, status, reason = measure_candidate(space, spec, self.run_root)
            meta["costs"].update(values)
            if status:
                meta.update(status=status, reason=reason)
        return {"meta": meta}


def _study_searcher(space: SearchSpace, storage: Any, sampler: Any, run_root: Path | None = None) -> Any:
    from composer.search.optuna_search import StudySearch

    names = [f"objective_{i}" for i in range(len(space.objectives))]
    modes = space.modes()
    single = len(names) == 1
    return StudySearch(space=DefineByRun(space, run_root), metric=names[0] if single else names,
                       mode=modes[0] if single else modes, sampler=sampler, storage=storage, study_name=space.name)


def search(space: Any, *, name: str | None = None, runs_dir: str | os.PathLike = "runs",
           run_dir: str | os.PathLike | None = None, resume: bool = False, trials: int | None = None,
           max_concurrent: int | None = None, address: str | None = None, verbose: bool = False,
           progress: Callable[[dict[str, Any]], None] | None = None) -> SearchResult:
    """Run (or, with `resume`, continue) the search described by `space` (a path, a YAML string, a dict or a
    SearchSpace); see the module docstring. Returns the leaderboard rows, the best and consensus specs.

    Everything is checked before the run folder is written; one driver at a time works in a folder (RunLock);
    a resume is checked against the study first (composer/search/resume.py). SIGINT / SIGTERM stop the trials,
    write what finished marked partial and raise SearchInterrupted (composer/interrupt.py)."""
    started = time.time()
    run, space = resolve_run(space, name, runs_dir, run_dir, resume)
    space = space.with_overrides(trials=trials)
    if max_concurrent:
        space = space.with_overrides(resources={**space.resources, "max_concurrent": max_concurrent})
    check_search(space, address)
    interruption = Interruption("stopping the running trials and writing what finished")
    with run.lock() as lock:
        if lock.stale:
            warn_stale(run, lock.stale)
        if resume:
            verify_resume(run, space)
        else:
            run.check_new()
        start_ray(address, verbose)
        check_trial_resources(float(space.resources["cpus_per_trial"]),
                              float(space.resources.get("gpus_per_trial") or 0))
        if not resume:
            data = {**space.data, "trials": space.trials, "resources": {
                **space.data.get("resources", {}), **{k: v for k, v in space.resources.items() if v}}}
            run.create(yaml.safe_dump(data, sort_keys=False), provenance())
        study = open_study(run, space)
        rows = prepare_resume(run, study) if resume else []
        from composer.search.callbacks import Recorder

        recorder = Recorder(run, space, rows, progress=progress, show=progress is None)

        def run_trials(trial_space: SearchSpace, n: int) -> None:
            _run_tune(trial_space, run, recorder, n, interruption, verbose)

        with interruption.catch():
            strategy_of(space).drive(space, run.root, lambda: recorder.rows, run_trials,
                                     stopped=lambda: interruption.signum is not None, log=None if progress else print)
            if interruption.signum is None:
                train_consensus(run, space, recorder.rows, lambda r: _spec_of(run, r), run_trials)
        if interruption.signum is not None:
            for row in recorder.by_trial.values():
                if row["status"] == "running":
                    row.update(status="interrupted", reason=f"cut short by {interruption.name}; --resume runs it "
                                                            "again")
        result = finish(run, space, recorder.rows, study, time.time() - started, interruption.name)
    if interruption.signum is not None:
        raise SearchInterrupted(result, interruption.signum)
    return result


def warn_stale(run: RunDir, owner: dict[str, Any]) -> None:
    """A lock record left by a driver that died without releasing it (kill -9): say whose it was."""
    import socket

    from composer.runs import describe_owner

    note = f"{run.root} was left locked by {describe_owner(owner)}, which is gone; taking it over"
    if owner.get("host") not in (None, socket.gethostname()):
        note += (" (it was on another host: if that driver still runs, stop it; file locks may not reach across "
                 "hosts on a network file system)")
    print(f"note: {note}", file=sys.stderr)


def resolve_run(space: Any, name: str | None, runs_dir: str | os.PathLike, run_dir: str | os.PathLike | None,
                resume: bool) -> tuple[RunDir, SearchSpace]:
    """The run folder and the space: `run_dir` as given, else `<runs_dir>/<name or the space's name>`, a name
    that must be one folder name and stay inside `runs_dir`. A resume reads the folder's space.yaml."""
    if name is not None:
        safe_name(name, "--name")
    if resume:
        root = Path(run_dir) if run_dir else contained(runs_dir, Path(runs_dir) / (name or ""), "--name")
        run = RunDir(root)
        if not run.exists():
            raise UserError(f"nothing to resume: {run.root} holds no search (no space.yaml)")
        return run, load_space(str(run.path("space.yaml")))
    space = load_space(space)
    if run_dir:
        return RunDir(run_dir), space
    folder = name or safe_name(space.name, "name")
    return RunDir(contained(runs_dir, Path(runs_dir) / folder, "--name" if name else "name")), space


def _run_tune(space: SearchSpace, run: RunDir, recorder: Any, trials: int, interruption: Interruption,
              verbose: bool) -> None:
    import ray
    from ray import tune

    from composer.search.callbacks import tune_loggers

    cpus = float(space.resources["cpus_per_trial"])
    gpus = float(space.resources.get("gpus_per_trial") or 0)
    available = ray.cluster_resources().get("CPU", 1)
    concurrent = space.resources.get("max_concurrent") or max(1, int(available // cpus))
    context = {"run_dir": str(run.root), "task": space.task_data(), "objectives": space.objective_names(),
               "modes": space.modes(), "repeats": space.repeats, "seed": space.seed,
               "threads": max(1, int(cpus))}
    trainable = tune.with_resources(tune.with_parameters(run_trial, context=context), {"cpu": cpus, "gpu": gpus})
    sampler = make_sampler(space.strategy, space, space.seed + len(recorder.rows))
    sessions = sorted(p.name for p in run.path("tune").glob("session*")) if run.path("tune").is_dir() else []
    storage = optuna.storages.RDBStorage(run.study_url)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=_study_searcher(space, storage, sampler, run.root),
                                    scheduler=make_scheduler(space), num_samples=trials,
                                    max_concurrent_trials=concurrent, reuse_actors=True,
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(storage_path=str(run.path("tune")), name=f"session{len(sessions)}",
                                  verbose=2 if verbose else 0, callbacks=[recorder, *tune_loggers(
                                      space.data.get("logging"), run.root, space.name)],
                                  stop=tune_stopper(interruption),
                                  failure_config=tune.FailureConfig(max_failures=int(space.resources.get(
                                      "max_failures", 1))),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )
    tuner.fit()


def trial_dirname(trial: Any) -> str:
    return f"trial_{trial.config['meta']['trial']}_{trial.trial_id}"


def finish(run: RunDir, space: SearchSpace, rows: list[dict[str, Any]], study: optuna.Study,
           elapsed: float, interrupted: str | None = None) -> SearchResult:
    """Write the leaderboard, best.yaml, consensus.yaml, pareto.json and summary.json. After an interruption
    (`interrupted`: the signal's name) they hold what finished, and summary.json says so."""
    metrics = space.objective_names()
    run.write_leaderboard(rows, metrics)
    result = SearchResult(run.root, rows)
    metric, mode = metrics[0], space.modes()[0]
    volume = None
    ranked = select_top(final_rows(space, run.root, rows), metric, mode, top_k=len(rows) or 1)
    done = sum(1 for r in rows if r["status"] not in ("running", "interrupted"))
    partial = (f" (so far: the search was interrupted by {interrupted} after {done} of {space.trials} trials; "
               f"composer search --resume {run.root} continues it)") if interrupted else ""
    if ranked:
        result.best_row = ranked[0]
        result.best = _spec_of(run, ranked[0])
        write_atomic(run.path("best.yaml"), _spec_yaml(result.best, f"best of {run.name}: trial "
                                                                    f"{ranked[0]['trial']}{partial}"))
        result.consensus = make_consensus(space, run.root, rows, lambda r: _spec_of(run, r), f"{run.name}-consensus")
    if result.consensus is not None:
        write_atomic(run.path("consensus.yaml"), _spec_yaml(result.consensus, result.consensus.description
                                                            + partial))
    if len(metrics) > 1:
        by_number = {int(r["trial"]): r for r in rows}
        front = [by_number[t.number] for t in study.best_trials if t.number in by_number]
        # one row per architecture: a consensus equal to a searched trial on the front is that trial
        searched = {r.get("arch_id") for r in front if not r.get("consensus")}
        result.pareto = [r for r in front if not (r.get("consensus") and r.get("arch_id") in searched)]
        volume = hypervolume(rows, metrics, space.modes())
        write_json(run.path("pareto.json"), {"objectives": space.objectives, "trials": result.pareto,
                                             "hypervolume": volume, "interrupted": bool(interrupted)})
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    result.summary = {"name": run.name, "strategy": space.strategy["name"], "trials": len(rows), "counts": counts,
                      "planned_trials": space.trials, "interrupted": bool(interrupted),
                      "objectives": space.objectives, "best": result.best_row,
                      **({"hypervolume": volume} if len(metrics) > 1 else {}),
                      **({"measure": dataclasses.asdict(space.measure)} if space.measured_needs() else {}),
                      "consensus_arch_id": arch_id(result.consensus) if result.consensus else None,
                      "consensus": consensus_summary(space, run.root, rows, result.consensus),
                      "elapsed_s": round(elapsed, 1), "provenance": provenance()}
    if interrupted:
        result.summary.update(signal=interrupted, resume=f"composer search --resume {run.root}",
                              partial=f"best and consensus are from the {done} trials that finished before "
                                      f"{interrupted}; {space.trials - done} of {space.trials} are still to run")
    write_json(run.path("summary.json"), result.summary)
    return result


def _spec_of(run: RunDir, row: dict[str, Any]) -> Any:
    return load_spec(str(run.trial_dir(int(row["trial"])) / "spec.yaml"))


def _spec_yaml(spec: Any, comment: str) -> str:
    from composer.spec_parse import dump_spec

    return f"# {comment}\n" + dump_spec(spec)
