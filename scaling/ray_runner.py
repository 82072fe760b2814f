"""Ladder trials as Ray tasks: the same cluster set-up as `composer search` (embedded by default,
`--address auto` / RAY_ADDRESS to join a cluster), each trial a task holding `threads` CPUs (with
`workers_per_trial`, a task driving a Ray Train run whose workers hold them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from scaling.ladder import Ladder, Trial, describe_trial, train_trial, trial_config, trial_tracking


class RayRunner:
    """Train ladder trials in parallel on Ray; results arrive as trials finish. `max_concurrent` caps the
    trials in flight (default: as many as the cluster's CPUs allow)."""

    def __init__(self, address: str | None = None, threads: int = 1, verbose: bool = False,
                 log: Callable[[str], None] | None = None, max_concurrent: int | None = None):
        self.address = address
        self.threads = threads
        self.verbose = verbose
        self.log = log or (lambda message: None)
        self.max_concurrent = max_concurrent

    def run(self, trials: list[Trial], ladder: Ladder) -> Iterator[tuple[Trial, dict[str, Any]]]:
        import ray

        from composer.ray_cluster import (
            check_local_resources,
            check_local_workers,
            check_trial_resources,
            check_workers,
            embedded,
            start_ray,
        )

        config = trial_config(ladder, self.threads)
        workers, each = config.parallel.workers, config.runtime.threads or 1
        if embedded(self.address):
            if workers > 1:
                check_local_workers(workers, each, 0, field="workers_per_trial")
            else:
                check_local_resources(self.threads, 0, cpus_field="--threads")
        start_ray(self.address, self.verbose)
        if workers > 1:
            check_workers(workers, each, 0, field="workers_per_trial")
        else:
            check_trial_resources(self.threads, 0, cpus_field="--threads")
        # a data-parallel trial's task holds nothing: its Ray Train workers hold the trial's CPUs, and the
        # number in flight keeps them within the cluster
        remote = ray.remote(num_cpus=self.threads if workers == 1 else 0, max_retries=1)(train_trial)
        limit = self.max_concurrent
        if workers > 1:
            fits = max(1, int(ray.cluster_resources().get("CPU", 1) // (workers * each)))
            limit = fits if limit is None else min(limit, fits)
        waiting = list(trials)
        pending: dict[Any, Trial] = {}
        done = 0
        while waiting or pending:
            while waiting and (limit is None or len(pending) < limit):
                trial = waiting.pop(0)
                pending[remote.remote(trial, ladder.task, config, trial_tracking(ladder, trial))] = trial
            ready, _ = ray.wait(list(pending), num_returns=1)
            trial = pending.pop(ready[0])
            self.log(describe_trial(trial, done, len(trials)) + " done")
            done += 1
            yield trial, ray.get(ready[0])
