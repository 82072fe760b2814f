"""The chunk-to-chunk part of the delta-rule family (KDA, RWKV-7) from its per-chunk WY pieces, with a
written-out backward, in the chunk-major layout `[N, B * H, C, D]`.

Every chunked form of the family reduces, within a chunk starting from state S_0, to

    [W | U_0] = (I + A)^{-1} [R_k | R_v];   U = U_0 - W S_0;
    S_C = diag(d) S_0 + Kd^T U + E;         O = Q_s S_0 + P U

with A `[C, C]` strictly lower, P `[C, C]`, R_k, Q_s, Kd `[C, K]`, R_v `[C, V]`, d `[K]` the decay over the
whole chunk (None: 1) and E `[K, V]` an extra state update (None: 0); how an operator builds these pieces from
its inputs (scores, gates) stays under autograd in its own module. Only the two updates of U and S are
sequential; everything else is one batched matmul over all chunks and heads. Chunk-major so that the loops over
chunks read and write whole contiguous blocks (`x[n]`) with in-place `baddbmm`. The backward is the same passes
in reverse (the loop carrying the state's gradient), with d(I + A)^{-1} = -T^T dT T^T for T = (I + A)^{-1}.
"""

from __future__ import annotations

import torch

from primitives.ops.chunked_delta_rule import invert_unit_lower

Tensor = torch.Tensor


class _WYChunkScan(torch.autograd.Function):
    """A, P `[N, BH, C, C]`, R_k, Q_s, Kd `[N, BH, C, K]`, R_v `[N, BH, C, V]`, d `[N, BH, K]` or None,
    E `[N, BH, K, V]` or None, s0 `[BH, K, V]` -> O `[N, BH, C, V]`, the final state `[BH, K, V]`."""

    @staticmethod
    def forward(ctx, A: Tensor, P: Tensor, r_k: Tensor, r_v: Tensor, q_start: Tensor, k_end: Tensor,
                decay: Tensor | None, extra: Tensor | None, s0: Tensor):
        N, BH, C, K = r_k.shape
        V = r_v.shape[-1]
        T = invert_unit_lower(A)
        WU = T @ torch.cat([r_k, r_v], dim=-1)
        W, U = WU.split([K, V], dim=-1)
        U = U.contiguous()  # holds U_0 until the loop makes it U
        k_end_t = k_end.transpose(-1, -2)
        states = s0.new_empty(N + 1, BH, K, V)  # states[n]: the state before chunk n
        states[0] = s0
        for n in range(N):
            state = states[n]
            U[n].baddbmm_(W[n], state, alpha=-1.0)
            start = state if decay is None else state * decay[n].unsqueeze(-1)
            if extra is not None:
                start = start + extra[n]
            torch.baddbmm(start, k_end_t[n], U[n], out=states[n + 1])
        starts = states[:N]
        o = torch.matmul(P, U).add_(q_start @ starts)
        ctx.save_for_backward(T, WU, U, starts, P, q_start, k_end, decay)
        ctx.has_extra = extra is not None
        return o, states[N]

    @staticmethod
    def backward(ctx, d_o: Tensor, d_state: Tensor):
        T, WU, U, starts, P, q_start, k_end, decay = ctx.saved_tensors
        N, BH, C, K = q_start.shape
        W_t = WU[..., :K].transpose(-1, -2)
        d_o = d_o.contiguous()
        d_q_start = d_o @ starts.transpose(-1, -2)
        d_starts = q_start.transpose(-1, -2) @ d_o
        d_P = d_o @ U.transpose(-1, -2)
        d_U = torch.matmul(P.transpose(-1, -2), d_o)
        d_ends = d_starts.new_empty(N + 1, *d_starts.shape[1:])  # d_ends[n + 1]: reaching the state after chunk n
        d_ends[N] = d_state
        for n in range(N - 1, -1, -1):
            carry = d_ends[n + 1]
            d_U[n].baddbmm_(k_end[n], carry)
            into = d_starts[n] + (carry if decay is None else carry * decay[n].unsqueeze(-1))
            torch.baddbmm(into, W_t[n], d_U[n], alpha=-1.0, out=d_ends[n])
        d_after, d_s0 = d_ends[1:], d_ends[0]
        d_decay = None if decay is None else (d_after * starts).sum(-1)
        d_k_end = U @ d_after.transpose(-1, -2)
        d_W = -(d_U @ starts.transpose(-1, -2))
        d_r = T.transpose(-1, -2) @ torch.cat([d_W, d_U], dim=-1)
        d_A = (d_r @ WU.transpose(-1, -2)).tril_(-1).neg_()
        d_r_k, d_r_v = d_r.split([K, d_U.shape[-1]], dim=-1)
        return (d_A, d_P, d_r_k, d_r_v, d_q_start, d_k_end, d_decay, d_after if ctx.has_extra else None, d_s0)


def wy_chunk_scan(A: Tensor, P: Tensor, r_k: Tensor, r_v: Tensor, q_start: Tensor, k_end: Tensor,
                  decay: Tensor | None, extra: Tensor | None, s0: Tensor) -> tuple[Tensor, Tensor]:
    """O `[N, BH, C, V]` and the final state `[BH, K, V]` of the chunked recurrence (module docstring), fp32 or
    fp64 throughout (no autocast inside)."""
    with torch.autocast(A.device.type, enabled=False):
        return _WYChunkScan.apply(A, P, r_k, r_v, q_start, k_end, decay, extra, s0)
