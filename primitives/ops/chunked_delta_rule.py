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


def wy_representation(k: Tensor, v: Tensor, beta: Tensor, G: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Per chunk: W, U_0 (the pseudo-values are U = U_0 - W S_0) and Gamma. Inputs chunked `[..., C, D]`.

    beta `[..., C, 1]`; G `[..., C]` (chunk-local cumsum of the log gates) or None for no decay.
    """
    C, K = k.shape[-2:]
    mask = causal_mask(C, k.device)
    gamma = mask.to(k.dtype) if G is None else relative_decay(G, mask)
    strict = causal_mask(C, k.device, strict=True)
    system = (beta * (k @ k.transpose(-1, -2)) * gamma).masked_fill(~strict, 0.0)
    system = system + torch.eye(C, dtype=k.dtype, device=k.device)
    decay_from_start = G.exp().unsqueeze(-1) if G is not None else 1.0
    rhs = torch.cat([beta * decay_from_start * k, beta * v], dim=-1)
    solved = torch.linalg.solve_triangular(system, rhs, upper=False, unitriangular=True)
    return solved[..., :K], solved[..., K:], gamma


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
    W, U0, gamma = wy_representation(k, v, beta, G)

    attn = (q @ k.transpose(-1, -2)) * gamma
    q_eff = (q if G is None else q * G.exp().unsqueeze(-1)) - attn @ W
    o = attn @ U0
    eye = torch.eye(K, dtype=dtype, device=q.device)
    if G is None:
        k_end, chunk_decay = k, eye
    else:
        k_end = k * (G[..., -1:] - G).exp().unsqueeze(-1)
        chunk_decay = G[..., -1].exp()[..., None, None] * eye
    k_end_t = k_end.transpose(-1, -2)
    transitions = chunk_decay - k_end_t @ W  # [B, H, N, K, K]
    chunk_updates = k_end_t @ U0  # [B, H, N, K, V]

    state = initial_state_or_zeros(initial_state, B, H, K, V, q)
    starts = []
    # unbind, not indexing: the backward of one unbind is one stack, that of N selects N full-size zeros
    for transition, update in zip(transitions.unbind(2), chunk_updates.unbind(2)):
        starts.append(state)
        state = transition @ state + update
    o = o + q_eff @ torch.stack(starts, dim=2)
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
