"""Kimi Delta Attention's operator: the gated delta rule with a decay per key channel (Kimi Linear, 2025).

    S_t = diag(exp(g_t)) S_{t-1} ;  S_t <- S_t + beta_t k_t^T (v_t - k_t S_t) ;  o_t = scale q_t S_t

q, k `[B, T, H, K]` (k L2-normalised by the caller), v `[B, T, H, V]`, g `[B, T, H, K]` (log decay, <= 0), beta
`[B, T, H]`; state `[B, H, K, V]`. Gated DeltaNet is the case of one g per head (flash-linear-attention's
`fla/ops/kda/naive.py` holds the same recurrence). Three forms: `naive_kda` (step reference),
`chunk_kda_torch` (chunked) and `kda`, which runs the first on pieces of at most DECODE_MAX tokens.

Chunked form. Within a chunk starting from S_0, with G the chunk-local cumsum of g ([C, K]) and the
per-channel scores A^xy_ij = sum_c x_ic y_jc exp(G_ic - G_jc) (j <= i; both from one `paired_scores` call),
the pseudo-values u_t = beta_t (v_t - k_t diag(exp(g_t)) S_{t-1}) solve

    (I + tril_strict(diag(beta) A^kk)) U = diag(beta) V - diag(beta) (K exp(G)) S_0,

so U = U_0 - W S_0 from one triangular solve per chunk, and

    O = scale [ (Q exp(G) - A^qk W) S_0 + A^qk U_0 ]
    S_C = (diag(exp(G_C)) - Kd^T W) S_0 + Kd^T U_0,      Kd = K exp(G_C - G)

The scores and the pieces built from them stay under autograd; the solve, the hand-over of the state between
chunks and the outputs are `wy_chunk_scan` (batched over chunks but for the state, with a written-out backward).
"""

from __future__ import annotations

import torch

from primitives.ops.chunking import (
    causal_mask,
    compute_dtype,
    from_chunk_major,
    initial_state_or_zeros,
    resolve_scale,
    to_chunk_major,
)
from primitives.ops.dispatch import DECODE_MAX, DELTA_RULE_CHUNK_SIZE
from primitives.ops.paired_scores import paired_scores
from primitives.ops.wy_chunk_scan import wy_chunk_scan

Tensor = torch.Tensor


def naive_kda(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, scale: float | None = None,
              initial_state: Tensor | None = None, output_final_state: bool = False,
              chunk_size: int = 64) -> tuple[Tensor, Tensor | None]:
    """The recurrence one step at a time (fp32; fp64 stays fp64). `chunk_size` is unused (same signature)."""
    B, T, H, K = q.shape
    out_dtype, dtype = v.dtype, compute_dtype(v)
    scale = resolve_scale(scale, K)
    q, k, v, g, beta = (x.to(dtype) for x in (q, k, v, g, beta))
    state = initial_state_or_zeros(initial_state, B, H, K, v.shape[-1], q)
    outputs = []
    for t in range(T):
        state = g[:, t].exp().unsqueeze(-1) * state
        error = v[:, t] - torch.einsum("bhk,bhkv->bhv", k[:, t], state)
        state = state + beta[:, t, :, None, None] * k[:, t].unsqueeze(-1) * error.unsqueeze(-2)
        outputs.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], state))
    o = torch.stack(outputs, dim=1) if outputs else v.new_zeros(v.shape)
    return o.to(out_dtype), (state if output_final_state else None)


def chunk_kda_torch(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, scale: float | None = None,
                    initial_state: Tensor | None = None, output_final_state: bool = False,
                    chunk_size: int = 64) -> tuple[Tensor, Tensor | None]:
    """The chunked form (module docstring): outputs `[B, T, H, V]` and, if asked, the final state. Computed in
    fp32 (fp64 stays fp64) without autocast, as the delta rule's chunked form."""
    with torch.autocast(q.device.type, enabled=False):
        return _chunk_kda(q, k, v, g, beta, scale, initial_state, output_final_state, chunk_size)


def _chunk_kda(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, scale: float | None,
               initial_state: Tensor | None, output_final_state: bool, chunk_size: int) -> tuple[Tensor, Tensor | None]:
    B, T, H, K = q.shape
    V = v.shape[-1]
    out_dtype, dtype = v.dtype, compute_dtype(v)
    scale = resolve_scale(scale, K)
    q, k, v = (to_chunk_major(x, chunk_size, dtype) for x in (q, k, v))   # [N, BH, C, D]
    beta = to_chunk_major(beta.unsqueeze(-1), chunk_size, dtype)            # [N, BH, C, 1]
    G = to_chunk_major(g, chunk_size, dtype).cumsum(-2)                     # [N, BH, C, K]
    C = q.shape[-2]

    scores = paired_scores([k, q], [k], G)                                  # [A^kk; A^qk]  [N, BH, 2C, C]
    a_kk = scores[..., :C, :].masked_fill(~causal_mask(C, q.device, strict=True), 0.0)
    exp_G = G.exp()
    state = initial_state_or_zeros(initial_state, B, H, K, V, q).reshape(B * H, K, V)
    o, state = wy_chunk_scan(beta * a_kk, scores[..., C:, :], beta * k * exp_G, beta * v, q * exp_G,
                             k * (G[..., -1:, :] - G).exp(), G[..., -1, :].exp(), None, state)
    o = from_chunk_major(o * scale, B, T).to(out_dtype)
    return o, (state.view(B, H, K, V) if output_final_state else None)


def kda(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, scale: float | None = None,
        initial_state: Tensor | None = None, output_final_state: bool = False) -> tuple[Tensor, Tensor | None]:
    """The step form for pieces of at most DECODE_MAX tokens (decoding), else the chunked form in chunks of
    DELTA_RULE_CHUNK_SIZE (as `dispatch.by_length`; 32 measured faster than 64 on CPU, as for the delta rule)."""
    form = naive_kda if q.shape[1] <= DECODE_MAX else chunk_kda_torch
    return form(q, k, v, g, beta, scale, initial_state, output_final_state, chunk_size=DELTA_RULE_CHUNK_SIZE)
