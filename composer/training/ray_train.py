"""Starting a data-parallel run (`train(..., workers=N)`, `composer train --workers N`) and driving it: the checks
made before anything starts, Ray Train's TorchTrainer over the workers (composer/training/data_parallel.py), and
the driver's side of the run, which keeps the single-process contract: the caller's `on_step` and `callback` are
called here, and the output folder gets the same spec.yaml, metrics.jsonl and checkpoint/.

Checked before anything starts, each a one-line UserError naming the setting: `fsdp` needs workers >= 2;
`batch_size` must split evenly over the workers; a GPU run takes one GPU per worker (`device cuda`, not
`cuda:N`); the workers (each `threads` CPUs, default 1, and a GPU on CUDA) must fit the cluster, or this machine
before the embedded cluster starts; the output folder, and a checkpoint found there or in Ray's storage, must
belong to this run (training/fingerprint.py); the memory estimate must fit when the cluster is this machine.

Storage: Ray Train keeps the run's checkpoints in `storage` (default OUT/ray_train; on a cluster of several
machines, a folder every node reaches or a URI), and restores a run by that storage and its name. A worker that
dies makes Ray Train restart the worker group from the latest checkpoint, up to `worker_restarts` times (the
run goes on; the evaluations since that checkpoint are done again and metrics.jsonl is rewritten to match); past
that, the run ends with one error naming the worker's failure. A driver killed with -9 leaves the storage: the
same command run again resumes from the latest checkpoint Ray Train had committed (saying so on stderr; one it was
still committing when the driver died is not used, and with none committed the run starts afresh). When the run
ends, its last checkpoint is copied to OUT/checkpoint (what `composer export` and a single-process resume read) and
the default storage is removed; a run starts from OUT/checkpoint when Ray's storage has nothing newer, so a run may
go on with another number of workers, or in one process.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from composer.atomic import write_atomic
from composer.errors import UserError
from composer.interrupt import interrupt_signal
from composer.spec import ArchSpec
from composer.spec_parse import dump_spec
from composer.tasks import Task
from composer.training.checkpoint import CHECKPOINT, append_metrics, has_checkpoint, write_metrics
from composer.training.config import TrainConfig
from composer.training.fingerprint import check_resumable, run_fingerprint
from composer.training.runtime import resolve_device
from composer.training.setup import SPEC_FILE, check_out_dir, fit_spec

STORAGE = "ray_train"        # the default storage, inside the output folder
POLL_S = 0.25                # how long the driver waits for an event from the workers before it looks at signals


def check_settings(config: TrainConfig) -> None:
    """The checks of a data-parallel run's settings alone (see the module docstring)."""
    workers, batch_size = config.parallel.workers, config.runtime.batch_size
    if config.parallel.fsdp and workers < 2:
        raise UserError("fsdp shards the model over data-parallel workers: give workers >= 2", path="fsdp")
    if batch_size % workers:
        raise UserError(f"batch_size {batch_size} does not split over {workers} workers: give a multiple of "
                        f"{workers}", path="workers")
    device = config.runtime.device
    if device is not None and device not in ("cpu", "cuda"):
        raise UserError(f"device {device!r}: each of the {workers} workers takes a device of its own: give cpu or "
                        "cuda (one GPU per worker)", path="device")


def uses_gpu(config: TrainConfig) -> bool:
    """Whether the workers train on GPUs: `device cuda`, or no device and a cluster (or machine) with GPUs."""
    if config.runtime.device is not None:
        return config.runtime.device == "cuda"
    import ray

    if ray.is_initialized():
        return ray.cluster_resources().get("GPU", 0) > 0
    import torch

    return torch.cuda.is_available()


def start_cluster(config: TrainConfig) -> bool:
    """Join the running Ray cluster (a Tune trial's, RAY_ADDRESS's) or start one here, after checking the workers
    fit it; whether the workers use GPUs."""
    import ray

    from composer.ray_cluster import check_local_workers, check_workers, embedded, start_ray

    workers, cpus = config.parallel.workers, float(config.runtime.threads or 1)
    if not ray.is_initialized() and embedded(None):
        gpu = uses_gpu(config)
        if gpu:
            resolve_device("cuda")
        check_local_workers(workers, cpus, 1.0 if gpu else 0.0)
    start_ray(None, verbose=False)
    gpu = uses_gpu(config)
    check_workers(workers, cpus, 1.0 if gpu else 0.0)
    import ray.train.torch

    if not ray.train.torch.TorchTrainer.__module__.startswith("ray.train.v2"):
        raise UserError("data-parallel training runs on Ray Train V2, which RAY_TRAIN_V2_ENABLED=0 turns off: unset "
                        "it", path="workers")
    return gpu


def check_memory_here(spec: ArchSpec, task: Task, config: TrainConfig, gpu: bool) -> None:
    """The memory estimate of the workers together, when they all run on this machine (a one-node cluster)."""
    import ray

    from composer.training.memory import check_memory

    if not config.runtime.memory_check or len([n for n in ray.nodes() if n.get("Alive")]) != 1:
        return
    workers = config.parallel.workers
    device = resolve_device("cuda:0" if gpu else "cpu")
    check_memory(spec, task.seq_len, config.runtime.batch_size // workers, config.evaluation.eval_batch_size,
                 device, concurrent=1 if gpu else workers, share=config.runtime.memory_share)


class Storage:
    """Where Ray Train keeps a run's checkpoints: `root` (storage_path) and `name`; `local` is its folder when
    that is on this machine's file system."""

    def __init__(self, config: TrainConfig, out_dir: str | os.PathLike | None):
        self.temporary = out_dir is None and config.parallel.storage is None
        given = config.parallel.storage
        if given is not None and "://" in given:
            self.root, self.name, self.local = given, _run_name(out_dir), None
            return
        if given is not None:
            self.root, self.name = str(Path(given).resolve()), _run_name(out_dir)
        elif out_dir is not None:
            self.root, self.name = str((Path(out_dir) / STORAGE).resolve()), "run"
        else:
            self.root, self.name = tempfile.mkdtemp(prefix="composer-ray-train-"), "run"
        self.local = Path(self.root) / self.name

    @property
    def default(self) -> bool:
        """Whether the storage is the run's own (removed when the run ends)."""
        return self.temporary or (self.local is not None and self.local.parent.name == STORAGE)

    def latest(self) -> Path | None:
        """Ray's newest checkpoint of this run, on this machine (a folder holding checkpoint/)."""
        if self.local is None or not self.local.is_dir():
            return None
        found = [p for p in self.local.glob("step_*") if has_checkpoint(p)]
        return max(found, key=lambda p: (p / CHECKPOINT / "trainer.pt").stat().st_mtime, default=None)

    def remove(self) -> None:
        if self.local is not None:
            shutil.rmtree(self.local, ignore_errors=True)
            if self.default:
                shutil.rmtree(self.root, ignore_errors=True)


def _run_name(out_dir: str | os.PathLike | None) -> str:
    if out_dir is None:
        return "run-" + os.urandom(4).hex()
    path = Path(out_dir).resolve()
    return f"{path.name or 'run'}-{hashlib.sha256(str(path).encode()).hexdigest()[:10]}"


def starting_point(storage: Storage, out_dir: str | os.PathLike | None, config: TrainConfig,
                   fingerprint: dict[str, Any]) -> str | None:
    """Where the run starts: None (afresh, or Ray's own latest checkpoint, which Ray Train restores), or the output
    folder whose checkpoint is newer than anything in Ray's storage. Both are checked to belong to this run."""
    resume = out_dir is not None and config.checkpoint.resume
    if not resume:
        storage.remove()
        return None
    latest = storage.latest()
    ours = Path(out_dir) / CHECKPOINT / "trainer.pt" if has_checkpoint(out_dir) else None
    if storage.local is not None and (latest is None or (ours is not None and ours.stat().st_mtime >
                                                         (latest / CHECKPOINT / "trainer.pt").stat().st_mtime)):
        storage.remove()             # nothing there, or older than the output folder's checkpoint
        latest = None
    for folder in [p for p in (latest, out_dir if ours else None) if p is not None]:
        try:
            check_resumable(folder, fingerprint)
        except UserError as e:
            raise UserError(e.message.replace(str(folder), str(out_dir)), path="out") from None
    return str(out_dir) if ours is not None and latest is None else None


def train_data_parallel(spec: ArchSpec | dict | str, task: Task, config: TrainConfig,
                        should_stop: Callable[[dict[str, Any]], bool], out_dir: str | os.PathLike | None,
                        on_step: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    """Train on `config.parallel.workers` workers; the outcome as the worker of rank 0 saw it: status, metrics,
    history, step, diverged_step. `should_stop(metrics)` is asked after every evaluation."""
    check_settings(config)
    spec = fit_spec(spec, task)
    fingerprint = run_fingerprint(spec, task, config)
    if out_dir is not None:
        check_out_dir(out_dir)
    gpu = start_cluster(config)
    check_memory_here(spec, task, config, gpu)
    storage = Storage(config, out_dir)
    start = starting_point(storage, out_dir, config, fingerprint)
    if out_dir is not None:
        write_atomic(Path(out_dir) / SPEC_FILE, dump_spec(spec))

    from composer.training.ray_link import make_link

    link = make_link()
    run = {"spec": spec, "task": task, "config": config, "link": link, "start": start,
           "threads": config.runtime.threads or 1}
    fitted: dict[str, Any] = {}
    thread = threading.Thread(target=_fit, args=(_trainer(run, config, storage, gpu), fitted), daemon=True,
                              name="composer-ray-train")
    thread.start()
    try:
        final = relay(link, thread, out_dir, should_stop, on_step)
    finally:
        thread.join()
        if storage.temporary:
            storage.remove()
    if "error" in fitted:
        raise failure(fitted["error"], config, storage, out_dir)
    checkpoint = fitted["result"].checkpoint
    if out_dir is not None and checkpoint is not None:
        install_checkpoint(checkpoint, out_dir)
        if storage.default:
            storage.remove()
    if final is None:
        raise UserError("the data-parallel workers ended without a result", path="workers")
    return final


def _trainer(run: dict[str, Any], config: TrainConfig, storage: Storage, gpu: bool) -> Any:
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from composer.training.data_parallel import worker_loop

    resources = {"CPU": float(run["threads"]), **({"GPU": 1.0} if gpu else {})}
    return TorchTrainer(
        worker_loop, train_loop_config=run, torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=config.parallel.workers, use_gpu=gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=storage.name, storage_path=storage.root,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            failure_config=ray.train.FailureConfig(max_failures=config.parallel.worker_restarts)))


def _fit(trainer: Any, fitted: dict[str, Any]) -> None:
    try:
        fitted["result"] = trainer.fit()
    except Exception as e:            # reported by the driver's thread (failure())
        fitted["error"] = e


def relay(link: Any, thread: threading.Thread, out_dir: str | os.PathLike | None,
          should_stop: Callable[[dict[str, Any]], bool], on_step: Callable | None) -> dict[str, Any] | None:
    """The driver's loop while the workers train: rank 0's events to the caller and the output folder, the
    caller's answers back; a caught signal asks the workers to stop. Returns rank 0's final outcome."""
    import ray

    final, asked, raised = None, False, None
    while True:
        alive = thread.is_alive()
        if not asked and (interrupt_signal() is not None or raised is not None):
            link.request_stop.remote("interrupted" if raised is None else "the caller stopped")
            asked = True
        for kind, data in ray.get(link.take.remote(POLL_S if alive else 0)):
            if kind == "started" and out_dir is not None:
                write_metrics(out_dir, data["history"])
                if data["from_ray_storage"]:      # a resume from OUT/checkpoint is announced by `train`'s caller
                    print(f"resuming {out_dir} from its checkpoint at step {data['step']} (kept by Ray Train)",
                          file=sys.stderr)
            elif kind == "progress" and on_step is not None and raised is None:
                on_step(data)
            elif kind == "evaluation":
                if out_dir is not None:
                    append_metrics(out_dir, data["metrics"])
                verdict = "interrupt" if raised is not None else "go"
                if raised is None:
                    try:
                        verdict = "stop" if should_stop(data["metrics"]) else "go"
                    except BaseException as e:          # the caller's own exception (e.g. Tune ending the trial)
                        raised, verdict = e, "interrupt"
                link.answer.remote(data["number"], verdict)
            elif kind == "final":
                final = data
        if not alive:
            break
    if raised is not None:
        raise raised
    return final


def failure(error: Exception, config: TrainConfig, storage: Storage, out_dir: str | os.PathLike | None) -> UserError:
    """One line for a run Ray Train gave up on: the failed worker's error, and where its last checkpoint is."""
    failures = getattr(error, "worker_failures", None) or {}
    if failures:
        rank, cause = sorted(failures.items())[0]
        what = f"worker {rank} failed ({_last_line(cause)})"
    else:
        what = _last_line(error)
    kept = storage.latest() is not None or storage.local is None
    where = (f"; its last checkpoint is kept in {storage.root}: the same command run again resumes from it"
             if kept and out_dir is not None else "")
    return UserError(f"data-parallel training stopped after {config.parallel.worker_restarts} restarts of the "
                     f"workers: {what}{where}", path="workers")


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def install_checkpoint(checkpoint: Any, out_dir: str | os.PathLike) -> None:
    """Ray Train's checkpoint (a folder holding checkpoint/) as `out_dir`/checkpoint, replaced in two renames as
    training/checkpoint.py does (has_checkpoint finishes a swap a kill cut short)."""
    out = Path(out_dir)
    incoming = out / f".{CHECKPOINT}.incoming"
    shutil.rmtree(incoming, ignore_errors=True)
    checkpoint.to_directory(str(incoming))
    final, old = out / CHECKPOINT, out / f".{CHECKPOINT}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    (incoming / CHECKPOINT).rename(final)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(incoming, ignore_errors=True)
