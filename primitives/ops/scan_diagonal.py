"""Chunked diagonal linear recurrence (Mamba-1 selective scan, minGRU, RG-LRU):

    h_t = exp(log_a_t) * h_{t-1} + b_t        elementwise over any trailing shape `[B, T, *]`

The sequence is cut into N chunks of C steps and scanned in two vectorised sweeps, so Python runs
C + N iterations (72 for T = 512, C = 64), never T:

1. within every chunk at once, from a zero start: h_t = a_t h_{t-1} + b_t for t = 1 .. C-1, each step one
   fused multiply-add over [B, N, *]; alongside, the decay since the chunk start, prod_{s <= t} a_s
   (a cumulative product of numbers in (0, 1] for decays: it can only underflow to 0, never overflow);
2. between chunks: the state entering chunk n is carried over the chunk ends, and every step adds
   (decay since the chunk start) * (state entering its chunk).

Each step of sweep 1 works on a slice that stays in cache, which makes this an order of magnitude faster on
CPU than a log-depth (Hillis-Steele) scan, whose log2(C) passes each stream the whole [B, T, *] tensor.

The backward pass is the same scan run backwards in time (a custom autograd Function in plain torch), so
memory is only the inputs and h itself:

    dh~_t = dh_t + exp(log_a_{t+1}) dh~_{t+1};  db_t = dh~_t;  dlog_a_t = dh~_t exp(log_a_t) h_{t-1}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from primitives.ops.chunking import compute_dtype

Tensor = torch.Tensor


def _scan(a: Tensor, b: Tensor, h0: Tensor | None, chunk_size: int, reverse: bool = False) -> Tensor:
    """h_t = a_t h_{t-1} + b_t without autograd bookkeeping; a, b `[B, T, *]` (same shape) -> h `[B, T, *]`.

    reverse: h_t = a_t h_{t+1} + b_t, from the last step back (the backward pass).
    """
    B, T = b.shape[:2]
    rest = b.shape[2:]
    C = min(chunk_size, T)
    pad = (-T) % C
    if pad:  # steps after T: dropped from h, and (b = 0) zero in the reverse scan
        widths = [0, 0] * len(rest) + [0, pad]
        a, b = F.pad(a, widths), F.pad(b, widths)
    N = b.shape[1] // C
    a = a.reshape(B, N, C, *rest)
    h = b.reshape(B, N, C, *rest).clone()
    carry = N > 1 or h0 is not None
    decay = a.clone() if carry else a  # becomes the product of a from the chunk's entry step
    steps, before = (range(C - 2, -1, -1), 1) if reverse else (range(1, C), -1)
    for t in steps:
        h[:, :, t].addcmul_(a[:, :, t], h[:, :, t + before])
        if carry:
            decay[:, :, t].mul_(decay[:, :, t + before])  # torch.cumprod over dim 2 is ~10x slower on CPU
    if carry:
        state = h0 if h0 is not None else b.new_zeros(B, *rest)
        starts = [state] * N
        exit_step = 0 if reverse else -1
        for n in (range(N - 1, -1, -1) if reverse else range(N)):
            starts[n] = state
            state = decay[:, n, exit_step] * state + h[:, n, exit_step]
        h.addcmul_(decay, torch.stack(starts, dim=1).unsqueeze(2))
    return h.reshape(B, N * C, *rest)[:, :T]


class _ScanDiagonal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, log_a: Tensor, b: Tensor, h0: Tensor | None, chunk_size: int) -> Tensor:
        a = log_a.exp()
        h = _scan(a, b, h0, chunk_size)
        ctx.save_for_backward(a, h, h0)
        ctx.chunk_size = chunk_size
        return h

    @staticmethod
    def backward(ctx, dh: Tensor):
        a, h, h0 = ctx.saved_tensors
        a_next = F.pad(a[:, 1:], [0, 0] * (a.dim() - 2) + [0, 1])
        dh_tilde = _scan(a_next, dh.contiguous(), None, ctx.chunk_size, reverse=True)
        d_log_a = dh_tilde * a  # times h_{t-1}:
        d_log_a[:, 1:] *= h[:, :-1]
        if h0 is None:
            d_log_a[:, 0] = 0.0
        else:
            d_log_a[:, 0] *= h0
        d_h0 = a[:, 0] * dh_tilde[:, 0] if h0 is not None and ctx.needs_input_grad[2] else None
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

