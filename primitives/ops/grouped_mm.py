"""Grouped matrix multiply: rows of `x` sorted by group, each group multiplied by its own matrix.

    y[rows of group g] = x[rows of group g] @ weight[g]        x [N, K], weight [G, K, M] -> y [N, M]

Two implementations of the same product:

* `torch._grouped_mm` (one call; fused kernels on recent GPUs). Used where the installed torch has it,
  it runs for the device and dtype (probed once per device and dtype), and the rows are 16-byte aligned
  (K and M multiples of 16 / element size), which the kernel requires.
* a loop over groups on contiguous row slices (never over rows): works everywhere.

`impl` selects "grouped", "loop" or "auto" (grouped where usable, else the loop).
"""

from __future__ import annotations

from typing import Literal

import torch

Impl = Literal["auto", "grouped", "loop"]

_probe_results: dict[tuple[str, int | None, torch.dtype], bool] = {}


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous.

    `torch._grouped_mm`'s backward rejects gradients with zero or unaligned strides (e.g. from `.sum()`).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


def grouped_mm_loop(x: torch.Tensor, weight: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """The per-group reference: one matmul per group over its contiguous slice of rows."""
    pieces = []
    start = 0
    for group, count in enumerate(counts):
        if count:
            pieces.append(x[start:start + count] @ weight[group])
        start += count
    if not pieces:  # no rows at all
        return x @ weight[0]
    return torch.cat(pieces, dim=0)


def _aligned(size: int, dtype: torch.dtype) -> bool:
    return size % max(1, 16 // dtype.itemsize) == 0


def _probe(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `torch._grouped_mm` runs forward and backward on this device and dtype and is correct."""
    key = (device.type, device.index, dtype)
    if key not in _probe_results:
        ok = False
        if hasattr(torch, "_grouped_mm"):
            try:
                with torch.enable_grad():
                    x = torch.randn(12, 16, device=device, dtype=dtype, requires_grad=True)
                    w = torch.randn(3, 16, 8, device=device, dtype=dtype, requires_grad=True)
                    counts = [5, 0, 7]
                    offsets = torch.tensor(counts, device=device).cumsum(0).to(torch.int32)
                    y = torch._grouped_mm(x, w, offs=offsets)
                    y.backward(torch.ones_like(y))
                    reference = grouped_mm_loop(x.detach().float(), w.detach().float(), counts)
                    tol = 1e-3 if dtype == torch.float32 else 5e-2
                    ok = torch.allclose(y.detach().float(), reference, rtol=tol, atol=tol * 16)
            except (RuntimeError, NotImplementedError, TypeError):
                ok = False
        _probe_results[key] = ok
    return _probe_results[key]


def grouped_mm_usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `torch._grouped_mm` can compute this product (available, probed, aligned)."""
    k, m = weight.shape[-2], weight.shape[-1]
    return (x.dtype == weight.dtype and _aligned(k, x.dtype) and _aligned(m, x.dtype)
            and _probe(x.device, x.dtype))


def grouped_mm(x: torch.Tensor, weight: torch.Tensor, counts: torch.Tensor,
               impl: Impl = "auto") -> torch.Tensor:
    """x [N, K] (rows sorted by group), weight [G, K, M], counts [G] rows per group (sum N) -> [N, M]."""
    if impl not in ("auto", "grouped", "loop"):
        raise ValueError(f"impl must be 'auto', 'grouped' or 'loop', got {impl!r}")
    use_grouped = impl == "grouped" or (impl == "auto" and grouped_mm_usable(x, weight))
    if use_grouped:
        offsets = counts.cumsum(0).to(torch.int32)
        return _ContiguousGrad.apply(torch._grouped_mm(x.contiguous(), weight, offs=offsets))
    return grouped_mm_loop(x, weight, counts.tolist())
