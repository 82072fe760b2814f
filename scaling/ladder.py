"""Ladders: train chosen architectures at several sizes, fit a scaling law per architecture, judge transfer.

A ladder file (its format and checks: scaling/ladder_parse.py, `load_ladder`) names architectures, parameter
targets, a token budget and seeds; `plan` fits every architecture to every size.

Trials run through a `TrialRunner`. `LocalRunner` trains them one after another in this process with
`composer.trainer.train`; it is the seam where the Ray search runner plugs in. Every finished trial is written
to `runs/<name>/ladder.json` at once (atomically), and a rerun skips trials already there, so a killed ladder
resumes. With `logging:` (or `composer ladder --log ...`) each trial also logs its settings and every
evaluation to those trackers in `runs/<name>/trials/<arch>-<size>-<budget>-s<seed>/`. After the trials:
per-architecture fits of L(N) (and of L(N, D) when budgets vary), rank transfer from the smallest size to each
larger one with the seed noise floor, and a plot.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from composer.atomic import write_atomic
from composer.errors import UserError
from composer.fields import option
from composer.provenance import provenance
from composer.runs import RunLock, contained, safe_name
from composer.spec import ArchSpec
from composer.tasks import TaskRef
from composer.training.config import TrainConfig
from scaling.laws import fit_joint_law, fit_power_law, plot_fits, predict
from scaling.rules import Count, Method, choose_method, fit_to_params, param_count
from scaling.transfer import transfer_report


@dataclass(frozen=True)
class Trial:
    """One training run of a ladder."""

    arch: str
    size: str                   # the size label as written (e.g. "100K")
    target: int                 # the parameter target
    seed: int
    tokens: int
    budget: str                 # "tokens_per_param", "tokens" or the FLOP budget
    spec: ArchSpec = field(compare=False, repr=False)
    lr: float | None = None     # this trial's learning rate (None: the ladder's `train` setting)

    @property
    def key(self) -> str:
        key = f"{self.arch}|{self.size}|{self.budget}|{self.seed}"
        return key if self.lr is None else f"{key}|lr={self.lr:.6g}"


@dataclass
class Ladder:
    name: str
    task: TaskRef
    architectures: dict[str, ArchSpec]
    sizes: list[tuple[str, int]]
    count: Count = option("non_embedding", "which parameters a size counts")
    method: Method = option("auto", "the depth rule (scaling.rules.choose_method)")
    tolerance: float = option(0.05, "how far (relative) a fitted size may land from its target", gt=0, lt=1)
    budget: dict[str, Any] = field(default_factory=lambda: {"tokens_per_param": 20})
    seeds: list[int] = field(default_factory=lambda: [0])
    train: TrainConfig = field(default_factory=TrainConfig)     # every trial's settings; the ladder sets budget, seed
    predict_at: int | None = None
    loss_metric: str = "val_loss"
    bootstrap: int = 500
    logging: list[str] = field(default_factory=list)       # tracker backends (composer/tracking/)
    workers_per_trial: int = option(1, "data-parallel workers each trial trains on (Ray Train); the trial's CPUs "
                                    "(the runner's threads) are split evenly over them", ge=1, le=4096)
    run_dir: str | None = None                              # set by run_ladder: the folder its trials log under
    task_vocabulary: tuple[str, ...] = ()   # set by the parser: architectures that state no vocab_size (the task's)


# ------------------------------------------------------------------------------------------------
# Planning


def plan(ladder: Ladder, seq_len: int | None = None, vocab_size: int | None = None) -> list[Trial]:
    """Every trial: each architecture fitted to each size, with its token budget(s) and seeds. `vocab_size`: the
    task's, given to the architectures that state none (a spec that states another is refused when it trains)."""
    from composer.costs import model_cost

    trials = []
    for arch, spec in ladder.architectures.items():
        if vocab_size is not None and arch in ladder.task_vocabulary:
            spec = spec.replace(vocab_size=vocab_size)
        method = choose_method(spec, ladder.method)   # one method for all sizes of an architecture
        for label, target in ladder.sizes:
            try:
                sized = fit_to_params(spec, target, ladder.tolerance, method=method, count=ladder.count)
            except UserError as e:
                raise UserError(f"architecture {arch!r} at size {label}: {e}") from None
            n = param_count(sized, ladder.count)
            train_flops = model_cost(sized, seq_len=seq_len).train_flops_per_token
            for budget_label, tokens in _token_budgets(ladder.budget, n, train_flops):
                for seed in ladder.seeds:
                    trials.append(Trial(arch, label, target, seed, tokens, budget_label, sized))
    return trials


def _token_budgets(budget: dict[str, Any], n_params: int, train_flops: float) -> list[tuple[str, int]]:
    if "tokens_per_param" in budget:
        raw = [("tokens_per_param", budget["tokens_per_param"] * n_params)]
    elif "tokens" in budget:
        raw = [("tokens", budget["tokens"])]
    else:
        raw = [(f"{c:.3g}", c / train_flops) for c in budget["flops"]]
    lo, hi = budget.get("min_tokens", 1), budget.get("max_tokens", float("inf"))
    return [(label, int(min(max(t, lo), hi))) for label, t in raw]


# ------------------------------------------------------------------------------------------------
# Running


class TrialRunner(Protocol):
    def run(self, trials: list[Trial], ladder: Ladder) -> Iterator[tuple[Trial, dict[str, Any]]]:
        """Train the trials (in any order) and yield each with its final metrics as it finishes."""


def trial_config(ladder: Ladder, threads: int | None, field: str = "--threads") -> TrainConfig:
    """The settings every trial of `ladder` trains with on a runner giving each trial `threads` CPUs: with
    `workers_per_trial`, split evenly over the workers (default one each)."""
    from composer.ray_cluster import split_trial

    workers = ladder.workers_per_trial
    if workers == 1:
        return ladder.train.with_settings(threads=threads) if threads else ladder.train
    each, _ = split_trial(threads or workers, 0, workers, cpus_field=field)
    return ladder.train.with_settings(threads=each, workers=workers)


class LocalRunner:
    """Trials on this machine through `composer.trainer.train`: in this process, or in `workers` processes
    (each trains with `threads` torch threads; results arrive as trials finish)."""

    def __init__(self, workers: int = 1, threads: int | None = None,
                 log: Callable[[str], None] | None = None):
        self.workers = workers
        self.threads = threads
        self.log = log or (lambda message: None)

    def run(self, trials: list[Trial], ladder: Ladder) -> Iterator[tuple[Trial, dict[str, Any]]]:
        if self.workers > 1 and ladder.workers_per_trial > 1:
            raise UserError(f"data-parallel trials (workers_per_trial {ladder.workers_per_trial}) train one at a "
                            "time here, each on its own workers: leave out --workers, or use the Ray runner",
                            path="--workers")
        config = trial_config(ladder, self.threads)
        jobs = [(trial, ladder.task, config, trial_tracking(ladder, trial)) for trial in trials]
        if self.workers <= 1:
            for i, job in enumerate(jobs):
                self.log(describe_trial(job[0], i, len(jobs)))
                yield job[0], train_trial(*job)
            return
        import concurrent.futures as cf
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(self.workers, mp_context=context) as pool:
            futures = {pool.submit(train_trial, *job): job[0] for job in jobs}
            for i, future in enumerate(cf.as_completed(futures)):
                trial = futures[future]
                self.log(describe_trial(trial, i, len(jobs)) + " done")
                yield trial, future.result()


def check_trials_fit(trials: list[Trial], ladder: Ladder, task: Any, workers: int = 1) -> None:
    """Before anything trains: a UserError naming the first trial whose estimated memory, times the `workers`
    training at once, exceeds this machine's available memory (composer/training/memory.py)."""
    from composer.tasks import TaskSuite
    from composer.training.memory import MemoryLimitError, check_memory
    from composer.training.runtime import resolve_device
    from composer.training.setup import fit_spec

    config = ladder.train
    if not config.runtime.memory_check or isinstance(task, TaskSuite):     # a suite's members check themselves
        return
    device = resolve_device(config.runtime.device)
    for arch, size in dict.fromkeys((t.arch, t.size) for t in trials):
        spec = next(t.spec for t in trials if (t.arch, t.size) == (arch, size))
        try:
            check_memory(fit_spec(spec, task), task.seq_len, config.runtime.batch_size,
                         config.evaluation.eval_batch_size, device, concurrent=max(1, workers))
        except MemoryLimitError as e:
            raise MemoryLimitError(f"architecture {arch!r} at size {size}: {e.message}", path="memory") from None


def describe_trial(trial: Trial, i: int, n: int) -> str:
    lr = "" if trial.lr is None else f" lr {trial.lr:.3g}"
    return f"[{i + 1}/{n}] {trial.arch} size {trial.size} seed {trial.seed}{lr}: {trial.tokens:,} tokens"


def trial_folder(trial: Trial) -> str:
    """The trial's folder name under `<run_dir>/trials/`: arch-size-budget-s<seed>[-lr<lr>], made safe."""
    lr = "" if trial.lr is None else f"-lr{trial.lr:.6g}"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{trial.arch}-{trial.size}-{trial.budget}-s{trial.seed}{lr}")
    return safe_name(name.strip("._") or "trial", "logging")


def trial_tracking(ladder: Ladder, trial: Trial) -> tuple[list[str], str] | None:
    """What `train_trial` needs to log the trial: (backends, folder); None without `logging` or a run folder."""
    if not ladder.logging or ladder.run_dir is None:
        return None
    return list(ladder.logging), str(Path(ladder.run_dir) / "trials" / trial_folder(trial))


def train_trial(trial: Trial, task_config: TaskRef, config: TrainConfig,
                tracking: tuple[list[str], str] | None = None) -> dict[str, Any]:
    """Train one trial (a module-level function so worker processes can run it); its final metrics. With
    `tracking` (backends, folder) the trial's settings and every evaluation go to those trackers."""
    from composer.trainer import train

    if trial.lr is not None:
        config = config.with_settings(lr=trial.lr)
    task = task_config.build()
    tracker, callback = None, None
    if tracking is not None:
        from composer.tracking import evaluation_metrics, open_trackers

        backends, folder = tracking
        params = {"trial": {k: v for k, v in asdict(trial).items() if k != "spec"}, "task": task_config.flat(),
                  "train": config.changed(), "spec": trial.spec.to_dict()}
        tracker = open_trackers(backends, folder, params, name=Path(folder).name, path="logging")

        def callback(m: dict[str, Any]) -> None:
            if isinstance(m.get("step"), int):
                tracker.log_metrics(evaluation_metrics(m), m["step"])
    try:
        result = train(trial.spec, task, {"tokens": trial.tokens}, config, seed=trial.seed, callback=callback)
    finally:
        if tracker is not None:
            tracker.close()
    return {**result.metrics, "status": result.status}


def run_ladder(ladder: Ladder, out_root: str | os.PathLike = "runs", runner: TrialRunner | None = None,
               log: Callable[[str], None] | None = None, trials: list[Trial] | None = None,
               report: bool = True) -> dict[str, Any]:
    """Run (or resume) a ladder; returns and writes `runs/<name>/ladder.json` with results and fits.

    `trials` replaces the ladder's own plan (a caller that sizes its architectures itself and analyses the trials
    itself, e.g. confirm, which also passes `report=False`: no fits, transfer or plot). The folder
    `<out_root>/<name>` is locked while the ladder runs (composer.runs.RunLock)."""
    log = log or (lambda message: None)
    out_dir = contained(out_root, Path(out_root) / safe_name(ladder.name, "name"), "name")
    with RunLock(out_dir):          # one process at a time works in a ladder's folder
        return _run_ladder(replace(ladder, run_dir=str(out_dir)), out_dir, runner, log, trials, report)


def _run_ladder(ladder: Ladder, out_dir: Path, runner: TrialRunner | None, log: Callable[[str], None],
                trials: list[Trial] | None, report: bool = True) -> dict[str, Any]:
    from composer.tasks import TaskSuite

    path = out_dir / "ladder.json"
    done: dict[str, dict[str, Any]] = {}
    if path.is_file():
        try:
            done = {r["key"]: r for r in json.loads(path.read_text(encoding="utf-8")).get("trials", [])}
        except (ValueError, UnicodeDecodeError, AttributeError, KeyError, TypeError) as e:
            raise UserError(f"{path} is damaged ({type(e).__name__}: {e}); move it away to start the ladder "
                            "afresh") from None
    task = ladder.task.build()
    seq_len, vocab_size = (None, None) if isinstance(task, TaskSuite) else (task.seq_len, task.vocab_size)
    trials = plan(ladder, seq_len=seq_len, vocab_size=vocab_size) if trials is None else trials
    todo = [t for t in trials if t.key not in done]
    log(f"ladder {ladder.name}: {len(trials)} trials, {len(trials) - len(todo)} already done")
    rows = dict(done)
    runner = runner or LocalRunner(log=log)
    if isinstance(runner, LocalRunner):
        check_trials_fit(todo, ladder, task, runner.workers)
    for trial, metrics in runner.run(todo, ladder):
        rows[trial.key] = trial_row(trial, metrics, ladder)
        _write_json(path, {"ladder": ladder_summary(ladder), "trials": list(rows.values())})
    if not report:
        if not todo and not path.is_file():
            _write_json(path, {"ladder": ladder_summary(ladder), "trials": list(rows.values())})
        return {"ladder": ladder_summary(ladder), "trials": list(rows.values())}
    analysis = analyse(ladder, list(rows.values()), out_dir)
    _write_json(path, {"ladder": ladder_summary(ladder), "trials": list(rows.values()), **analysis})
    return {"ladder": ladder_summary(ladder), "trials": list(rows.values()), **analysis}


def trial_row(trial: Trial, metrics: dict[str, Any], ladder: Ladder) -> dict[str, Any]:
    """A finished trial as ladder.json holds it: the trial, its counted parameters, spec and metrics (those on
    the ladder's `final_splits` included)."""
    keep = (ladder.loss_metric, "accuracy", "status", "params", "non_embedding_params", "active_params",
            "flops_per_token", "train_flops_per_token", "state_bytes", "tokens", "step", "tokens_per_s",
            "train_time_s")
    held = tuple(f"{split}_" for split in ladder.train.evaluation.final_splits or ())
    row = {k: v for k, v in asdict(trial).items() if k != "spec" and not (k == "lr" and v is None)}
    row.update(key=trial.key, d_model=trial.spec.d_model, n_params=param_count(trial.spec, ladder.count),
               spec=trial.spec.to_dict(),
               metrics={k: v for k, v in metrics.items() if k in keep or (held and k.startswith(held))})
    return row


def ladder_summary(ladder: Ladder) -> dict[str, Any]:
    return {"name": ladder.name, "task": ladder.task.flat(), "architectures": list(ladder.architectures),
            "sizes": [label for label, _ in ladder.sizes], "count": ladder.count, "method": ladder.method,
            "budget": ladder.budget, "seeds": ladder.seeds, "train": ladder.train.changed(),
            "predict_at": ladder.predict_at, "provenance": provenance()}


def analyse(ladder: Ladder, rows: Iterable[dict[str, Any]], out_dir: Path | None = None) -> dict[str, Any]:
    """Fits per architecture, predictions, rank transfer and noise floor from finished trial rows."""
    rows = [r for r in rows if r["metrics"].get("status") != "diverged"
            and isinstance(r["metrics"].get(ladder.loss_metric), (int, float))
            and math.isfinite(r["metrics"][ladder.loss_metric])]
    fits, points, out_fits = {}, {}, {}
    for arch in ladder.architectures:
        mine = [r for r in rows if r["arch"] == arch]
        n = [r["n_params"] for r in mine]
        loss = [r["metrics"][ladder.loss_metric] for r in mine]
        points[arch] = (n, loss)
        if len(set(n)) < 3:
            continue
        fit = fit_power_law(n, loss, n_boot=ladder.bootstrap)
        fits[arch] = fit
        entry = fit.as_dict()
        if ladder.predict_at:
            value, lo, hi = predict(fit, ladder.predict_at)
            entry["prediction"] = {"n_params": ladder.predict_at, "loss": value, "interval": [lo, hi]}
        tokens = [r["tokens"] for r in mine]
        if len(set(tokens)) > 1 and len(mine) >= 5 and "flops" in ladder.budget:
            entry["joint"] = fit_joint_law(n, tokens, loss).as_dict()
        out_fits[arch] = entry
    report: dict[str, Any] = {"fits": out_fits}
    labels = [label for label, _ in ladder.sizes]
    losses: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        losses.setdefault(r["arch"], {}).setdefault(r["size"], []).append(r["metrics"][ladder.loss_metric])
    complete = [s for s in labels if sum(1 for a in losses if losses[a].get(s)) >= 2]
    if len(complete) >= 2:
        try:
            report["transfer"] = transfer_report(losses, complete)
        except ValueError as e:
            report["transfer"] = {"error": str(e)}
    if out_dir is not None and points and any(points.values()):
        plot = Path(out_dir) / "fits.png"
        plot_fits({a: p for a, p in points.items() if p[0]}, fits, str(plot), ladder.predict_at, ladder.name)
        report["plot"] = str(plot)
    return report


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=1, default=float))
