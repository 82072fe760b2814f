"""Chunked PyTorch form of gated linear attention with a log decay per key channel (GLA, HGRN2).

    S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t ;  o_t = scale q_t S_t        g `[B, T, H, K]` (log, <= 0)

With G = chunk-local cumsum(g), the intra-chunk scores are A_ij = sum_c q_ic k_jc exp(G_ic - G_jc) (j <= i).
The decay differs per channel, so A is one matmul only after splitting the exponential around a reference
m (per chunk and channel, the middle of G's range in the chunk):

    exp(G_i - G_j) = exp(G_i - m) * exp(m - G_j),    A = (q * exp(G - m)) @ (k * exp(m - G))^T

Both factors stay within exp(+-SAFE_HALF_RANGE) when G's range is at most twice that, which holds for
ordinary gates (a log decay of -1 per step over a 64-step chunk spans 64). A chunk with a wider range
(very strong decays) is halved instead: the second half's queries reach the first half's keys through
the boundary step b, exp(G_i - G_b) * exp(G_b - G_j) with both exponents <= 0, and each half is scored
the same way, recursively. Only the strongly decaying chunks pay for the extra levels. The state
hand-over between chunks is the same as for the scalar decay.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from primitives.ops.chunking import (
    causal_mask,
    compute_dtype,
    from_chunks,
    initial_state_or_zeros,
    resolve_scale,
    to_chunks,
)

Tensor = torch.Tensor

# exp(40) ~ 2e17: products of two such factors with q and k stay far from fp32 overflow (3e38) and, for the
# small factor, far from the subnormal range (1e-38), so the split loses no precision.
SAFE_HALF_RANGE = 40.0


def factorized_scores(q: Tensor, k: Tensor, G: Tensor) -> Tensor:
    """Causal A = (q exp(G - m)) (k exp(m - G))^T, m the middle of G's range per block and channel.

    q, k, G `[..., C, K]` -> `[..., C, C]`; exact for blocks whose G range is at most 2 * SAFE_HALF_RANGE.
    m is detached: A does not depend on it, so neither do the gradients.
    """
    m = ((G.amax(-2, keepdim=True) + G.amin(-2, keepdim=True)) / 2).detach()
    q_rel, k_rel = q * (G - m).exp(), k * (m - G).exp()
    # factors up to exp(40) would overflow fp16, so this product stays in fp32 under autocast
    with torch.autocast(q.device.type, enabled=False):
        scores = q_rel @ k_rel.transpose(-1, -2)
    return scores.masked_fill(~causal_mask(q.shape[-2], q.device), 0.0)


def halved_scores(q: Tensor, k: Tensor, G: Tensor) -> Tensor:
    """Scores of blocks too wide to factorize: halve them. The queries of the second half see the keys of
    the first through the boundary step b, exp(G_i - G_b) * exp(G_b - G_j), both exponents <= 0 (log
    gates <= 0); the two diagonal halves recurse, the second with G rebased to start at 0."""
    C = q.shape[-2]
    h = C // 2
    G_boundary = G[..., h - 1 : h, :]
    G_late = G[..., h:, :] - G_boundary
    early = intra_chunk_scores(q[..., :h, :], k[..., :h, :], G[..., :h, :])
    late = intra_chunk_scores(q[..., h:, :], k[..., h:, :], G_late)
    k_early = k[..., :h, :] * (G_boundary - G[..., :h, :]).exp()
    across = (q[..., h:, :] * G_late.exp()) @ k_early.transpose(-1, -2)
    return torch.cat([F.pad(early, [0, C - h]), torch.cat([across, late], dim=-1)], dim=-2)


def intra_chunk_scores(q: Tensor, k: Tensor, G: Tensor) -> Tensor:
    """A_ij = sum_c q_ic k_jc exp(G_ic - G_jc) for j <= i, else 0, for any decay strength.

    q, k, G `[..., C, K]` -> `[..., C, C]`. Blocks whose G range is narrow enough are one matmul
    (factorized); the others are halved until they are, so only strongly decaying blocks pay for it.
    Under torch.compile / torch.export every block is halved down to single steps (no data-dependent
    branch; slower, equally exact).
    """
    if q.shape[-2] == 1:
        return factorized_scores(q, k, G)
    if torch.compiler.is_compiling():  # a traced graph cannot branch on the data: halve every block
        return halved_scores(q, k, G)
    G_range = (G.amax(-2) - G.amin(-2)).amax(-1)  # [...]
    safe = G_range <= 2 * SAFE_HALF_RANGE
    if bool(safe.all()):
        return factorized_scores(q, k, G)
    if not bool(safe.any()):
        return halved_scores(q, k, G)
    narrow, wide = safe.nonzero(as_tuple=True), (~safe).nonzero(as_tuple=True)
    scores = q.new_zeros(*q.shape[:-1], q.shape[-2])
    scores = scores.index_put(narrow, factorized_scores(q[narrow], k[narrow], G[narrow]))
    return scores.index_put(wide, halved_scores(q[wide], k[wide], G[wide]))


def chunk_gla_torch(q: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float | None = None,
                    initial_state: Tensor | None = None, output_final_state: bool = False,
                    chunk_size: int = 64) -> tuple[Tensor, Tensor | None]:
    """Outputs `[B, T, H, V]` and, if asked, the final state `[B, H, K, V]` (see the module docstring)."""
    B, T, H, K = q.shape
    out_dtype, dtype = v.dtype, compute_dtype(v)
    scale = resolve_scale(scale, K)
    q, k, v = (to_chunks(x, chunk_size, dtype) for x in (q, k, v))  # [B, H, N, C, D]
    G = to_chunks(g, chunk_size, dtype).cumsum(-2)  # [B, H, N, C, K]

    o = intra_chunk_scores(q, k, G) @ v
    chunk_updates = (k * (G[..., -1:, :] - G).exp()).transpose(-1, -2) @ v  # [B, H, N, K, V]
    chunk_decays = G[..., -1, :].exp().unsqueeze(-1)  # [B, H, N, K, 1]

    state = initial_state_or_zeros(initial_state, B, H, K, v.shape[-1], q)
    starts = []
    # unbind, not indexing: the backward of one unbind is one stack, that of N selects N full-size zeros
    for decay, update in zip(chunk_decays.unbind(2), chunk_updates.unbind(2)):
        starts.append(state)
        state = decay * state + update
    o = o + (q * G.exp()) @ torch.stack(starts, dim=2)
    return from_chunks(o * scale, T).to(out_dtype), (state if output_final_state else None)
