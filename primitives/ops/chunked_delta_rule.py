"""Chunked PyTorch form of the (gated) delta rule, through the WY / UT representation.

    S_t = exp(g_t) S_{t-1} + beta_t k_t^T (v_t - exp(g_t) k_t S_{t-1}) ;  o_t = scale q_t S_t

(DeltaNet is g = 0; Gated DeltaNet has g `[B, T, H]` in log space.) Within a chunk starting from state S_0,
with G = chunk-local cumsum(g) and Gamma_ij = exp(G_i - G_j) for j <= i (masked before exp), the state is
S_t = exp(G_t) S_0 + sum_{j <= t} Gamma_tj k_j^T u_j, where the pseudo-values u_t = beta_t (v_t - k_t
exp(g_t) S_{t-1}) solve the unit-lower-triangular system

    (I + A) U = diag(beta) V - diag(beta exp(G)) K S_0,    A = tril_strict(diag(beta) (K K^T * Gamma)),

so U = U_0 - W S_0 with [W | U_0] = (I + A)^{-1} [diag(beta exp(G)) K | diag(beta) V] (the UT transform:
(I + A)^{-1} by blocked forward substitution, then one matmul, for all chunks at once). Chunk by chunk:

    U = U_0 - W S_0;   S_C = exp(G_C) S_0 + Kd^T U  (Kd = k exp(G_C - G));   O = scale [q exp(G) S_0 + P U]

with P = (Q K^T * Gamma); only the first two are sequential (two [C, K] x [K, V]-sized matmuls per chunk).
The backward is written out (a custom autograd Function): the same passes in reverse, the loop over chunks
carrying the state's gradient, and the gradient of (I + A)^{-1} as -T^T dT T^T.
k is expected L2-normalised by the caller (not normalised here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from primitives.ops.chunking import (
    causal_mask,
    compute_dtype,
    from_chunk_major,
    initial_state_or_zeros,
    relative_decay,
    resolve_scale,
    to_chunk_major,
)

Tensor = torch.Tensor


INVERSE_BLOCK = 16  # (I + A)^{-1} is built from blocks of this size (rows substituted within a block)


def invert_unit_lower(A: Tensor) -> Tensor:
    """(I + A)^{-1} for strictly lower-triangular A `[..., C, C]`, without autograd.

    Blocks of INVERSE_BLOCK on the diagonal are inverted together by forward substitution (one row of every
    block per step), then each block row of the inverse follows from the rows above it with two matmuls:
    T_i,<i = -T_ii A_i,<i T_<i,<i. C is zero-padded to whole blocks (I + 0 is its own inverse).
    """
    C, b = A.shape[-1], min(INVERSE_BLOCK, A.shape[-1])
    pad = (-C) % b
    if pad:
        A = F.pad(A, (0, pad, 0, pad))
    n = A.shape[-1] // b
    diag = torch.stack([A[..., i * b:(i + 1) * b, i * b:(i + 1) * b] for i in range(n)], dim=-3)
    inv = torch.eye(b, dtype=A.dtype, device=A.device).expand_as(diag).clone()
    for r in range(1, b):
        inv[..., r, :r] = -(diag[..., r:r + 1, :r] @ inv[..., :r, :r]).squeeze(-2)
    T = torch.zeros_like(A)
    T[..., :b, :b] = inv[..., 0, :, :]
    for i in range(1, n):
        rows = slice(i * b, (i + 1) * b)
        T[..., rows, :i * b] = -inv[..., i, :, :] @ (A[..., rows, :i * b] @ T[..., :i * b, :i * b])
        T[..., rows, rows] = inv[..., i, :, :]
    return T[..., :C, :C] if pad else T


class _UnitLowerInverse(torch.autograd.Function):
    """T = (I + A)^{-1} for strictly lower A; dA = -(T^T dT T^T), strictly lower part."""

    @staticmethod
    def forward(ctx, A: Tensor) -> Tensor:
        T = invert_unit_lower(A)
        ctx.save_for_backward(T)
        return T

    @staticmethod
    def backward(ctx, dT: Tensor) -> Tensor:
        (T,) = ctx.saved_tensors
        Tt = T.transpose(-1, -2)
        return -(Tt @ dT @ Tt).tril(-1)


def unit_lower_inverse(A: Tensor) -> Tensor:
    """(I + A)^{-1} for strictly lower-triangular A `[..., C, C]` (differentiable)."""
    return _UnitLowerInverse.apply(A)


def wy_values(k: Tensor, v: Tensor, beta: Tensor, G: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Per chunk: [W | U_0] `[..., C, K + V]` (the pseudo-values are U = U_0 - W S_0) and Gamma (None without
    decay). Inputs chunked `[..., C, D]`; beta `[..., C, 1]`; G `[..., C]` (chunk-local cumsum of the log gates)
    or None for no decay."""
    C = k.shape[-2]
    strict = causal_mask(C, k.device, strict=True)
    gamma = None if G is None else relative_decay(G, causal_mask(C, k.device))
    system = beta * (k @ k.transpose(-1, -2))
    system = (system if gamma is None else system * gamma).masked_fill(~strict, 0.0)
    decay_from_start = G.exp().unsqueeze(-1) if G is not None else 1.0
    rhs = torch.cat([beta * decay_from_start * k, beta * v], dim=-1)
    return unit_lower_inverse(system) @ rhs, gamma


def wy_representation(k: Tensor, v: Tensor, beta: Tensor, G: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Per chunk: W, U_0 (the pseudo-values are U = U_0 - W S_0) and Gamma (the causal mask without decay)."""
    WU, gamma = wy_values(k, v, beta, G)
    K = k.shape[-1]
    if gamma is None:
        gamma = causal_mask(k.shape[-2], k.device).to(k.dtype)
    return WU[..., :K], WU[..., K:], gamma


class _ChunkDeltaRule(torch.autograd.Function):
    """Chunked tensors, chunk-major: q, k `[N, BH, C, K]`, v `[N, BH, C, V]`, beta `[N, BH, C]`, G (chunk-local
    cumsum of the log gates) `[N, BH, C]` or None, s0 `[BH, K, V]` -> o `[N, BH, C, V]`, the final state.

    Chunk-major so that the loops over chunks read and write whole contiguous blocks (`x[n]`), and every
    per-chunk matmul there is one `baddbmm` writing its result in place."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, beta: Tensor, G: Tensor | None, s0: Tensor, scale: float):
        with torch.autocast(q.device.type, enabled=False):
            N, BH, C, K = k.shape
            strict = causal_mask(C, k.device, strict=True)
            gamma = None if G is None else relative_decay(G, causal_mask(C, k.device))
            AK = k @ k.transpose(-1, -2)
            AK = (AK if gamma is None else AK.mul_(gamma)).masked_fill_(~strict, 0.0)  # K K^T * Gamma, strict
            T = invert_unit_lower(AK * beta.unsqueeze(-1))
            gain = beta if G is None else beta * G.exp()
            rhs = torch.cat([k * gain.unsqueeze(-1), v * beta.unsqueeze(-1)], dim=-1)
            WU = T @ rhs
            W, U = WU.split([K, v.shape[-1]], dim=-1)  # U: a copy holding U_0 until the loop makes it U
            P = q @ k.transpose(-1, -2)
            P = P.tril_() if gamma is None else P.mul_(gamma)
            k_end = k if G is None else k * (G[..., -1:] - G).exp().unsqueeze(-1)
            k_end_t = k_end.transpose(-1, -2)
            chunk_decays = None if G is None else G[..., -1].exp()[..., None, None]  # [N, BH, 1, 1]
            U = U.contiguous()
            states = q.new_empty(N + 1, BH, K, U.shape[-1])  # states[n]: the state before chunk n
            states[0] = s0
            for n in range(N):
                state = states[n]
                U[n].baddbmm_(W[n], state, alpha=-1.0)  # U_0 - W S_0
                start = state if chunk_decays is None else state * chunk_decays[n]
                torch.baddbmm(start, k_end_t[n], U[n], out=states[n + 1])
            starts = states[:N]
            q_start = q if G is None else q * G.exp().unsqueeze(-1)
            o = torch.matmul(P, U).add_(q_start @ starts)
            if scale != 1.0:
                o.mul_(scale)
        ctx.save_for_backward(q, k, v, beta, G, gamma, T, WU, U, starts, P, AK, q_start, k_end)
        ctx.scale = scale
        return o, states[N]

    @staticmethod
    def backward(ctx, d_o: Tensor, d_state: Tensor):
        q, k, v, beta, G, gamma, T, WU, U, starts, P, AK, q_start, k_end = ctx.saved_tensors
        N, BH, C, K = k.shape
        W = WU[..., :K]
        d_o = d_o * ctx.scale if ctx.scale != 1.0 else d_o.contiguous()
        exp_G = None if G is None else G.exp()
        decay_to_end = None if G is None else (G[..., -1:] - G).exp()
        chunk_decays = None if G is None else exp_G[..., -1]
        d_q_start = d_o @ starts.transpose(-1, -2)            # [.., C, K]
        d_starts = q_start.transpose(-1, -2) @ d_o            # [.., K, V]
        d_P = d_o @ U.transpose(-1, -2)                       # [.., C, C]
        d_U = torch.matmul(P.transpose(-1, -2), d_o)          # [.., C, V]
        d_ends = torch.empty(N + 1, *d_starts.shape[1:], dtype=d_o.dtype, device=d_o.device)
        d_ends[N] = d_state                                   # d_ends[n + 1]: gradient reaching the state after chunk n
        W_t = W.transpose(-1, -2)
        for n in range(N - 1, -1, -1):
            carry = d_ends[n + 1]
            d_U[n].baddbmm_(k_end[n], carry)
            into = d_starts[n] + (carry if chunk_decays is None else carry * chunk_decays[n, :, None, None])
            torch.baddbmm(into, W_t[n], d_U[n], alpha=-1.0, out=d_ends[n])
        d_ends, d_s0 = d_ends[1:], d_ends[0]
        d_decays = None if G is None else (d_ends * starts).sum((-1, -2))
        d_k_end = U @ d_ends.transpose(-1, -2)                # [.., C, K]
        d_W = -(d_U @ starts.transpose(-1, -2))               # [.., C, K]
        d_WU = torch.cat([d_W, d_U], dim=-1)
        # [W | U_0] = T rhs with T = (I + A)^{-1}: d rhs = T^T d[W | U_0] and dA = -T^T dT T^T = -d rhs [W | U_0]^T
        d_rhs = T.transpose(-1, -2) @ d_WU
        d_A = (d_rhs @ WU.transpose(-1, -2)).tril_(-1).neg_()  # A = AK * beta (rows)
        d_beta = (d_A * AK).sum(-1)
        d_AK = d_A.mul_(beta.unsqueeze(-1))
        d_KK = d_AK if gamma is None else d_AK * gamma
        d_QK = d_P.tril() if gamma is None else d_P * gamma
        gain = beta if G is None else beta * exp_G
        d_rhs_k, d_rhs_v = d_rhs.split([K, v.shape[-1]], dim=-1)
        d_q = torch.matmul(d_QK, k)
        d_q += d_q_start if G is None else d_q_start * exp_G.unsqueeze(-1)
        d_k = torch.matmul(d_QK.transpose(-1, -2), q)
        d_k += (d_KK + d_KK.transpose(-1, -2)) @ k
        d_k += d_rhs_k * gain.unsqueeze(-1)
        d_k += d_k_end if G is None else d_k_end * decay_to_end.unsqueeze(-1)
        d_v = d_rhs_v * beta.unsqueeze(-1)
        k_gain = (d_rhs_k * k).sum(-1)
        d_beta += (k_gain if G is None else k_gain * exp_G) + (d_rhs_v * v).sum(-1)
        d_G = None
        if G is not None:
            R = d_AK.mul_(AK).add_(d_P.mul_(P))               # dGamma * Gamma from A and from P
            d_G = R.sum(-1) - R.sum(-2)
            d_G += (d_q_start * q_start).sum(-1) + k_gain * gain
            end_terms = (d_k_end * k_end).sum(-1)
            d_G -= end_terms
            d_G[..., -1] += end_terms.sum(-1) + d_decays * chunk_decays
        return d_q, d_k, d_v, d_beta, d_G, d_s0, None


def _chunked(q: Tensor, k: Tensor, v: Tensor, g: Tensor | None, beta: Tensor, scale: float | None,
             initial_state: Tensor | None, output_final_state: bool,
             chunk_size: int) -> tuple[Tensor, Tensor | None]:
    B, T, H, K = q.shape
    V = v.shape[-1]
    out_dtype, dtype = v.dtype, compute_dtype(v)
    scale = resolve_scale(scale, K)
    qc, kc, vc = (to_chunk_major(x, chunk_size, dtype) for x in (q, k, v))  # [N, BH, C, D]
    betac = to_chunk_major(beta.unsqueeze(-1), chunk_size, dtype).squeeze(-1)  # [N, BH, C]
    G = None if g is None else to_chunk_major(g.unsqueeze(-1), chunk_size, dtype).squeeze(-1).cumsum(-1)
    s0 = initial_state_or_zeros(initial_state, B, H, K, V, qc).reshape(B * H, K, V)
    o, state = _ChunkDeltaRule.apply(qc, kc, vc, betac, G, s0, scale)
    return from_chunk_major(o, B, T).to(out_dtype), (state.view(B, H, K, V) if output_final_state else None)


def chunk_delta_rule_torch(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, scale: float | None = None,
                           initial_state: Tensor | None = None, output_final_state: bool = False,
                           chunk_size: int = 64) -> tuple[Tensor, Tensor | None]:
    """DeltaNet: S_t = S_{t-1} + beta_t k_t^T (v_t - k_t S_{t-1}) ; o_t = scale q_t S_t."""
    return _chunked(q, k, v, None, beta, scale, initial_state, output_final_state, chunk_size)


def chunk_gated_delta_rule_torch(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
                                 scale: float | None = None, initial_state: Tensor | None = None,
                                 output_final_state: bool = False,
                                 chunk_size: int = 64) -> tuple[Tensor, Tensor | None]:
    """Gated DeltaNet: S_t = exp(g_t) S_{t-1} + beta_t k_t^T (v_t - exp(g_t) k_t S_{t-1})."""
    return _chunked(q, k, v, g, beta, scale, initial_state, output_final_state, chunk_size)
