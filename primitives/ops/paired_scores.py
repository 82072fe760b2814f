"""Every intra-chunk score of several queries against several keys that share one per-channel decay G, in one
matmul with a written-out backward (KDA: [k; q] x k, RWKV-7: [a; r] x [b; k]).

    S[i, j]_ts = sum_c X_i,tc Y_j,sc exp(G_tc - G_sc)   (s <= t, else 0)

is `chunked_gla.intra_chunk_scores(X_i, Y_j, G)` for every pair (i, j). When every block's G range is narrow
enough to factorize (the usual case), the queries are scaled by exp(G - m) and the keys by exp(m - G) once each
and stacked along time, so all pairs are one `[nq C, K] x [K, nk C]` matmul per block; the backward is two more
(dX = dS Y', dY = dS^T X') and dG = sum_i dX_i X_i - sum_j dY_j Y_j. Otherwise every pair goes through
`intra_chunk_scores` (which halves the wide blocks) under autograd.
"""

from __future__ import annotations

import torch

from primitives.ops.chunked_gla import SAFE_HALF_RANGE, intra_chunk_scores
from primitives.ops.chunking import causal_mask

Tensor = torch.Tensor


class _PairedScores(torch.autograd.Function):
    @staticmethod
    def forward(ctx, G: Tensor, n_queries: int, *xs: Tensor) -> Tensor:
        queries, keys = xs[:n_queries], xs[n_queries:]
        C = G.shape[-2]
        m = (G.amax(-2, keepdim=True) + G.amin(-2, keepdim=True)) / 2
        e_pos, e_neg = (G - m).exp(), (m - G).exp()
        q_rel = torch.cat([x * e_pos for x in queries], dim=-2)  # [..., nq C, K]
        k_rel = torch.cat([y * e_neg for y in keys], dim=-2)      # [..., nk C, K]
        masked = ~causal_mask(C, G.device).repeat(len(queries), len(keys))
        scores = (q_rel @ k_rel.transpose(-1, -2)).masked_fill_(masked, 0.0)
        ctx.save_for_backward(q_rel, k_rel, e_pos, e_neg, *xs)
        ctx.n_queries, ctx.masked = n_queries, masked
        return scores

    @staticmethod
    def backward(ctx, d_scores: Tensor):
        q_rel, k_rel, e_pos, e_neg, *xs = ctx.saved_tensors
        queries, keys = xs[:ctx.n_queries], xs[ctx.n_queries:]
        d_scores = d_scores.masked_fill(ctx.masked, 0.0)
        d_q_rel = (d_scores @ k_rel).split(e_pos.shape[-2], dim=-2)
        d_k_rel = (d_scores.transpose(-1, -2) @ q_rel).split(e_pos.shape[-2], dim=-2)
        d_queries = [d * e_pos for d in d_q_rel]
        d_keys = [d * e_neg for d in d_k_rel]
        d_G = sum(d * x for d, x in zip(d_queries, queries)) - sum(d * y for d, y in zip(d_keys, keys))
        return (d_G, None, *d_queries, *d_keys)


def paired_scores(queries: list[Tensor], keys: list[Tensor], G: Tensor) -> Tensor:
    """Scores `[..., nq C, nk C]` whose block (i, j) is `intra_chunk_scores(queries[i], keys[j], G)`; every
    query and key `[..., C, K]`, G `[..., C, K]` (a chunk-local cumsum of log gates <= 0)."""
    G_range = (G.amax(-2) - G.amin(-2)).amax(-1)
    if torch.compiler.is_compiling() or not bool((G_range <= 2 * SAFE_HALF_RANGE).all()):
        rows = [torch.cat([intra_chunk_scores(x, y, G) for y in keys], dim=-1) for x in queries]
        return torch.cat(rows, dim=-2)
    return _PairedScores.apply(G, len(queries), *queries, *keys)
