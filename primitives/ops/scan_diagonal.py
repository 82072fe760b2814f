"""Chunked diagonal linear recurrence (Mamba-1 selective scan, minGRU, RG-LRU):

    h_t = exp(log_a_t) * h_{t-1} + b_t        elementwise over any trailing shape `[B, T, *]`

Within chunks of C steps a log-depth (Hillis-Steele) scan combines pairs (A, b) with
(A_1, b_1) . (A_2, b_2) = (A_1 + A_2, exp(A_2) b_1 + b_2): log2(C) vectorised passes, where the log
decays are only ever added up, so exp sees sums of log gates (<= 0 for decays) and never a positive
difference. The chunk-end states are then carried between chunks by a short loop over chunks, and
h_t = h_local_t + exp(cumsum log_a)_t * h_start.

The backward pass is the same scan run backwards in time (a custom autograd Function in plain torch), so
memory is only the inputs and h itself, not the log2(C) intermediate passes:

    dh~_t = dh_t + exp(log_a_{t+1}) dh~_{t+1};  db_t = dh~_t;  dlog_a_t = dh~_t exp(log_a_t) h_{t-1}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from primitives.ops.chunking import compute_dtype

Tensor = torch.Tensor


def _shift(x: Tensor, d: int, fill: float) -> Tensor:
    """x shifted by d steps along dim 2 (the step within a chunk), the first d filled with `fill`."""
    pad = [0, 0] * (x.dim() - 3) + [d, 0]
    return F.pad(x[:, :, :-d], pad, value=fill)


def _scan(log_a: Tensor, b: Tensor, h0: Tensor | None, chunk_size: int) -> Tensor:
    """Forward scan without autograd bookkeeping. log_a, b `[B, T, *]` (same shape) -> h `[B, T, *]`."""
    B, T = b.shape[:2]
    rest = b.shape[2:]
    C = min(chunk_size, T)
    pad = (-T) % C
    if pad:
        widths = [0, 0] * len(rest) + [0, pad]
        log_a, b = F.pad(log_a, widths), F.pad(b, widths)
    N = b.shape[1] // C
    A = log_a.reshape(B, N, C, *rest)
    h = b.reshape(B, N, C, *rest)
    d = 1
    while d < C:
        h = h + A.exp() * _shift(h, d, 0.0)
        A = A + _shift(A, d, 0.0)
        d *= 2
    state = h0 if h0 is not None else b.new_zeros(B, *rest)
    starts = []
    for n in range(N):
        starts.append(state)
        state = A[:, n, -1].exp() * state + h[:, n, -1]
    h = h + A.exp() * torch.stack(starts, dim=1).unsqueeze(2)
    return h.reshape(B, N * C, *rest)[:, :T]


class _ScanDiagonal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, log_a: Tensor, b: Tensor, h0: Tensor | None, chunk_size: int) -> Tensor:
        h = _scan(log_a, b, h0, chunk_size)
        ctx.save_for_backward(log_a, h, h0)
        ctx.chunk_size = chunk_size
        return h

    @staticmethod
    def backward(ctx, dh: Tensor):
        log_a, h, h0 = ctx.saved_tensors
        log_a_next = F.pad(log_a[:, 1:], [0, 0] * (log_a.dim() - 2) + [0, 1])
        dh_tilde = _scan(log_a_next.flip(1), dh.flip(1), None, ctx.chunk_size).flip(1)
        first = h0.unsqueeze(1) if h0 is not None else torch.zeros_like(h[:, :1])
        h_prev = torch.cat([first, h[:, :-1]], dim=1)
        d_log_a = dh_tilde * log_a.exp() * h_prev
        d_h0 = log_a[:, 0].exp() * dh_tilde[:, 0] if h0 is not None and ctx.needs_input_grad[2] else None
        return d_log_a, dh_tilde, d_h0, None


def scan_diagonal(log_a: Tensor, b: Tensor, initial_state: Tensor | None = None,
                  chunk_size: int = 64) -> tuple[Tensor, Tensor]:
    """h_t = exp(log_a_t) * h_{t-1} + b_t over `[B, T, *]`; returns (h for every t, h at the end).

    `log_a` broadcasts to the shape of `b`. Computed in fp32 (fp64 stays fp64); h comes back in b's dtype,
    the last state in the compute dtype.
    """
    dtype = compute_dtype(b)
    log_a = log_a.to(dtype).expand_as(b)
    h0 = initial_state.to(dtype) if initial_state is not None else None
    if b.shape[1] == 0:
        last = h0 if h0 is not None else b.new_zeros(b[:, 0].shape, dtype=dtype)
        return b, last
    h = _ScanDiagonal.apply(log_a.contiguous(), b.to(dtype).contiguous(), h0, chunk_size)
    return h.to(b.dtype), h[:, -1]

