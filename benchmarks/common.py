"""Shared helpers for benchmark scripts: timing loops, the text corpus, writing results."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parent.parent
TINY_SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"   # ../shared/data from the repo root
VAL_FRACTION = 0.1          # nanoGPT's split: the last tenth of the text validates


def default_data() -> str | None:
    """Tiny Shakespeare when it is there (it is never downloaded), else None: the text task's shipped sample."""
    return str(TINY_SHAKESPEARE) if TINY_SHAKESPEARE.is_file() else None


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    """`--data FILE` for benchmarks that train on text (default: Tiny Shakespeare when present)."""
    parser.add_argument("--data", default=default_data(),
                        help="text file, folder or glob for the text task (default: ../shared/data/tinyshakespeare.txt "
                             "from the repo root when it exists, else the shipped sample)")


def text_task(data: str | None, **params: object) -> dict:
    """The text task's settings as a ladder/space mapping: `data` (None: the shipped sample) with nanoGPT's split."""
    return {"name": "text", **({} if data is None else {"data": str(data)}), "val_fraction": VAL_FRACTION, **params}


def machine() -> dict:
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "cuda": torch.cuda.is_available()}


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machine": machine(), **data}, indent=2))
    os.replace(tmp, path)
    return path


def alternate(fns: dict[str, Callable[[], None]], rounds: int, steps: int, warmup: int = 2,
              clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Time `steps` calls of each function, alternating between them for `rounds` rounds (seconds/step).

    `clock`: wall time by default; `time.process_time` counts only this process's CPU time, which other
    processes on a shared machine disturb far less (with one torch thread it equals wall time when quiet)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = clock()
            for _ in range(steps):
                fn()
            times[name].append((clock() - start) / steps)
    return times


@dataclass(frozen=True)
class Job:
    """One training run of a benchmark: `spec` on `task` ({"name": ..., **params}) within `budget`."""

    kind: str                  # what the run is for (the target, a proxy, a baseline)
    arch: str
    seed: int
    spec: dict[str, Any]
    task: dict[str, Any]
    budget: dict[str, int]
    settings: dict[str, Any]   # training settings (composer/training/config.py)

    @property
    def key(self) -> str:
        return f"{self.kind}|{self.arch}|{self.seed}"


_TASKS: dict[str, Any] = {}
KEEP = ("val_loss", "accuracy", "params", "non_embedding_params", "tokens", "step", "tokens_per_s")


def run_job(job: Job) -> dict[str, Any]:
    """Train one job with one torch thread (tasks are built once per process); its final metrics, with the CPU
    seconds (this process's CPU time: less dependent on the machine's load than wall time) and wall seconds."""
    from composer.tasks import get_task
    from composer.trainer import train

    key = json.dumps(job.task, sort_keys=True)
    if key not in _TASKS:
        _TASKS[key] = get_task(job.task["name"], **{k: v for k, v in job.task.items() if k != "name"})
    cpu, wall = time.process_time(), time.perf_counter()
    result = train(job.spec, _TASKS[key], job.budget, seed=job.seed, threads=1, **job.settings)
    return {"status": result.status, **{k: result.metrics[k] for k in KEEP if k in result.metrics},
            "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}


def run_jobs(jobs: list[Job], path: Path, workers: int) -> dict[str, dict[str, Any]]:
    """Run the jobs not yet in `path` (a JSON object key -> row) in `workers` processes, writing every row as it
    finishes (atomically), so a killed benchmark resumes where it stopped. Returns all rows."""
    import concurrent.futures as cf
    import multiprocessing

    from composer.atomic import write_json

    done: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.is_file() else {}
    todo = [j for j in jobs if j.key not in done]
    print(f"{len(jobs)} runs, {len(jobs) - len(todo)} already done", flush=True)
    if not todo:
        return done
    start = time.perf_counter()
    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_job, job): job for job in todo}
        for i, future in enumerate(cf.as_completed(futures)):
            job = futures[future]
            metrics = future.result()
            done[job.key] = {"kind": job.kind, "arch": job.arch, "seed": job.seed, "budget": job.budget,
                             "metrics": metrics}
            write_json(path, done)
            score = metrics.get("val_loss") if job.task["name"] == "text" else metrics.get("accuracy")
            print(f"{time.perf_counter() - start:7.0f}s [{i + 1}/{len(todo)}] {job.key}: {score:.4f} "
                  f"({metrics['cpu_s']:.0f} CPU s, load {os.getloadavg()[0]:.1f})", flush=True)
    return done


class Timings:
    """Wall seconds per stage of a resumable benchmark, added up over its invocations in `path` (a resumed
    benchmark counts every part it ran), each invocation's stage with its start and the 1-minute load around it."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {"stages": {}, "runs": []}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        from composer.atomic import write_json

        load, start = os.getloadavg()[0], time.time()
        yield
        seconds = time.time() - start
        self.data["stages"][name] = self.data["stages"].get(name, 0.0) + seconds
        self.data["runs"].append({"stage": name, "wall_s": round(seconds, 1), "started": time.ctime(start),
                                  "load_1min_start_end": [round(load, 1), round(os.getloadavg()[0], 1)]})
        write_json(self.path, self.data)

    @property
    def total_s(self) -> float:
        return round(sum(self.data["stages"].values()), 1)
