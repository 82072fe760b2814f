"""The memory a training run needs, estimated from the spec before anything is allocated, and the memory the
device has available: `train` refuses a run whose estimate does not fit, with both numbers, instead of
filling the machine.

The estimate is deliberately simple and on the high side (float32 throughout, 4 bytes a value):

    weights, gradients and AdamW's two moments   16 bytes per parameter (model_cost's exact count)
    training activations                         per token of a batch (batch_size x seq_len tokens):
                                                   WORKSPACE x (what the layers keep for the backward pass)
                                                   + LOGIT_VALUES x vocab (logits, log-softmax, their gradients)
    what a sub-layer keeps, per token,           RESIDUAL_VALUES x its width (input, norm, output, residual)
    counted for every application (each copy     + PROJECTION_VALUES x its active parameters / width (a projection's
    of a `repeat`, each iteration of a `loop`      output width, pre- and post-activation)
    that backpropagates)                         + its class's `saved_values` x its width (scan states, gates)
    evaluation (no gradients, one layer live     eval_batch_size x seq_len x (WORKSPACE x the largest sub-layer's
    at a time)                                   values + LOGIT_VALUES x vocab), when larger than training's

What the layers keep was measured with saved-tensor hooks for every primitive (tests/test_train_memory.py holds
the counted values within [1/WORKSPACE, 3] x the measured ones); WORKSPACE = 2 covers the backward pass's
temporaries. Against peak resident memory on CPU the estimate came out 0.8-2.7x the measured peak for one
family per model, 2.1-2.5x for the shipped gpt_small and hybrid_pattern examples with their default evaluation
batch (the evaluation term dominates there). Attention is counted without a seq_len x seq_len score matrix:
`scaled_dot_product_attention` does not keep one on CPU or CUDA.

Available memory: on CUDA, the device's free memory (`torch.cuda.mem_get_info`); on CPU, `MemAvailable` from
/proc/meminfo, capped by the cgroup's limit when a container sets one, else the free pages `os.sysconf` reports;
None (no check) where none of these can be read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from composer.costs import model_cost
from composer.errors import UserError
from composer.spec import ArchSpec, Layer, Loop, Node, Parallel, Repeat
from primitives.base import Primitive, get_primitive, registered

BYTES_PER_VALUE = 4
BYTES_PER_PARAMETER = 16            # weight, gradient, AdamW exp_avg and exp_avg_sq, all float32
RESIDUAL_VALUES = 4                 # per sub-layer, in multiples of its width: input, norm, output, residual
PROJECTION_VALUES = 3               # per active parameter / width: each projection's output, pre- and post-activation
LOGIT_VALUES = 4                    # per vocabulary entry: logits, log-softmax, their gradients
WORKSPACE = 2                       # the backward pass's gradients and temporaries on top of what is kept


class MemoryLimitError(UserError):
    """A run refused because its estimated memory exceeds what the device has available."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs, by part."""

    parameters: int         # weights, gradients and optimizer state
    activations: int        # training activations and logits, or the evaluation's when larger
    total: int

    def describe(self) -> str:
        return (f"{gib(self.total)} ({gib(self.parameters)} weights, gradients and optimizer state, "
                f"{gib(self.activations)} activations)")


def gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def estimate_memory(spec: ArchSpec, seq_len: int, batch_size: int, eval_batch_size: int) -> MemoryEstimate:
    """The memory of training `spec` (already fitted to its task) on batches of `batch_size` x `seq_len` tokens;
    see the module docstring. Costs nothing to compute: nothing is built."""
    params = model_cost(spec, seq_len=seq_len).params
    logits = LOGIT_VALUES * spec.vocab_size
    positions = seq_len + spec.meta_tokens  # the layers also run over the meta tokens; only real tokens get logits
    kept = _activation_values(spec.layers, spec, positions, spec.d_model)
    train = batch_size * (positions * WORKSPACE * kept + seq_len * logits)
    largest = _largest_layer_values(spec.layers, spec, positions, spec.d_model) + RESIDUAL_VALUES * spec.d_model
    evaluation = eval_batch_size * (positions * WORKSPACE * largest + seq_len * logits)
    activations = int(max(train, evaluation) * BYTES_PER_VALUE)
    parameters = params * BYTES_PER_PARAMETER
    return MemoryEstimate(parameters, activations, parameters + activations)


def _activation_values(nodes: tuple[Node, ...], spec: ArchSpec, seq_len: int, width: int) -> float:
    """Values per token kept for the backward pass by `nodes` (each applied once)."""
    total = 0.0
    for node in nodes:
        if isinstance(node, Layer):
            total += _layer_values(node, spec, seq_len, width)
        elif isinstance(node, Repeat):
            total += node.times * _activation_values(node.body, spec, seq_len, width)
        elif isinstance(node, Loop):
            iterations = node.times if node.grad_iters is None else min(node.times, node.grad_iters)
            total += iterations * (_activation_values(node.body, spec, seq_len, width) + RESIDUAL_VALUES * width)
        else:
            assert isinstance(node, Parallel)
            total += RESIDUAL_VALUES * width
            for branch, branch_width in zip(node.branches, node.widths(width)):
                total += _activation_values((branch,), spec, seq_len, branch_width)
    return total


def _largest_layer_values(nodes: tuple[Node, ...], spec: ArchSpec, seq_len: int, width: int) -> float:
    """Values per token of the largest single sub-layer: without gradients, one layer's are live at a time."""
    largest = 0.0
    for node in nodes:
        if isinstance(node, Layer):
            largest = max(largest, _layer_values(node, spec, seq_len, width))
        elif isinstance(node, (Repeat, Loop)):
            largest = max(largest, _largest_layer_values(node.body, spec, seq_len, width))
        else:
            largest = max(largest, sum(_activation_values((branch,), spec, seq_len, branch_width)
                                       for branch, branch_width in zip(node.branches, node.widths(width))))
    return largest


def _layer_values(layer: Layer, spec: ArchSpec, seq_len: int, width: int) -> float:
    cls = get_primitive(layer.op)
    cost = cls.cost(spec.config(layer), width, seq_len, BYTES_PER_VALUE)
    return (RESIDUAL_VALUES + saved_values(cls)) * width + PROJECTION_VALUES * cost.active / width


def saved_values(cls: type[Primitive]) -> int:
    """The primitive's own `saved_values`; for one that does not say, the most any registered primitive keeps."""
    if cls.saved_values is not None:
        return cls.saved_values
    return max((p.saved_values for p in registered().values() if p.saved_values is not None), default=0)


def available_memory(device: torch.device, share: float = 1.0) -> int | None:
    """Bytes the run can still allocate on `device`; None when this platform does not say. `share`: the fraction
    of a GPU this run holds (runs sharing one each see all of its free memory when they start)."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return int(min(free, share * total))
    if device.type != "cpu":
        return None
    available = _meminfo_available()
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    limit = _cgroup_room()
    return available if limit is None else min(available, limit)


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room() -> int | None:
    """The cgroup (v2) memory limit minus its current use, when a limit is set."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def share_text(device: torch.device, share: float) -> str:
    return f" to a run holding {share:g} of it" if device.type == "cuda" and share < 1 else ""


def check_memory(spec: ArchSpec, seq_len: int, batch_size: int, eval_batch_size: int, device: torch.device,
                 concurrent: int = 1, share: float = 1.0) -> MemoryEstimate:
    """The estimate; a MemoryLimitError naming both numbers when it (times `concurrent` runs training at once)
    exceeds the memory available on `device` (on a GPU, at most `share` of its memory)."""
    estimate = estimate_memory(spec, seq_len, batch_size, eval_batch_size)
    available = available_memory(device, share)
    if available is not None and estimate.total * concurrent > available:
        runs = f" for each of {concurrent} runs at once" if concurrent > 1 else ""
        raise MemoryLimitError(f"training needs about {estimate.describe()}{runs} at batch_size {batch_size} x "
                               f"seq_len {seq_len}, but {device.type} has {gib(max(available, 0))} available"
                               f"{share_text(device, share)}: use a "
                               "smaller model or batch (or set memory_check false, --no-memory-check, to try "
                               "anyway)", path="memory")
    return estimate
