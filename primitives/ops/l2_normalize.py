"""L2 normalisation over the last dimension with a written-out backward (the delta rules' q and k).

    y = x / max(|x|, eps);   dx = (dy - y (dy . y)) / max(|x|, eps)   (dx = dy / eps where |x| < eps)

Equals `F.normalize(x, dim=-1, eps=eps)` (the reference); autograd's graph of that one (norm, clamp, expand,
divide and their backwards) costs about twice these three passes on CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


class _L2Normalize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, eps: float) -> Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min_(eps)
        y = x / norm
        ctx.save_for_backward(y, norm)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        y, norm = ctx.saved_tensors
        along = (dy * y).sum(-1, keepdim=True).masked_fill_(norm <= ctx.eps, 0.0)  # clamped: no path through |x|
        return (dy - y * along) / norm, None


def l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """x / max(|x|, eps) over the last dimension (as `F.normalize(x, dim=-1)`, which runs when no gradient is
    wanted: decoding keeps its few small ops)."""
    if not (x.requires_grad and torch.is_grad_enabled()):
        return F.normalize(x, dim=-1, eps=eps)
    return _L2Normalize.apply(x, eps)
