"""The Ray cluster a search (or a ladder) runs on: an embedded one on this machine by default, or the cluster at
`--address` / RAY_ADDRESS.

- An embedded cluster goes down with its driver, kill -9 included: a watchdog process (ray_watchdog.py) kills
  what is left of it and removes its session folder (kept with `verbose`, for Ray's logs) when the driver ends,
  and removes the session folders of Composer drivers that died before.
- A cluster address is probed first (a TCP connection, a few seconds at most): `ray.init` would wait for a dead
  address without end.
- A trial that asks for more CPUs or GPUs than any node has would wait without end: refused before anything is
  written.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from composer.errors import UserError

QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0", "RAY_AIR_NEW_OUTPUT": "0",
             "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_TRAIN_V2_ENABLED": "1",
             "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "60",
             # trials run in the driver's folder, so relative paths in a space (`data:`, `tokenizer:`) mean
             # what they mean where `composer search` was started (Tune would move each into its trial folder)
             "RAY_CHDIR_TO_TRIAL_DIR": "0"}
CLUSTER_ENV = ("RAY_TRAIN_V2_ENABLED", "RAY_CHDIR_TO_TRIAL_DIR", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")
PROBE_TIMEOUT_S = 5.0
WATCHDOG = Path(__file__).with_name("ray_watchdog.py")


class _Watchdog:
    """The one watchdog of this process, started before its first embedded cluster."""

    process: subprocess.Popen | None = None
    pipe: int | None = None

    @classmethod
    def ensure(cls, keep_sessions: bool) -> None:
        if cls.process is not None and cls.process.poll() is None:
            return
        import ray

        read, write = os.pipe()       # not inherited by Ray's processes: only the driver holds `write`
        cls.process = subprocess.Popen([sys.executable, str(WATCHDOG), str(os.getpid()), str(Path(ray.__file__).parent),
                                        "keep" if keep_sessions else "drop"], stdin=read,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(read)
        cls.pipe = write


def embedded(address: str | None) -> bool:
    """Whether `address` (with RAY_ADDRESS) means a cluster started here for this driver."""
    return not (address or os.environ.get("RAY_ADDRESS"))


def start_ray(address: str | None, verbose: bool) -> None:
    """Start the embedded cluster, or join the one at `address` (after a probe); nothing when Ray is already
    initialised in this process."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    if not verbose:      # trial errors are in the leaderboard; Tune's tracebacks only with --verbose
        for name in ("ray", "ray.tune", "ray.train"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is not None:
        probe_address(address)
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": verbose,
                              "logging_level": logging.INFO if verbose else logging.ERROR}
    if address is not None:
        # the nodes of a cluster started with `ray start` have their own environment: the trials and workers this
        # driver starts there get these settings with the job (Ray Train V2, trials in the driver's folder)
        kwargs["runtime_env"] = {"env_vars": {key: os.environ[key] for key in CLUSTER_ENV if key in os.environ}}
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as e:
            raise UserError(f"cannot join a Ray cluster at {address}: {e}", path="--address") from None
        return
    _Watchdog.ensure(keep_sessions=verbose)
    ray.init(address="local", num_cpus=os.cpu_count() or 1, **kwargs)


def probe_address(address: str) -> None:
    """A UserError within seconds when nothing listens at `address` (host:port, or ray://host:port)."""
    if address == "auto" and os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]          # what ray.init will join
    if address in ("auto", "local"):
        return                       # Ray answers these at once (`auto` with no cluster: a ConnectionError)
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"expected host:port (or auto), got {address!r}", path="--address")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise UserError(f"no Ray cluster answers at {address} ({reason}); start one with `ray start --head`, or "
                        "leave out --address for a cluster on this machine", path="--address") from None


def check_trial_resources(cpus: float, gpus: float, cpus_field: str = "resources.cpus_per_trial",
                          gpus_field: str = "resources.gpus_per_trial") -> None:
    """A trial must fit on one node of the running cluster, else Tune would wait for it without end."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    most_cpus = max((n.get("CPU", 0) for n in nodes), default=0)
    most_gpus = max((n.get("GPU", 0) for n in nodes), default=0)
    if cpus > most_cpus:
        raise UserError(f"a trial asks for {cpus:g} CPUs but the largest node of the cluster has {most_cpus:g}",
                        path=cpus_field)
    if gpus > most_gpus:
        raise UserError(f"a trial asks for {gpus:g} GPUs but the largest node of the cluster has {most_gpus:g}",
                        path=gpus_field)


def check_local_resources(cpus: float, gpus: float, cpus_field: str = "resources.cpus_per_trial",
                          gpus_field: str = "resources.gpus_per_trial") -> None:
    """The same check for the embedded cluster, before it starts: it gets this machine's CPUs and GPUs."""
    available = os.cpu_count() or 1
    if cpus > available:
        raise UserError(f"a trial asks for {cpus:g} CPUs but this machine has {available}", path=cpus_field)
    if gpus:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus > count:
            raise UserError(f"a trial asks for {gpus:g} GPUs but this machine has {count}", path=gpus_field)


def check_workers(workers: int, cpus: float, gpus: float, field: str = "workers") -> None:
    """Data-parallel workers, each holding `cpus` CPUs and `gpus` GPUs, spread over the nodes of the running
    cluster: each must fit on a node and all of them in the cluster, else Ray Train would wait for them without
    end. A UserError naming `field` otherwise."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    _check_workers(workers, cpus, gpus, [(n.get("CPU", 0), n.get("GPU", 0)) for n in nodes], "the cluster", field)


def check_local_workers(workers: int, cpus: float, gpus: float, field: str = "workers") -> None:
    """The same check for the embedded cluster, before it starts: it gets this machine's CPUs and GPUs."""
    count = 0
    if gpus:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    _check_workers(workers, cpus, gpus, [(os.cpu_count() or 1, count)], "this machine", field)


def _check_workers(workers: int, cpus: float, gpus: float, nodes: list[tuple[float, float]], where: str,
                   field: str) -> None:
    if gpus:
        total = sum(int(g // gpus) for _, g in nodes)
        if workers > total:
            have = sum(g for _, g in nodes)
            raise UserError(f"{workers} workers need {workers * gpus:g} GPUs ({gpus:g} each) but {where} has "
                            f"{have:g}", path=field)
    if cpus > max((c for c, _ in nodes), default=0):
        raise UserError(f"a worker asks for {cpus:g} CPUs but the largest node of {where} has "
                        f"{max((c for c, _ in nodes), default=0):g}", path=field)
    total = sum(int(c // cpus) for c, _ in nodes)
    if workers > total:
        raise UserError(f"{workers} workers need {workers * cpus:g} CPUs ({cpus:g} each) but {where} has "
                        f"{sum(c for c, _ in nodes):g}", path=field)


def split_trial(cpus: float, gpus: float, workers: int, cpus_field: str = "resources.cpus_per_trial",
                gpus_field: str = "resources.gpus_per_trial") -> tuple[int, int]:
    """(CPUs, GPUs) of each data-parallel worker of a trial: the trial's own split evenly over its `workers`, in
    whole CPUs (at least one) and whole GPUs (a GPU serves one worker); a UserError naming the field otherwise."""
    if workers == 1:
        return max(1, int(cpus)), int(gpus)
    if cpus < workers or cpus % workers:
        raise UserError(f"{cpus:g} CPUs per trial do not split into whole CPUs over {workers} workers per trial: "
                        f"give a multiple of {workers}", path=cpus_field)
    if gpus % workers:
        raise UserError(f"{gpus:g} GPUs per trial do not split into whole GPUs over {workers} workers per trial (each "
                        f"worker takes its own): give 0 or a multiple of {workers}", path=gpus_field)
    return int(cpus // workers), int(gpus // workers)
