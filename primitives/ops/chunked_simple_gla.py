"""Chunked PyTorch form of linear attention with a scalar log decay per head and step (simple GLA).

    S_t = exp(g_t) S_{t-1} + k_t^T v_t ;  o_t = scale q_t S_t        g `[B, T, H]` (log space, <= 0)

Covers RetNet (constant g), Mamba-2 / SSD and linear attention. Within a chunk of C steps with
G = cumsum(g) (chunk-local) and D_ij = exp(G_i - G_j) for j <= i (masked before the exponential), the output is

    o_i = scale [ exp(G_i) q_i S_0 + sum_{j <= i} D_ij (q_i . k_j) v_j ]

and the state after the chunk is exp(G_C) S_0 + sum_j exp(G_C - G_j) k_j^T v_j. Every exponent is <= 0,
so strong decays underflow to 0 instead of overflowing. Only the state hand-over loops over chunks.

q and k may have fewer heads than v (grouped, as Mamba-2's B and C with n_groups < n_heads): with G groups
and H = G R heads, head h reads group h // R. The scores q k^T are then computed once per group, not per
head. The backward is written out (a custom autograd Function), which keeps the elementwise work on the
`[C, C]` blocks to a few passes:

    dP = dO v^T;  dv = A^T dO + k_end dS_end;  d(q k^T) = sum over a group's heads of dP * D
    dG_i = sum_j (dP * A)_ij - sum_j (dP * A)_ji + (dq~ . q~)_i - (dk_end . k_end)_i (+ the chunk-end terms)

(A = (q k^T) * D, q~ = q exp(G), k_end = k exp(G_C - G)); autograd takes dG back through the cumsum.
"""

from __future__ import annotations

import torch

from primitives.ops.chunking import compute_dtype, from_chunks, resolve_scale, to_chunks

Tensor = torch.Tensor


def _decays(G: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """D = exp(G_i - G_j) (j <= i, else 0), exp(G) and exp(G_C - G) for chunk-local cumsums G `[..., C]`."""
    C = G.shape[-1]
    above = torch.ones(C, C, dtype=torch.bool, device=G.device).triu(1)
    mask = torch.zeros(C, C, dtype=G.dtype, device=G.device).masked_fill_(above, float("-inf"))
    D = (G.unsqueeze(-1) - G.unsqueeze(-2)).add_(mask).exp_()      # adding -inf: cheaper than masked_fill_
    return D, G.exp(), (G[..., -1:] - G).exp()


def _group_sum(x: Tensor) -> Tensor:
    """Sum over the heads of a group (dim 2 of `[B, G, R, ...]`)."""
    return x.squeeze(2) if x.shape[2] == 1 else x.sum(2)


class _ChunkSimpleGLA(torch.autograd.Function):
    """Chunked tensors: q, k `[B, G, N, C, K]`, v `[B, G, R, N, C, V]`, G (cumsum of g) `[B, G, R, N, C]`, s0
    `[B, G, R, K, V]` -> o `[B, G, R, N, C, V]`, the final state `[B, G, R, K, V]`."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, G: Tensor, s0: Tensor, scale: float):
        with torch.autocast(q.device.type, enabled=False):
            D, exp_G, decay_to_end = _decays(G)
            scores = (q @ k.transpose(-1, -2)).unsqueeze(2)            # [B, G, 1, N, C, C]
            attn = scores * D
            k_end = k.unsqueeze(2) * decay_to_end.unsqueeze(-1)        # [B, G, R, N, C, K]
            updates = k_end.transpose(-1, -2) @ v                      # [B, G, R, N, K, V]
            chunk_decays = exp_G[..., -1, None, None]                  # [B, G, R, N, 1, 1]
            starts = torch.empty_like(updates)
            state = s0
            for n in range(updates.shape[3]):
                starts[:, :, :, n] = state
                state = torch.addcmul(updates[:, :, :, n], chunk_decays[:, :, :, n], state)
            q_start = q.unsqueeze(2) * exp_G.unsqueeze(-1)             # [B, G, R, N, C, K]
            o = torch.matmul(attn, v).add_(q_start @ starts)
            if scale != 1.0:
                o.mul_(scale)
        ctx.save_for_backward(q, k, v, G, D, attn, q_start, k_end, starts)
        ctx.scale = scale
        return o, state

    @staticmethod
    def backward(ctx, d_o: Tensor, d_state: Tensor):
        q, k, v, G, D, attn, q_start, k_end, starts = ctx.saved_tensors
        d_o = d_o * ctx.scale if ctx.scale != 1.0 else d_o.contiguous()
        exp_G, decay_to_end = G.exp(), (G[..., -1:] - G).exp()
        chunk_decays = exp_G[..., -1]                                  # [B, G, R, N]
        d_q_start = d_o @ starts.transpose(-1, -2)                     # [B, G, R, N, C, K]
        d_starts = q_start.transpose(-1, -2) @ d_o                     # [B, G, R, N, K, V]
        d_updates = torch.empty_like(d_starts)
        d_chunk_decays = torch.empty_like(chunk_decays)
        carry = d_state  # gradient reaching the state after chunk n
        for n in range(starts.shape[3] - 1, -1, -1):
            d_updates[:, :, :, n] = carry
            d_chunk_decays[..., n] = (carry * starts[:, :, :, n]).sum((-1, -2))
            carry = torch.addcmul(d_starts[:, :, :, n], chunk_decays[..., n, None, None], carry)
        d_k_end = v @ d_updates.transpose(-1, -2)                      # [B, G, R, N, C, K]
        d_v = torch.matmul(attn.transpose(-1, -2), d_o).add_(k_end @ d_updates)
        d_P = d_o @ v.transpose(-1, -2)                                # [B, G, R, N, C, C]
        d_scores = _group_sum(d_P * D)                                 # [B, G, N, C, C]
        M = d_P.mul_(attn)
        d_G = M.sum(-1) - M.sum(-2)
        d_G += (d_q_start * q_start).sum(-1)
        end_terms = (d_k_end * k_end).sum(-1)
        d_G -= end_terms
        d_G[..., -1] += end_terms.sum(-1) + d_chunk_decays * chunk_decays
        d_q = d_scores @ k + _group_sum(d_q_start * exp_G.unsqueeze(-1))
        d_k = d_scores.transpose(-1, -2) @ q + _group_sum(d_k_end * decay_to_end.unsqueeze(-1))
        return d_q, d_k, d_v, d_G, carry, None


def chunk_simple_gla_torch(q: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float | None = None,
                           initial_state: Tensor | None = None, output_final_state: bool = False,
                           chunk_size: int = 64) -> tuple[Tensor, Tensor | None]:
    """q, k `[B, T, Hq, K]` with Hq dividing the heads H of v `[B, T, H, V]`; g `[B, T, H]`; state `[B, H, K, V]`."""
    B, T, Hq, K = q.shape
    H, V = v.shape[2], v.shape[-1]
    R = H // Hq
    out_dtype, dtype = v.dtype, compute_dtype(v)
    scale = resolve_scale(scale, K)
    qc, kc = (to_chunks(x, chunk_size, dtype) for x in (q, k))  # [B, Hq, N, C, K]
    N = qc.shape[2]
    vc = to_chunks(v, chunk_size, dtype).view(B, Hq, R, N, chunk_size, V)
    G = to_chunks(g.unsqueeze(-1), chunk_size, dtype).squeeze(-1).cumsum(-1).view(B, Hq, R, N, chunk_size)
    if initial_state is None:
        s0 = qc.new_zeros(B, Hq, R, K, V)
    else:
        s0 = initial_state.to(dtype).reshape(B, Hq, R, K, V)
    o, state = _ChunkSimpleGLA.apply(qc, kc, vc, G, s0, scale)
    o = from_chunks(o.view(B, H, N, chunk_size, V), T).to(out_dtype)
    return o, (state.view(B, H, K, V) if output_final_state else None)
