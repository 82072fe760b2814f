"""Chunked PyTorch form of the (gated) delta rule, through the WY / UT representation.

    S_t = exp(g_t) S_{t-1} + beta_t k_t^T (v_t - exp(g_t) k_t S_{t-1}) ;  o_t = scale q_t S_t

(DeltaNet is g = 0; Gated DeltaNet has g `[B, T, H]` in log space.) Within a chunk starting from state S_0,
with G = chunk-local cumsum(g) and Gamma_ij = exp(G_i - G_j) for j <= i (masked before exp), the state is
S_t = exp(G_t) S_0 + sum_{j <= t} Gamma_tj k_j^T u_j, where the pseudo-values u_t = beta_t (v_t - k_t
exp(g_t) S_{t-1}) solve the unit-lower-triangular system

    (I + tril_strict(diag(beta) (K K^T * Gamma))) U = diag(beta) V - diag(beta exp(G)) K S_0,

so U = U_0 - W S_0 with U_0, W from one triangular solve per chunk. Then

    O = scale [ (q exp(G) - A W) S_0 + A U_0 ],   A = (Q K^T * Gamma)
    S_C = (exp(G_C) I - Kd^T W) S_0 + Kd^T U_0,   Kd = k exp(G_C - G)

Everything but the last line is batched over chunks; the loop over chunks is one [K, K] x [K, V] matmul.
k is expected L2-normalised by the caller (not normalised here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from primitives.ops.chunking import (
    causal_mask,
    compute_dtype,
    from_chunks,
    initial_state_or_zeros,
    relative_decay,
    resolve_scale,
    to_chunks,
)

Tensor = torch.Tensor


INVERSE_BLOCK = 16  # (I + A)^{-1} is built from blocks of this size (rows substituted within a block)


def _invert_unit_lower(A: Tensor) -> Tensor:
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
        T = _invert_unit_lower(A)
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


def _chunked(q: Tensor, k: Tensor, v: Tensor, g: Tensor | None, beta: Tensor, scale: float | None,
             initial_state: Tensor | None, output_final_state: bool,
             chunk_size: int) -> tuple[Tensor, Tensor | None]:
    B, T, H, K = q.shape
    V = v.shape[-1]
    out_dtype, dtype = v.dtype, compute_dtype(v)
    scale = resolve_scale(scale, K)
    q, k, v = (to_chunks(x, chunk_size, dtype) for x in (q, k, v))  # [B, H, N, C, D]
    beta = to_chunks(beta.unsqueeze(-1), chunk_size, dtype)  # [B, H, N, C, 1]
    G = None if g is None else to_chunks(g.unsqueeze(-1), chunk_size, dtype).squeeze(-1).cumsum(-1)
    WU, gamma = wy_values(k, v, beta, G)  # [B, H, N, C, K + V]
    W, U0 = WU.split([K, V], dim=-1)

    scores = q @ k.transpose(-1, -2)
    attn = scores.tril() if gamma is None else scores * gamma
    q_start = q if G is None else q * G.exp().unsqueeze(-1)
    k_end = k if G is None else k * (G[..., -1:] - G).exp().unsqueeze(-1)
    chunk_decays = None if G is None else G[..., -1].exp()[..., None, None]  # [B, H, N, 1, 1]

    state = initial_state_or_zeros(initial_state, B, H, K, V, q)
    starts, values = [], []
    # unbind, not indexing: the backward of one unbind is one stack, that of N selects N full-size zeros
    pieces = [t.unbind(2) for t in (W, U0, k_end.transpose(-1, -2))]
    decays = chunk_decays.unbind(2) if chunk_decays is not None else [None] * len(pieces[0])
    for W_n, U0_n, k_end_t, decay in zip(*pieces, decays):
        starts.append(state)
        U_n = torch.baddbmm(U0_n.flatten(0, 1), W_n.flatten(0, 1), state.flatten(0, 1), alpha=-1).view_as(U0_n)
        values.append(U_n)
        state = (state if decay is None else decay * state) + k_end_t @ U_n
    o = q_start @ torch.stack(starts, dim=2) + attn @ torch.stack(values, dim=2)
    return from_chunks(o * scale, T).to(out_dtype), (state if output_final_state else None)


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
