"""Mamba-1's selective scan, with the discretisation fused in:

    h_t = exp(dt_t A) * h_{t-1} + x_t B_t ;   y_t = h_t C_t        (the input x_t is dt_t u_t in Mamba)

with dt, x `[B, T, E]`, A `[E, N]`, B, C `[B, T, N]` and a state h `[B, E, N]` per sequence. Every element of
the `[B, T, E, N]` state sequence is an exp and a multiply-add that no matmul can take over (the decays differ
per channel and state, so they do not factor out of a chunk's sums the way Mamba-2's scalar decays do). What
makes it slow in plain PyTorch is memory, not arithmetic: materialising the decays, the inputs and h for the
whole sequence streams (and on CPU page-faults) several `[B, T, E, N]` tensors per pass. So this form walks
time in blocks of `block_length` steps, laid out `[T, B, N, E]` (time-major, so that a step is one
contiguous slice; channels innermost, so that every op vectorises over E): per block the decays and inputs
are built in one op each into buffers reused from block to block, the recurrence runs step by step into the
block's h, and y comes out of one batched matmul with C. The decays are computed as 2^(dt A log2 e), the same
number as exp(dt A) up to rounding (torch's exp2 is about twice as fast as its exp on CPU). Only the state
entering each block is kept; the backward (a custom autograd Function) rebuilds a block from it and runs
the recurrence backwards in time:

    dh~_t = C_t^T dy_t + exp(dt_{t+1} A) dh~_{t+1}              (dh~ after the last step: the final state's grad)
    dx_t = dh~_t B_t^T;   dB_t = x_t dh~_t;   dC_t = dy_t h_t
    g_t = dh~_t * exp(dt_t A) * h_{t-1}:   ddt_t = sum_n g_t A;   dA = sum_{b, t} g_t dt_t;   dh_0 = exp(dt_1 A) dh~_1

The reference is `naive_selective_scan` (the step-by-step recurrence); tests hold the two equal.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from primitives.ops.chunking import compute_dtype
from primitives.ops.scan_diagonal import scan_diagonal

Tensor = torch.Tensor

LOG2E = math.log2(math.e)  # exp(z) = 2^(z log2 e)
BLOCK_ELEMENTS = 1 << 18  # elements of one block's [L, B, N, E] buffer (1 MiB in fp32): a few fit in cache
MIN_BLOCK = 8  # the states kept for the backward (one per block) stay within 1/8 of the whole sequence's


def block_length(batch: int, channels: int, states: int, length: int) -> int:
    """Steps per block: about BLOCK_ELEMENTS elements of state per buffer, at least MIN_BLOCK (bounding what
    the backward keeps), at most the length."""
    return max(1, min(length, max(MIN_BLOCK, BLOCK_ELEMENTS // max(1, batch * channels * states))))


def _block_inputs(dt: Tensor, A2: Tensor, x: Tensor, Bm: Tensor, decay: Tensor, states: Tensor) -> None:
    """Into the block buffers `[L, B, N, E]`: decays exp(dt A) = 2^(dt A2) and inputs x B; dt, x `[L, B, E]`,
    A2 = A log2(e) `[N, E]`, Bm `[L, B, N]`."""
    torch.mul(dt.unsqueeze(-2), A2, out=decay).exp2_()
    torch.mul(x.unsqueeze(-2), Bm.unsqueeze(-1), out=states)


def _blocks(t: Tensor, block: int) -> tuple[Tensor, ...]:
    """`t` split into blocks of `block` steps along time (dim 0); no split call for a single block (decoding)."""
    return (t,) if t.shape[0] <= block else t.split(block)


def _run_block(decays: tuple[Tensor, ...], states: tuple[Tensor, ...], h: Tensor, length: int) -> Tensor:
    """In place: the first `length` steps of `states` (the block buffer's steps, holding the inputs x B) become
    h_t; returns the last. The buffers' steps are unbound once per call, not once per block (an unbind and its
    selects cost about as much as the multiply-adds on a small block)."""
    for i in range(length):
        h = states[i].addcmul_(decays[i], h)
    return h


def _contract_channels(v: Tensor, states: Tensor, out: Tensor) -> None:
    """out[t, b, n] = sum_e v[t, b, e] states[t, b, n, e] for v `[L, B, E]`, states `[L, B, N, E]` (one
    batched matmul against the transposed states: a matrix-vector bmm the other way round is ~10x slower)."""
    L, Bsz, N, E = states.shape
    torch.bmm(v.reshape(L * Bsz, 1, E), states.view(L * Bsz, N, E).transpose(1, 2), out=out.view(L * Bsz, 1, N))


class _SelectiveScan(torch.autograd.Function):
    """Time-major, channels innermost: dt, x `[T, B, E]`, A `[N, E]`, Bm, Cm `[T, B, N]`, h0 `[B, N, E]`
    -> y `[T, B, E]`, h_T `[B, N, E]`.

    With E innermost every op vectorises over channels and the contractions over N and E are small matmuls.
    The block buffers are allocated once per call and reused: a fresh multi-MiB tensor per block costs more
    in page faults than the arithmetic it holds.
    """

    @staticmethod
    def forward(ctx, dt: Tensor, A: Tensor, x: Tensor, Bm: Tensor, Cm: Tensor, h0: Tensor,
                block: int) -> tuple[Tensor, Tensor]:
        T, Bsz, E = x.shape
        N = A.shape[0]
        y = x.new_empty(T, Bsz, E)
        decay_buf, states_buf = (x.new_empty(block, Bsz, N, E) for _ in range(2))
        decay_steps, state_steps = decay_buf.unbind(0), states_buf.unbind(0)
        A2, h, entries = A * LOG2E, h0, []
        for dt_b, x_b, B_b, C_b, y_b in zip(*(_blocks(t, block) for t in (dt, x, Bm, Cm, y))):
            L = dt_b.shape[0]
            decay, states = decay_buf[:L], states_buf[:L]
            _block_inputs(dt_b, A2, x_b, B_b, decay, states)
            entries.append(h)
            h = _run_block(decay_steps, state_steps, h, L).clone()
            torch.bmm(C_b.view(L * Bsz, 1, N), states.view(L * Bsz, N, E), out=y_b.view(L * Bsz, 1, E))
        ctx.save_for_backward(dt, A, x, Bm, Cm, *entries)
        ctx.block = block
        return y, h

    @staticmethod
    def backward(ctx, dy: Tensor, dh_last: Tensor):
        dt, A, x, Bm, Cm, *entries = ctx.saved_tensors
        T, Bsz, E = x.shape
        N = A.shape[0]
        block = ctx.block
        dy = dy.contiguous()
        d_dt, d_x = torch.empty_like(dt), torch.empty_like(x)
        d_B, d_C = torch.empty_like(Bm), torch.empty_like(Cm)
        d_A, A2 = torch.zeros_like(A), A * LOG2E
        decay_buf, states_buf, grad_buf, temp_buf = (x.new_empty(block, Bsz, N, E) for _ in range(4))
        carry = dh_last  # gradient reaching h at the end of the block from the steps after it
        steps_ones, states_ones = x.new_ones(1, block * Bsz), x.new_ones(1, 1, N)  # sums as matmuls: d_A, d_dt
        decay_steps, state_steps, grad_steps = decay_buf.unbind(0), states_buf.unbind(0), grad_buf.unbind(0)
        blocks = zip(entries, *(_blocks(t, block) for t in (dt, x, Bm, Cm, dy, d_dt, d_x, d_B, d_C)))
        for h_entry, dt_b, x_b, B_b, C_b, dy_b, d_dt_b, d_x_b, d_B_b, d_C_b in reversed(list(blocks)):
            L = dt_b.shape[0]
            flat = L * Bsz
            decay, states, grad, temp = decay_buf[:L], states_buf[:L], grad_buf[:L], temp_buf[:L]
            _block_inputs(dt_b, A2, x_b, B_b, decay, states)
            _run_block(decay_steps, state_steps, h_entry, L)
            _contract_channels(dy_b, states, d_C_b)
            torch.mul(dy_b.unsqueeze(-2), C_b.unsqueeze(-1), out=grad)  # becomes dh~_t below
            grad_steps[L - 1].add_(carry)
            for i in range(L - 2, -1, -1):
                grad_steps[i].addcmul_(decay_steps[i + 1], grad_steps[i + 1])
            torch.bmm(B_b.view(flat, 1, N), grad.view(flat, N, E), out=d_x_b.view(flat, 1, E))
            _contract_channels(x_b, grad, d_B_b)
            g = decay.mul_(grad)  # exp(dt_t A) dh~_t, times h_{t-1} below
            carry = g[0].clone()
            g[1:].mul_(states[:L - 1])
            g[0].mul_(h_entry)
            g_dt = torch.mul(g, dt_b.unsqueeze(-2), out=temp).view(flat, N * E)
            d_A.view(1, N * E).addmm_(steps_ones[:, :flat], g_dt)
            torch.bmm(states_ones.expand(flat, 1, N), g.mul_(A).view(flat, N, E), out=d_dt_b.view(flat, 1, E))
        return d_dt, d_A, d_x, d_B, d_C, carry, None


def materialized_selective_scan(dt: Tensor, A: Tensor, x: Tensor, B: Tensor, C: Tensor,
                                initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The same scan with the `[B, T, E, N]` decays, inputs and states materialised and `scan_diagonal` over
    them: a few dozen large ops whatever the length, the better trade on a GPU, where the blocked form's
    per-step launches would dominate."""
    dtype = compute_dtype(x)
    log_a = dt.to(dtype).unsqueeze(-1) * A.to(dtype)
    b = x.to(dtype).unsqueeze(-1) * B.to(dtype).unsqueeze(-2)
    h_all, h_last = scan_diagonal(log_a, b, initial_state)
    return torch.einsum("bten,btn->bte", h_all, C.to(dtype)).to(x.dtype), h_last


def selective_scan(dt: Tensor, A: Tensor, x: Tensor, B: Tensor, C: Tensor, initial_state: Tensor | None = None,
                   block: int | None = None, form: Literal["auto", "blocked", "materialized"] = "auto",
                   ) -> tuple[Tensor, Tensor]:
    """y_t = h_t C_t with h_t = exp(dt_t A) h_{t-1} + x_t B_t; returns (y `[B, T, E]`, h at the end `[B, E, N]`).

    dt, x `[B, T, E]`; A `[E, N]`; B, C `[B, T, N]`; initial_state `[B, E, N]` (None: zeros). Computed in fp32
    (fp64 stays fp64); y comes back in x's dtype, the final state in the compute dtype. Equals
    `naive_selective_scan`. form "auto": the blocked form (this module's) on CPU, `materialized_selective_scan`
    on CUDA.
    """
    if form == "materialized" or (form == "auto" and x.is_cuda):
        return materialized_selective_scan(dt, A, x, B, C, initial_state)
    dtype = compute_dtype(x)
    Bsz, T, E = x.shape
    N = A.shape[-1]
    h0 = x.new_zeros(Bsz, E, N, dtype=dtype) if initial_state is None else initial_state.to(dtype)
    if T == 0:
        return x.new_zeros(Bsz, 0, E), h0
    block = block or block_length(Bsz, E, N, T)
    dt_t, x_t, B_t, C_t = (t.to(dtype).transpose(0, 1).contiguous() for t in (dt, x, B, C))
    A_t, h0_t = A.to(dtype).t().contiguous(), h0.transpose(1, 2).contiguous()
    y, h = _SelectiveScan.apply(dt_t, A_t, x_t, B_t, C_t, h0_t, block)
    return y.transpose(0, 1).contiguous().to(x.dtype), h.transpose(1, 2)  # [B, T, E] laid out for what follows
