"""A search's parts built and checked before anything is written: the sampler (strategy and its options), the
scheduler (and its options), the objectives (each a metric the trials really report), the resources (a trial
must fit on this machine's embedded cluster) and the address of a cluster to join (something must answer
there). `check_search` runs them all; `composer search --dry-run` runs it too."""

from __future__ import annotations

import math
import os
from typing import Any

from composer.errors import UserError
from composer.names import close_matches, suggestion
from composer.search.space import SearchSpace
from composer.search.strategies import make_sampler, strategy_of

# the costs every trial reports (DefineByRun), and what every evaluation of a single task adds to the task's
# own metrics (composer/training/evaluate.py; tests/test_search_guard.py holds the two equal)
COST_METRICS = ("params", "active_params", "flops_per_token", "state_bytes")
RUN_METRICS = ("non_embedding_params", "train_flops_per_token", "train_loss", "tokens", "tokens_per_s",
               "train_time_s", "peak_memory_bytes")


def evaluations_per_trial(space: SearchSpace) -> int | None:
    """How many evaluations a full-budget trial reports (ASHA's max_t), when the budget says."""
    from composer.tasks import TaskSuite, get_task
    from composer.training.config import TrainConfig, eval_interval

    train = space.train
    if any(not isinstance(train.get(k), (int, float, type(None))) for k in ("steps", "tokens", "eval_every",
                                                                            "batch_size")):
        return None
    task = get_task(space.task)
    seq_len = space.task_seq_len() if isinstance(task, TaskSuite) else task.seq_len
    limits = [train["steps"]] if train.get("steps") else []
    if train.get("tokens"):
        batch_size = train.get("batch_size", TrainConfig().runtime.batch_size)
        limits.append(math.ceil(train["tokens"] / (batch_size * seq_len)))
    if not limits or train.get("seconds"):
        return None
    steps = min(limits)
    return math.ceil(steps / eval_interval(train.get("eval_every"), steps))


def make_scheduler(space: SearchSpace) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    options = dict(space.scheduler)
    name = options.pop("name")
    if name in ("fifo", "none"):
        if options:
            raise UserError(f"scheduler {name!r} takes no options, got {', '.join(map(str, options))}",
                            path="scheduler")
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
    except (TypeError, AssertionError, ValueError) as e:
        raise UserError(f"bad scheduler options: {e}", path="scheduler") from None


def reported_metrics(space: SearchSpace) -> tuple[str, ...]:
    """Every metric a trial of `space` reports: the task's own (its `loss` named `val_loss`), the costs, and
    for a single task the run's progress and speed (a suite reports its accuracies only)."""
    from composer.tasks import TaskSuite, get_task

    task = get_task(space.task)
    own = tuple("val_loss" if m == "loss" else m for m in task.metrics)
    if isinstance(task, TaskSuite):
        return own + COST_METRICS
    return own + COST_METRICS + RUN_METRICS


def check_objectives(space: SearchSpace) -> None:
    known = reported_metrics(space)
    for i, objective in enumerate(space.objectives):
        if objective.get("context") is not None:      # measured before training (checked when the space was read)
            continue
        if objective["metric"] not in known:
            hint = f"{suggestion(objective['metric'], known)} " if close_matches(objective["metric"], known) else ""
            raise UserError(f"trials on task {space.task.name} do not report {objective['metric']!r}; {hint}"
                            f"they report {', '.join(known)}", path=f"objectives[{i}].metric")


def check_search(space: SearchSpace, address: str | None = None) -> None:
    """Everything that can be checked before a run folder is written (and before Ray starts); a UserError
    naming the field."""
    from composer.ray_cluster import check_local_resources, embedded, probe_address

    if space.measured_needs():
        from composer.measure import check_device

        check_device(space.measure, "measure.device")
    make_sampler(space.strategy, space, space.seed)
    strategy_of(space).validate(space)
    make_scheduler(space)
    check_objectives(space)
    if not embedded(address):
        probe_address(address or os.environ["RAY_ADDRESS"])
    else:
        check_local_resources(float(space.resources["cpus_per_trial"]),
                              float(space.resources.get("gpus_per_trial") or 0))
