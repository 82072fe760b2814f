"""Triton path of `chunk_gla` (CUDA, or CPU tensors under TRITON_INTERPRET=1).

Per head, chunks of C steps, G = chunk-local cumsum of the log gates `[T, K]`, S_n = state at the start of
chunk n, A_n = the chunk's causal scores sum_c q_ic k_jc exp(G_ic - G_jc):

    S_{n+1} = diag(exp(G_C)) S_n + (k exp(G_C - G))^T v
    o_n     = scale [ (q exp(G)) S_n + A_n v ]

The scores come from the torch form (`intra_chunk_scores`: one matmul per chunk, halving for very strong
decays), which autograd differentiates; the sequential state pass and the per-chunk outputs and gradients
are Triton kernels, all with exponents <= 0. The Function returns the gradient of A alongside those of
q, k, v and G through the state terms, and autograd adds A's share.

Tensors are `[B*H, T, D]` contiguous with T a multiple of C, A `[B*H, N, C, C]`; K and V are padded to
powers of two >= 16 inside the kernels by masked loads (a padded channel has k = q = 0 and G = 0).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from primitives.ops.chunked_gla import intra_chunk_scores
from primitives.ops.chunking import compute_dtype, resolve_scale, to_chunks
from primitives.ops.triton.chunk_recurrence import kernel_meta, load_rows, state_tile
from primitives.ops.triton.simple_gla import check_chunk_size, dot_precision, from_heads_layout

Tensor = torch.Tensor


@triton.jit
def _fwd_states_kernel(k_ptr, v_ptr, g_ptr, s0_ptr, states_ptr, final_ptr,
                       T, N, K, V, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                       HAS_S0: tl.constexpr, PRECISION: tl.constexpr):
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
        k = load_rows(k_ptr, bh, t, T, K, offs_k, mask_k)
        G = load_rows(g_ptr, bh, t, T, K, offs_k, mask_k)
        v = load_rows(v_ptr, bh, t, T, V, offs_v, mask_v)
        G_last = tl.load(g_ptr + bh * T * K + (n * C + C - 1) * K + offs_k, mask=mask_k, other=0.0)
        k_end = k * tl.exp(G_last[None, :] - G)
        S = S * tl.exp(G_last)[:, None] + tl.dot(tl.trans(k_end), v, input_precision=PRECISION)
    tl.store(final_ptr + bh * K * V + kv_offsets, S, mask=kv_mask)


@triton.jit
def _fwd_output_kernel(q_ptr, v_ptr, g_ptr, a_ptr, states_ptr, o_ptr, scale,
                       T, N, K, V, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                       PRECISION: tl.constexpr):
    n = tl.program_id(0)
    bh = tl.program_id(1)
    offs_c = tl.arange(0, C)
    offs_k, offs_v, mask_k, mask_v, kv_offsets, kv_mask = state_tile(K, V, BK, BV)
    t = n * C + offs_c
    q = load_rows(q_ptr, bh, t, T, K, offs_k, mask_k)
    G = load_rows(g_ptr, bh, t, T, K, offs_k, mask_k)
    v = load_rows(v_ptr, bh, t, T, V, offs_v, mask_v)
    A = tl.load(a_ptr + (bh * N + n) * C * C + offs_c[:, None] * C + offs_c[None, :])
    S = tl.load(states_ptr + (bh * N + n) * K * V + kv_offsets, mask=kv_mask, other=0.0)
    o = tl.dot(q * tl.exp(G), S, input_precision=PRECISION) + tl.dot(A, v, input_precision=PRECISION)
    tl.store(o_ptr + bh * T * V + t[:, None] * V + offs_v[None, :], o * scale, mask=mask_v[None, :])


@triton.jit
def _bwd_states_kernel(q_ptr, g_ptr, do_ptr, dfinal_ptr, dstates_ptr, ds0_ptr, scale,
                       T, N, K, V, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                       HAS_DFINAL: tl.constexpr, PRECISION: tl.constexpr):
    """dS_n = diag(exp(G_C)) dS_{n+1} + scale (q exp(G))^T do, in reverse chunk order."""
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
        q = load_rows(q_ptr, bh, t, T, K, offs_k, mask_k)
        G = load_rows(g_ptr, bh, t, T, K, offs_k, mask_k)
        do = load_rows(do_ptr, bh, t, T, V, offs_v, mask_v)
        G_last = tl.load(g_ptr + bh * T * K + (n * C + C - 1) * K + offs_k, mask=mask_k, other=0.0)
        dS = dS * tl.exp(G_last)[:, None] + tl.dot(tl.trans(q * tl.exp(G)), do * scale, input_precision=PRECISION)
    tl.store(ds0_ptr + bh * K * V + kv_offsets, dS, mask=kv_mask)


@triton.jit
def _bwd_chunk_kernel(q_ptr, k_ptr, v_ptr, g_ptr, a_ptr, do_ptr, states_ptr, dstates_ptr,
                      dq_ptr, dk_ptr, dv_ptr, dg_ptr, da_ptr, scale,
                      T, N, K, V, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                      PRECISION: tl.constexpr):
    """Gradients within one chunk, given S_n (start) and dS_{n+1} (end): of q, k and G through the state
    terms, of v, and of the scores A (causal part)."""
    n = tl.program_id(0)
    bh = tl.program_id(1)
    offs_c = tl.arange(0, C)
    offs_k, offs_v, mask_k, mask_v, kv_offsets, kv_mask = state_tile(K, V, BK, BV)
    t = n * C + offs_c
    ck_offsets = bh * T * K + t[:, None] * K + offs_k[None, :]
    cv_offsets = bh * T * V + t[:, None] * V + offs_v[None, :]
    cc_offsets = (bh * N + n) * C * C + offs_c[:, None] * C + offs_c[None, :]
    q = load_rows(q_ptr, bh, t, T, K, offs_k, mask_k)
    k = load_rows(k_ptr, bh, t, T, K, offs_k, mask_k)
    G = load_rows(g_ptr, bh, t, T, K, offs_k, mask_k)
    v = load_rows(v_ptr, bh, t, T, V, offs_v, mask_v)
    do = load_rows(do_ptr, bh, t, T, V, offs_v, mask_v) * scale
    A = tl.load(a_ptr + cc_offsets)
    S = tl.load(states_ptr + (bh * N + n) * K * V + kv_offsets, mask=kv_mask, other=0.0)
    dS = tl.load(dstates_ptr + (bh * N + n) * K * V + kv_offsets, mask=kv_mask, other=0.0)
    G_last = tl.load(g_ptr + bh * T * K + (n * C + C - 1) * K + offs_k, mask=mask_k, other=0.0)

    decay_to_end = tl.exp(G_last[None, :] - G)
    dq = tl.dot(do, tl.trans(S), input_precision=PRECISION) * tl.exp(G)
    dk = tl.dot(v, tl.trans(dS), input_precision=PRECISION) * decay_to_end
    dv = tl.dot(tl.trans(A), do, input_precision=PRECISION)
    dv += tl.dot(k * decay_to_end, dS, input_precision=PRECISION)
    causal = offs_c[:, None] >= offs_c[None, :]
    dA = tl.where(causal, tl.dot(do, tl.trans(v), input_precision=PRECISION), 0.0)
    dG = q * dq - k * dk
    last = tl.sum(k * dk, axis=0) + tl.exp(G_last) * tl.sum(S * dS, axis=1)
    dG += tl.where((offs_c == C - 1)[:, None], last[None, :], 0.0)
    tl.store(dq_ptr + ck_offsets, dq, mask=mask_k[None, :])
    tl.store(dk_ptr + ck_offsets, dk, mask=mask_k[None, :])
    tl.store(dg_ptr + ck_offsets, dG, mask=mask_k[None, :])
    tl.store(dv_ptr + cv_offsets, dv, mask=mask_v[None, :])
    tl.store(da_ptr + cc_offsets, dA)


class ChunkGLARecurrence(torch.autograd.Function):
    """(q, k, v, G, A, s0 | None) -> (o, final state); q, k, G `[BH, T, K]`, v `[BH, T, V]`, A `[BH, N, C, C]`."""

    @staticmethod
    def forward(ctx, q, k, v, G, A, s0, scale: float, chunk_size: int, precision: str):
        BH, T, K = q.shape
        V = v.shape[-1]
        N = T // chunk_size
        states = q.new_empty(BH, N, K, V)
        final = q.new_empty(BH, K, V)
        meta = kernel_meta(chunk_size, K, V, precision)
        _fwd_states_kernel[(BH,)](k, v, G, s0 if s0 is not None else final, states, final, T, N, K, V,
                                  HAS_S0=s0 is not None, **meta)
        o = torch.empty_like(v)
        _fwd_output_kernel[(N, BH)](q, v, G, A, states, o, scale, T, N, K, V, **meta)
        ctx.save_for_backward(q, k, v, G, A, states)
        ctx.has_s0 = s0 is not None
        ctx.scale, ctx.meta = scale, meta
        return o, final

    @staticmethod
    def backward(ctx, do, dfinal):
        q, k, v, G, A, states = ctx.saved_tensors
        BH, T, K = q.shape
        V = v.shape[-1]
        N = states.shape[1]
        do = do.contiguous()
        dstates = torch.empty_like(states)
        ds0 = q.new_empty(BH, K, V)
        _bwd_states_kernel[(BH,)](q, G, do, dfinal.contiguous() if dfinal is not None else ds0, dstates, ds0,
                                  ctx.scale, T, N, K, V, HAS_DFINAL=dfinal is not None, **ctx.meta)
        dq, dk, dv, dG, dA = (torch.empty_like(x) for x in (q, k, v, G, A))
        _bwd_chunk_kernel[(N, BH)](q, k, v, G, A, do, states, dstates, dq, dk, dv, dG, dA, ctx.scale,
                                   T, N, K, V, **ctx.meta)
        return dq, dk, dv, dG, dA, (ds0 if ctx.has_s0 else None), None, None, None


def chunk_gla_triton(q: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float | None = None,
                     initial_state: Tensor | None = None, output_final_state: bool = False,
                     chunk_size: int = 64) -> tuple[Tensor, Tensor | None]:
    B, T, H, K = q.shape
    V = v.shape[-1]
    check_chunk_size(chunk_size)
    dtype = torch.float32
    precision = "ieee" if compute_dtype(v) == torch.float64 else dot_precision(v.dtype)
    qc, kc, vc, gc = (to_chunks(x, chunk_size, dtype) for x in (q, k, v, g))  # [B, H, N, C, D]
    G = gc.cumsum(-2)
    N = qc.shape[2]
    A = intra_chunk_scores(qc, kc, G).reshape(B * H, N, chunk_size, chunk_size).contiguous()

    def flat(x: Tensor) -> Tensor:
        return x.reshape(B * H, N * chunk_size, x.shape[-1]).contiguous()

    s0 = initial_state.to(dtype).reshape(B * H, K, V).contiguous() if initial_state is not None else None
    o, final = ChunkGLARecurrence.apply(flat(qc), flat(kc), flat(vc), flat(G), A, s0, resolve_scale(scale, K),
                                        chunk_size, precision)
    o = from_heads_layout(o, B, H, T, chunk_size).to(v.dtype)
    return o, (final.view(B, H, K, V) if output_final_state else None)
