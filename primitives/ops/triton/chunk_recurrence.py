"""Triton kernels for the chunked linear recurrence shared by simple GLA and the (gated) delta rule.

Per head, chunks of C steps, G = chunk-local cumsum of the log gates, S_n = state at the start of chunk n:

    U_n     = U0_n - W_n S_n              (delta rule; for simple GLA W = 0 and U0 = v)
    S_{n+1} = exp(G_C) S_n + (k exp(G_C - G))^T U_n
    o_n     = scale [ (q exp(G)) S_n + (Q K^T * Gamma) U_n ],   Gamma_ij = exp(G_i - G_j) for j <= i

Four kernels: the forward state pass (one program per head, loop over chunks), the forward output
(one program per chunk and head), the backward state pass (reverse loop over chunks) and the per-chunk
gradients. W and U0 come from the WY representation computed in torch (batched triangular solves, which
autograd differentiates); this Function returns their gradients (dU0 = dU, dW = -dU S_n^T).

Tensors are `[B*H, T, D]` contiguous with T a multiple of C; K and V are padded to powers of two >= 16
inside the kernels by masked loads. Accumulation is fp32; `precision` is tl.dot's input precision
("ieee" for fp32 inputs, "tf32" allowed for reduced-precision inputs).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

Tensor = torch.Tensor


@triton.jit
def state_tile(K, V, BK: tl.constexpr, BV: tl.constexpr):
    """Column offsets and masks of K- and V-wide rows, and the offsets and mask of a [BK, BV] state tile."""
    offs_k = tl.arange(0, BK)
    offs_v = tl.arange(0, BV)
    mask_k = offs_k < K
    mask_v = offs_v < V
    return offs_k, offs_v, mask_k, mask_v, offs_k[:, None] * V + offs_v[None, :], mask_k[:, None] & mask_v[None, :]


@triton.jit
def load_rows(ptr, bh, t, T, D, offs, mask):
    """Rows `t` of head `bh` of a `[BH, T, D]` tensor, the padded columns as 0."""
    return tl.load(ptr + bh * T * D + t[:, None] * D + offs[None, :], mask=mask[None, :], other=0.0)


@triton.jit
def _fwd_states_kernel(k_ptr, u0_ptr, w_ptr, g_ptr, s0_ptr, states_ptr, u_ptr, final_ptr,
                       T, N, K, V, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                       HAS_W: tl.constexpr, HAS_S0: tl.constexpr, PRECISION: tl.constexpr):
    bh = tl.program_id(0)
    offs_c = tl.arange(0, C)
    offs_k, offs_v, mask_k, mask_v, kv_offsets, kv_mask = state_tile(K, V, BK, BV)
    if HAS_S0:
        S = tl.load(s0_ptr + bh * K * V + kv_offsets, mask=kv_mask, other=0.0)
    else:
        S = tl.zeros([BK, BV], dtype=tl.float32)
    for n in range(N):
        t = n * C + offs_c
        tl.store(states_ptr + (bh * N + n) * K * V + kv_offsets, S, mask=kv_mask)
        k = tl.load(k_ptr + bh * T * K + t[:, None] * K + offs_k[None, :], mask=mask_k[None, :], other=0.0)
        u = tl.load(u0_ptr + bh * T * V + t[:, None] * V + offs_v[None, :], mask=mask_v[None, :], other=0.0)
        G = tl.load(g_ptr + bh * T + t)
        G_last = tl.load(g_ptr + bh * T + n * C + C - 1)
        if HAS_W:
            w = tl.load(w_ptr + bh * T * K + t[:, None] * K + offs_k[None, :], mask=mask_k[None, :], other=0.0)
            u = u - tl.dot(w, S, input_precision=PRECISION)
            tl.store(u_ptr + bh * T * V + t[:, None] * V + offs_v[None, :], u, mask=mask_v[None, :])
        k_end = k * tl.exp(G_last - G)[:, None]
        S = S * tl.exp(G_last) + tl.dot(tl.trans(k_end), u, input_precision=PRECISION)
    tl.store(final_ptr + bh * K * V + kv_offsets, S, mask=kv_mask)


@triton.jit
def _intra_decay(G, offs_c):
    """Gamma_ij = exp(G_i - G_j) for j <= i, else 0 (masked before exp)."""
    causal = offs_c[:, None] >= offs_c[None, :]
    return tl.exp(tl.where(causal, G[:, None] - G[None, :], float("-inf")))


@triton.jit
def _fwd_output_kernel(q_ptr, k_ptr, u_ptr, g_ptr, states_ptr, o_ptr, scale,
                       T, N, K, V, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                       PRECISION: tl.constexpr):
    n = tl.program_id(0)
    bh = tl.program_id(1)
    offs_c = tl.arange(0, C)
    offs_k = tl.arange(0, BK)
    offs_v = tl.arange(0, BV)
    mask_k = offs_k < K
    mask_v = offs_v < V
    t = n * C + offs_c
    q = tl.load(q_ptr + bh * T * K + t[:, None] * K + offs_k[None, :], mask=mask_k[None, :], other=0.0)
    k = tl.load(k_ptr + bh * T * K + t[:, None] * K + offs_k[None, :], mask=mask_k[None, :], other=0.0)
    u = tl.load(u_ptr + bh * T * V + t[:, None] * V + offs_v[None, :], mask=mask_v[None, :], other=0.0)
    G = tl.load(g_ptr + bh * T + t)
    S = tl.load(states_ptr + (bh * N + n) * K * V + offs_k[:, None] * V + offs_v[None, :],
                mask=mask_k[:, None] & mask_v[None, :], other=0.0)
    o = tl.dot(q * tl.exp(G)[:, None], S, input_precision=PRECISION)
    A = tl.dot(q, tl.trans(k), input_precision=PRECISION) * _intra_decay(G, offs_c)
    o += tl.dot(A, u, input_precision=PRECISION)
    tl.store(o_ptr + bh * T * V + t[:, None] * V + offs_v[None, :], o * scale, mask=mask_v[None, :])


@triton.jit
def _bwd_states_kernel(q_ptr, k_ptr, w_ptr, g_ptr, do_ptr, dfinal_ptr, dstates_ptr, du_ptr, ds0_ptr, scale,
                       T, N, K, V, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                       HAS_W: tl.constexpr, HAS_DFINAL: tl.constexpr, PRECISION: tl.constexpr):
    """dS_n = exp(G_C) dS_{n+1} + scale (q exp(G))^T do - W^T dU_n, dU_n = k_end dS_{n+1} + scale A^T do."""
    bh = tl.program_id(0)
    offs_c = tl.arange(0, C)
    offs_k, offs_v, mask_k, mask_v, kv_offsets, kv_mask = state_tile(K, V, BK, BV)
    if HAS_DFINAL:
        dS = tl.load(dfinal_ptr + bh * K * V + kv_offsets, mask=kv_mask, other=0.0)
    else:
        dS = tl.zeros([BK, BV], dtype=tl.float32)
    for i in range(N):
        n = N - 1 - i
        t = n * C + offs_c
        tl.store(dstates_ptr + (bh * N + n) * K * V + kv_offsets, dS, mask=kv_mask)
        q = tl.load(q_ptr + bh * T * K + t[:, None] * K + offs_k[None, :], mask=mask_k[None, :], other=0.0)
        do = tl.load(do_ptr + bh * T * V + t[:, None] * V + offs_v[None, :], mask=mask_v[None, :], other=0.0)
        G = tl.load(g_ptr + bh * T + t)
        G_last = tl.load(g_ptr + bh * T + n * C + C - 1)
        dS_next = dS * tl.exp(G_last) + tl.dot(tl.trans(q * tl.exp(G)[:, None]), do * scale,
                                                input_precision=PRECISION)
        if HAS_W:
            k = tl.load(k_ptr + bh * T * K + t[:, None] * K + offs_k[None, :], mask=mask_k[None, :], other=0.0)
            w = tl.load(w_ptr + bh * T * K + t[:, None] * K + offs_k[None, :], mask=mask_k[None, :], other=0.0)
            A = tl.dot(q, tl.trans(k), input_precision=PRECISION) * _intra_decay(G, offs_c)
            du = tl.dot(k * tl.exp(G_last - G)[:, None], dS, input_precision=PRECISION)
            du += tl.dot(tl.trans(A), do * scale, input_precision=PRECISION)
            tl.store(du_ptr + bh * T * V + t[:, None] * V + offs_v[None, :], du, mask=mask_v[None, :])
            dS_next -= tl.dot(tl.trans(w), du, input_precision=PRECISION)
        dS = dS_next
    tl.store(ds0_ptr + bh * K * V + kv_offsets, dS, mask=kv_mask)


@triton.jit
def _bwd_chunk_kernel(q_ptr, k_ptr, u_ptr, g_ptr, do_ptr, states_ptr, dstates_ptr,
                      dq_ptr, dk_ptr, du_ptr, dg_ptr, scale,
                      T, N, K, V, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                      PRECISION: tl.constexpr):
    """Gradients of q, k, U and G within one chunk, given S_n (start) and dS_{n+1} (end)."""
    n = tl.program_id(0)
    bh = tl.program_id(1)
    offs_c = tl.arange(0, C)
    offs_k = tl.arange(0, BK)
    offs_v = tl.arange(0, BV)
    mask_k = offs_k < K
    mask_v = offs_v < V
    t = n * C + offs_c
    ck_offsets = bh * T * K + t[:, None] * K + offs_k[None, :]
    cv_offsets = bh * T * V + t[:, None] * V + offs_v[None, :]
    kv_offsets = (bh * N + n) * K * V + offs_k[:, None] * V + offs_v[None, :]
    kv_mask = mask_k[:, None] & mask_v[None, :]
    q = tl.load(q_ptr + ck_offsets, mask=mask_k[None, :], other=0.0)
    k = tl.load(k_ptr + ck_offsets, mask=mask_k[None, :], other=0.0)
    u = tl.load(u_ptr + cv_offsets, mask=mask_v[None, :], other=0.0)
    do = tl.load(do_ptr + cv_offsets, mask=mask_v[None, :], other=0.0) * scale
    S = tl.load(states_ptr + kv_offsets, mask=kv_mask, other=0.0)
    dS = tl.load(dstates_ptr + kv_offsets, mask=kv_mask, other=0.0)
    G = tl.load(g_ptr + bh * T + t)
    G_last = tl.load(g_ptr + bh * T + n * C + C - 1)

    gamma = _intra_decay(G, offs_c)
    dA = tl.dot(do, tl.trans(u), input_precision=PRECISION) * gamma
    A = tl.dot(q, tl.trans(k), input_precision=PRECISION) * gamma
    decay_to_end = tl.exp(G_last - G)[:, None]
    dq = tl.dot(dA, k, input_precision=PRECISION)
    dq += tl.dot(do, tl.trans(S), input_precision=PRECISION) * tl.exp(G)[:, None]
    dk_state = tl.dot(u, tl.trans(dS), input_precision=PRECISION) * decay_to_end
    dk = tl.dot(tl.trans(dA), q, input_precision=PRECISION) + dk_state
    du = tl.dot(tl.trans(A), do, input_precision=PRECISION)
    du += tl.dot(k * decay_to_end, dS, input_precision=PRECISION)
    dG = tl.sum(q * dq, axis=1) - tl.sum(k * dk, axis=1)
    last = tl.sum(tl.sum(k * dk_state, axis=1), axis=0) + tl.exp(G_last) * tl.sum(tl.sum(S * dS, axis=1), axis=0)
    dG += tl.where(offs_c == C - 1, last, 0.0)
    tl.store(dq_ptr + ck_offsets, dq, mask=mask_k[None, :])
    tl.store(dk_ptr + ck_offsets, dk, mask=mask_k[None, :])
    tl.store(du_ptr + cv_offsets, du, mask=mask_v[None, :])
    tl.store(dg_ptr + bh * T + t, dG)


def kernel_meta(chunk_size: int, K: int, V: int, precision: str) -> dict:
    """The compile-time arguments of the chunk kernels: K and V padded to powers of two >= 16."""
    return dict(C=chunk_size, BK=max(16, triton.next_power_of_2(K)), BV=max(16, triton.next_power_of_2(V)),
                PRECISION=precision)


class ChunkRecurrence(torch.autograd.Function):
    """(q, k, u0, G, w | None, s0 | None) -> (o, final state); all `[BH, T, D]` fp32 contiguous."""

    @staticmethod
    def forward(ctx, q, k, u0, G, w, s0, scale: float, chunk_size: int, precision: str):
        BH, T, K = q.shape
        V = u0.shape[-1]
        N = T // chunk_size
        states = q.new_empty(BH, N, K, V)
        final = q.new_empty(BH, K, V)
        u = torch.empty_like(u0) if w is not None else u0
        meta = kernel_meta(chunk_size, K, V, precision)
        _fwd_states_kernel[(BH,)](k, u0, w if w is not None else k, G, s0 if s0 is not None else final,
                                  states, u, final, T, N, K, V, HAS_W=w is not None, HAS_S0=s0 is not None,
                                  **meta)
        o = torch.empty_like(u0)
        _fwd_output_kernel[(N, BH)](q, k, u, G, states, o, scale, T, N, K, V, **meta)
        ctx.save_for_backward(q, k, u, G, w, states)
        ctx.has_s0 = s0 is not None
        ctx.scale, ctx.meta = scale, meta
        return o, final

    @staticmethod
    def backward(ctx, do, dfinal):
        q, k, u, G, w, states = ctx.saved_tensors
        BH, T, K = q.shape
        V = u.shape[-1]
        N = states.shape[1]
        do = do.contiguous()
        dstates = torch.empty_like(states)
        du_recurrence = torch.empty_like(u) if w is not None else u
        ds0 = q.new_empty(BH, K, V)
        _bwd_states_kernel[(BH,)](q, k, w if w is not None else k, G, do,
                                  dfinal.contiguous() if dfinal is not None else ds0, dstates,
                                  du_recurrence, ds0, ctx.scale, T, N, K, V, HAS_W=w is not None,
                                  HAS_DFINAL=dfinal is not None, **ctx.meta)
        dq, dk, du, dG = torch.empty_like(q), torch.empty_like(k), torch.empty_like(u), torch.empty_like(G)
        _bwd_chunk_kernel[(N, BH)](q, k, u, G, do, states, dstates, dq, dk, du, dG, ctx.scale,
                                   T, N, K, V, **ctx.meta)
        dw = None
        if w is not None:
            C = ctx.meta["C"]
            dw = -(du.view(BH, N, C, V) @ states.transpose(-1, -2)).view(BH, T, K)
        return dq, dk, du, dG, dw, (ds0 if ctx.has_s0 else None), None, None, None
