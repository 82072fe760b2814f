"""Setting up one run: the spec fitted to the task, the checks made before anything is allocated (the device,
the memory estimate, the output folder and whether its checkpoint belongs to this run), the model, its optimizer
and (optionally compiled) forward, the static metrics every evaluation carries, and the progress restored from a
checkpoint. An output folder gets `spec.yaml` (the fitted spec: what `composer export DIR` reads with the
weights)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from composer.atomic import write_atomic
from composer.costs import model_cost
from composer.errors import UserError
from composer.model import LMOutput, build_model
from composer.spec import ArchSpec
from composer.spec_parse import dump_spec, load_spec
from composer.tasks import Task
from composer.training.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint, write_metrics
from composer.training.config import TrainConfig
from composer.training.fingerprint import check_resumable, run_fingerprint
from composer.training.memory import check_memory
from composer.training.runtime import resolve_device
from composer.training.schedule import Budget
from composer.yaml_source import read_source

if TYPE_CHECKING:
    from composer.training.data_parallel import Shard

SPEC_FILE = "spec.yaml"


@dataclass
class TrainState:
    """One run's objects and its progress (what a checkpoint saves besides the weights and optimizer)."""

    model: torch.nn.Module
    forward: Callable[[torch.Tensor], LMOutput]          # the model, or its torch.compile'd form
    optimizer: torch.optim.Optimizer
    task: Task
    device: torch.device
    budget: Budget
    tokens_per_step: int
    static: dict[str, Any]                               # settings and costs, copied into every evaluation
    step: int = 0
    train_time: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: dict[str, Any] | None = None            # saved with every checkpoint (see fingerprint.py)
    shard: Shard | None = None                           # a data-parallel worker's rows (data_parallel.py)

    def progress(self) -> float:
        """Fraction of the budget used, in [0, 1]."""
        return self.budget.progress(self.step, self.train_time, self.tokens_per_step)

    def save(self, out_dir: str | os.PathLike | None) -> None:
        if out_dir is not None:
            save_checkpoint(out_dir, self.model, self.optimizer,
                            {"step": self.step, "train_time": self.train_time, "history": self.history},
                            self.fingerprint)

    def restore(self, out_dir: str | os.PathLike) -> None:
        loop = load_checkpoint(out_dir, self.model, self.optimizer)
        self.step, self.train_time, self.history = loop["step"], loop["train_time"], loop["history"]


def fit_spec(spec: ArchSpec | dict | str | os.PathLike, task: Task) -> ArchSpec:
    """The spec with the task's vocabulary and a context long enough for it. The vocabularies must agree
    (`Task.model_vocab_size`, one rule for every task): a spec that states another vocab_size is a UserError
    naming both; one that states none (a mapping, YAML text or file without the key) takes the task's."""
    stated = states_vocab_size(spec)
    spec = load_spec(spec)
    vocab_size = task.model_vocab_size(spec.vocab_size, stated)
    return dataclasses.replace(spec, vocab_size=vocab_size, max_seq_len=max(spec.max_seq_len, task.seq_len))


def states_vocab_size(source: ArchSpec | dict | str | os.PathLike) -> bool:
    """Whether a spec source states its vocab_size: an ArchSpec always does (it holds a number); a mapping,
    YAML text or file when it has the key."""
    if isinstance(source, ArchSpec):
        return True
    data = read_source(source).data
    return not isinstance(data, dict) or "vocab_size" in data


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                   betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: not on norms, biases or embeddings (nor a head tied to them).

    The fused form (one kernel per parameter group) where the parameters' device has one (CPU, CUDA): the same
    update up to floating-point reassociation, and on a small model a third of the time of the per-tensor loop
    (tests/test_train_speed.py holds the two equal)."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if p.ndim < 2 or id(p) in embedding_ids else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = all(p.device.type in FUSED_ADAMW_DEVICES for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)


FUSED_ADAMW_DEVICES = ("cpu", "cuda")     # where torch.optim.AdamW(fused=True) has a kernel


def set_up(spec: ArchSpec | dict | str, task: Task, config: TrainConfig,
           out_dir: str | os.PathLike | None) -> TrainState:
    """Build the run; with `out_dir`, resume from its checkpoint (when `resume`) and rewrite metrics.jsonl to
    the evaluations up to that checkpoint."""
    spec = fit_spec(spec, task)
    device = resolve_device(config.runtime.device)
    if config.runtime.memory_check:
        check_memory(spec, task.seq_len, config.runtime.batch_size, config.evaluation.eval_batch_size, device,
                     share=config.runtime.memory_share)
    fingerprint = run_fingerprint(spec, task, config)
    resume = out_dir is not None and config.checkpoint.resume and has_checkpoint(out_dir)
    if out_dir is not None:
        check_out_dir(out_dir)
    if resume:
        check_resumable(out_dir, fingerprint)
    torch.manual_seed(config.runtime.seed)
    model = build_model(spec).to(device)
    model.train()
    optimizer = make_optimizer(model, config.optimizer.lr, config.optimizer.weight_decay, config.optimizer.betas)
    forward = torch.compile(model) if config.runtime.compile else model
    costs = model_cost(spec, seq_len=task.seq_len)
    batch_size = config.runtime.batch_size
    static = {"lr": config.optimizer.lr, "seed": config.runtime.seed, "batch_size": batch_size,
              "seq_len": task.seq_len, "task": task.name, "params": costs.params,
              "non_embedding_params": costs.non_embedding_params, "active_params": costs.active_params,
              "flops_per_token": costs.flops_per_token, "train_flops_per_token": costs.train_flops_per_token,
              "state_bytes": costs.state_bytes}
    state = TrainState(model, forward, optimizer, task, device, config.budget, batch_size * task.seq_len, static,
                       fingerprint=fingerprint)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        if resume:
            state.restore(out_dir)
        write_atomic(Path(out_dir) / SPEC_FILE, dump_spec(spec))
        write_metrics(out_dir, state.history)
    return state


def check_out_dir(out_dir: str | os.PathLike) -> None:
    """A UserError when `out_dir` cannot be the run's folder (a file, or a folder that cannot be made)."""
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file, not a folder", path="out")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot make the folder {path}: {e.strerror or e}", path="out") from None
