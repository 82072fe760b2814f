"""Data-parallel training of one model: what each worker runs inside Ray Train's TorchTrainer (the driver that
starts them is composer/training/ray_train.py).

Each worker sets up the run a single process would (training/setup.py, the same seed: the same initial weights),
wraps the model and runs the single-process step (training/step.py) on its rows of every batch:

- data: of the B sequences one process trains on at a step, worker r of N takes rows [r B/N, (r+1) B/N)
  (`Task.train_rows`), so together the workers see exactly that batch, in that order;
- loss: a worker's loss is the sum over its labelled positions times N over the whole batch's labelled positions
  (one all-reduce of the count), so DDP's average of the gradients is the gradient of the whole batch's mean loss,
  and the norm that gradient clipping takes is the whole gradient's;
- model: DistributedDataParallel (a copy in each worker), or FSDP2 (`fully_shard` on each block and on the model:
  parameters, gradients and optimizer state split over the workers);
- agreement: after every step one all-reduce gives each worker the mean loss and rank 0's clock, stop request and
  checkpoint decision, so budgets in seconds and checkpoints by time stop every worker at the same step;
- evaluation: rank 0 evaluates (with FSDP every worker takes part: the forward gathers the shards) and sends the
  metrics to the driver, which answers whether the run goes on (composer/training/ray_link.py);
- checkpoints: the single-process format (training/checkpoint.py; FSDP gathers the full model and optimizer state
  first), written by rank 0 and reported to Ray Train, which keeps the latest in its storage. A worker group
  restarted after a failure, or a rerun after the driver died, starts from it (`ray.train.get_checkpoint`), else
  from the checkpoint the driver names (an earlier run's, in the output folder).

Auxiliary losses (MoE balance) are each worker's over its rows, averaged over the workers: equal to one process's
only where they are linear in the batch. Dropout draws its masks per worker, unlike one process.
"""

from __future__ import annotations

import math
import secrets
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from composer.model import build_model
from composer.spec import ArchSpec
from composer.tasks import IGNORE, Task
from composer.training.checkpoint import PeriodicCheckpoints, load_checkpoint, save_checkpoint
from composer.training.config import TrainConfig, eval_interval
from composer.training.evaluate import evaluate, evaluate_splits, progress
from composer.training.schedule import lr_factor
from composer.training.setup import TrainState, make_optimizer, set_up
from composer.training.step import train_step


@dataclass(frozen=True)
class Shard:
    """Worker `rank` of `world`: its rows of each batch and its share of the batch's loss."""

    rank: int
    world: int

    def rows(self, batch_size: int) -> tuple[int, int]:
        per = batch_size // self.world
        return self.rank * per, (self.rank + 1) * per

    def batch(self, task: Task, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return task.train_rows(step, batch_size, *self.rows(batch_size))

    def token_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Summed cross-entropy of this worker's positions x world / the whole batch's labelled positions."""
        labels = targets.reshape(-1)
        total = (labels != IGNORE).sum()
        dist.all_reduce(total)
        summed = F.cross_entropy(logits.float().flatten(0, 1), labels, ignore_index=IGNORE, reduction="sum")
        return summed * self.world / total.clamp(min=1)


@dataclass(frozen=True)
class Agreed:
    """What every worker knows after a step (see `agree`)."""

    loss: float
    train_time: float
    stop: bool
    checkpoint: bool
    diverged: bool


def agree(state: TrainState, loss: float | None, train_time: float, stop: bool, checkpoint: bool) -> Agreed:
    """One all-reduce: the mean loss over the workers, whether any diverged, and rank 0's clock, stop request and
    checkpoint decision (the other workers add zeros)."""
    lead, world = float(state.shard.rank == 0), state.shard.world
    values = torch.tensor([0.0 if loss is None else loss, train_time * lead, float(stop) * lead,
                           float(checkpoint) * lead, float(loss is None)], dtype=torch.float64, device=state.device)
    dist.all_reduce(values)
    total, clock, stop_, save, diverged = values.tolist()
    return Agreed(total / world, clock, stop_ > 0, save > 0, diverged > 0 or not math.isfinite(total))


def one_flag(state: TrainState, flag: bool) -> bool:
    """Rank 0's `flag`, on every worker."""
    value = torch.tensor([float(flag) if state.shard.rank == 0 else 0.0], device=state.device)
    dist.all_reduce(value)
    return value.item() > 0


def shared_parameters(blocks: torch.nn.ModuleList) -> set[int]:
    """Ids of the parameters that more than one block holds (a `share`d layer)."""
    counts = Counter(id(p) for block in blocks for p in block.parameters())
    return {key for key, count in counts.items() if count > 1}


def wrap(state: TrainState, config: TrainConfig) -> None:
    """The model made data-parallel in place: DDP around it, or FSDP2 on each block (but blocks sharing weights
    with another) and on the whole, with the optimizer made anew over the sharded parameters."""
    if config.parallel.fsdp:
        from torch.distributed.fsdp import fully_shard

        shared = shared_parameters(state.model.blocks)
        for block in state.model.blocks:
            if not any(id(p) in shared for p in block.parameters()):
                fully_shard(block)
        fully_shard(state.model)
        opt = config.optimizer
        state.optimizer = make_optimizer(state.model, opt.lr, opt.weight_decay, opt.betas)
        state.forward = state.model
    else:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [state.device.index] if state.device.type == "cuda" else None
        state.forward = DistributedDataParallel(state.model, device_ids=device_ids)
    if config.runtime.compile:
        state.forward = torch.compile(state.forward)


# ------------------------------------------------------------------------------------------------
# Checkpoints: the single-process format, whatever the wrapping


def _replica(spec: ArchSpec, config: TrainConfig) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A plain model and optimizer on the CPU to hold a full FSDP state (built without touching the run's RNG)."""
    with torch.random.fork_rng(devices=[]):
        model = build_model(spec)
    opt = config.optimizer
    return model, make_optimizer(model, opt.lr, opt.weight_decay, opt.betas)


def _parameter_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The optimizer's parameters by name, in its order (the index a plain optimizer state dict uses)."""
    names = {id(p): name for name, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def _by_index(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    index = {name: i for i, name in enumerate(names)}
    return {"state": {index[name]: value for name, value in state["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]]}


def _by_name(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    return {"state": {names[i]: value for i, value in state["state"].items()},
            "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]}


def save(state: TrainState, directory: str, spec: ArchSpec, config: TrainConfig) -> None:
    """The run's checkpoint in `directory` (written by rank 0; with FSDP every worker helps gather it)."""
    lead = state.shard.rank == 0
    if not config.parallel.fsdp:
        if lead:
            state.save(directory)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(state.model, options=options)
    optimizer_state = get_optimizer_state_dict(state.model, state.optimizer, options=options)
    if lead:
        model, optimizer = _replica(spec, config)
        model.load_state_dict(weights)
        optimizer.load_state_dict(_by_index(optimizer_state, _parameter_names(model, optimizer)))
        save_checkpoint(directory, model, optimizer,
                        {"step": state.step, "train_time": state.train_time, "history": state.history},
                        state.fingerprint)


def restore(state: TrainState, directory: str, spec: ArchSpec, config: TrainConfig) -> None:
    """The run's state from the checkpoint in `directory` (every worker reads it)."""
    if not config.parallel.fsdp:
        state.restore(directory)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    model, optimizer = _replica(spec, config)
    loop = load_checkpoint(directory, model, optimizer)
    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(state.model, model.state_dict(), options=options)
    set_optimizer_state_dict(state.model, state.optimizer,
                             _by_name(optimizer.state_dict(), _parameter_names(model, optimizer)), options=options)
    state.step, state.train_time, state.history = loop["step"], loop["train_time"], loop["history"]


def report_checkpoint(state: TrainState, spec: ArchSpec, config: TrainConfig, durable: bool = True) -> None:
    """Save the checkpoint and hand it to Ray Train (every worker calls this at the same step); `durable`: return
    once Ray Train has recorded it, so a worker that dies later restarts from it (the last one needs no wait:
    the run's end records it)."""
    import ray.train

    lead = state.shard.rank == 0
    with tempfile.TemporaryDirectory(prefix="composer-checkpoint-") as directory:
        save(state, directory, spec, config)
        checkpoint = ray.train.Checkpoint.from_directory(directory) if lead else None
        ray.train.report({"step": state.step}, checkpoint=checkpoint,
                         checkpoint_dir_name=f"step_{state.step:09d}_{secrets.token_hex(3)}")
    if lead and durable:     # wait until Ray Train has it on record (it polls the workers every ~2 s)
        ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)


# ------------------------------------------------------------------------------------------------
# The worker


class StopPoll:
    """Rank 0's look at the driver's stop request, one call in flight at a time and never waited on."""

    def __init__(self, link: Any):
        self.link = link
        self.pending = link.stop_requested.remote()
        self.reason: str | None = None

    def __call__(self) -> bool:
        import ray

        if self.reason is None:
            ready, _ = ray.wait([self.pending], timeout=0)
            if ready:
                try:
                    self.reason = ray.get(ready[0])
                except ray.exceptions.RayActorError:
                    self.reason = "the driver is gone"
                if self.reason is None:
                    self.pending = self.link.stop_requested.remote()
        return self.reason is not None


def prepare(run: dict[str, Any], rank: int, world: int, device: torch.device) -> TrainState:
    """Worker `rank`'s run, set up as one process's and wrapped (the process group already joined)."""
    config: TrainConfig = run["config"]
    torch.set_num_threads(run["threads"])
    local = config.with_settings(device=str(device), compile=False, memory_check=False)
    state = set_up(run["spec"], run["task"], local, None)
    state.shard = Shard(rank, world)
    state.static["workers"] = world
    wrap(state, config)
    return state


def worker_loop(run: dict[str, Any]) -> None:
    """Ray Train's `train_loop_per_worker`: set up, restore, train like composer.trainer's loop, report."""
    import ray
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    config: TrainConfig = run["config"]
    spec: ArchSpec = run["spec"]
    state = prepare(run, context.get_world_rank(), context.get_world_size(), ray.train.torch.get_device())
    nodes: list[Any] = [None] * state.shard.world
    dist.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
    state.static["worker_nodes"] = len(set(nodes))
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            restore(state, directory, spec, config)
    elif run["start"] is not None:
        restore(state, run["start"], spec, config)
    link, lead = run["link"], state.shard.rank == 0
    if lead:
        ray.get(link.send.remote("started", {"step": state.step, "history": state.history,
                                             "from_ray_storage": checkpoint is not None}))
    outcome = train_worker(state, config, spec, link)
    if lead:
        ray.get(link.send.remote("final", outcome))


def train_worker(state: TrainState, config: TrainConfig, spec: ArchSpec, link: Any) -> dict[str, Any]:
    """The single-process loop (composer.trainer) on every worker, with rank 0 speaking for them."""
    import ray

    lead, fsdp = state.shard.rank == 0, config.parallel.fsdp
    opt, schedule = config.optimizer, config.lr_schedule
    total_steps = state.budget.total_steps(state.tokens_per_step)
    eval_every = eval_interval(config.evaluation.eval_every, total_steps)
    warmup = min(schedule.warmup_steps, max(1, total_steps // 10)) if total_steps else schedule.warmup_steps
    checkpoints = PeriodicCheckpoints(config.checkpoint.checkpoint_every, config.checkpoint.checkpoint_seconds)
    stop_requested = StopPoll(link) if lead else (lambda: False)

    def evaluated(train_loss: float) -> tuple[dict[str, Any], str]:
        metrics = evaluate(state, train_loss, config.evaluation.eval_batch_size, None) if lead or fsdp else {}
        verdict = ray.get(link.evaluated.remote(metrics)) if lead else "go"
        stop, interrupt = one_flag(state, verdict == "stop"), one_flag(state, verdict == "interrupt")
        return metrics, "stopped" if stop else "interrupted" if interrupt else "go"

    status, diverged_step, train_loss = "completed", None, float("nan")
    metrics: dict[str, Any] = state.history[-1] if state.history else {}
    done = total_steps is not None and state.step >= total_steps
    while not done:
        start, before = time.perf_counter(), state.step
        lr = opt.lr * lr_factor(state.step, state.progress(), warmup, schedule.schedule, schedule.min_lr_ratio,
                                warmup_fraction=schedule.warmup_fraction)
        loss = train_step(state, lr, config.runtime.batch_size, opt.grad_clip)
        agreed = agree(state, loss, state.train_time + time.perf_counter() - start, stop_requested(),
                       lead and checkpoints.due(state.step))
        if agreed.diverged:
            status, diverged_step = "diverged", before
            break
        train_loss, state.train_time = agreed.loss, agreed.train_time
        if lead and (state.step % config.runtime.log_every == 0 or state.step == 1):
            link.send.remote("progress", progress(state, train_loss, lr))
        done = state.progress() >= 1.0
        if state.step % eval_every == 0 or done:
            metrics, verdict = evaluated(train_loss)
            if verdict != "go":
                status = verdict
                break
        if done:
            break
        if agreed.stop:
            status = "interrupted"
            break
        if agreed.checkpoint:
            report_checkpoint(state, spec, config)
            checkpoints.saved()

    if status == "diverged":
        metrics = {**(state.history[-1] if state.history else state.static), "diverged_step": diverged_step}
    elif status == "interrupted":
        metrics = {**(state.history[-1] if state.history else state.static), "interrupted_step": state.step}
    elif not metrics and (lead or fsdp):
        metrics = evaluate(state, train_loss, config.evaluation.eval_batch_size, None)
    if status in ("completed", "stopped") and config.evaluation.final_splits and (lead or fsdp):
        metrics = {**metrics, **evaluate_splits(state, config.evaluation.final_splits,
                                                config.evaluation.eval_batch_size)}
    if status != "diverged":
        report_checkpoint(state, spec, config, durable=False)
    return {"status": status, "metrics": metrics, "history": state.history, "step": state.step,
            "diverged_step": diverged_step}
