"""One optimizer step: learning rate, batch, forward with the auxiliary losses, backward, clip, update."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from composer.training.setup import TrainState


def train_step(state: TrainState, lr: float, batch_size: int, grad_clip: float) -> float | None:
    """Train one step at learning rate `lr`; the training loss, or None when the loss or the gradient norm is
    not finite (then nothing is updated and the step does not count)."""
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    inputs, targets = state.task.train_batch(state.step, batch_size)
    inputs, targets = inputs.to(state.device, non_blocking=True), targets.to(state.device, non_blocking=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=state.device.type == "cuda"):
        logits, _, aux_losses = state.forward(inputs)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.reshape(-1), ignore_index=-100)
        if aux_losses:
            loss = loss + sum(aux_losses.values())
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = clip_grad_norm(state.model.parameters(), grad_clip)
    train_loss = loss.item()
    if not (math.isfinite(train_loss) and math.isfinite(grad_norm.item())):
        return None
    state.optimizer.step()
    state.step += 1
    return train_loss


def clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_(parameters, max_norm)` (the same norm and the same scaled gradients, bit for
    bit), with one multi-tensor call for the norms and one for the scaling on every device: torch picks its
    multi-tensor path on CUDA only, and on a small CPU model the per-tensor loop it runs instead costs more than
    the clipping."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norms = torch._foreach_norm(grads, 2.0)
    total = torch.linalg.vector_norm(torch.stack([n.to(grads[0].device) for n in norms]), 2.0)
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total
