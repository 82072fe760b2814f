"""Chunked PyTorch form of linear attention with a scalar log decay per head and step (simple GLA).

    S_t = exp(g_t) S_{t-1} + k_t^T v_t ;  o_t = scale q_t S_t        g `[B, T, H]` (log space, <= 0)

Covers RetNet (constant g), Mamba-2 / SSD and the mLSTM core. Within a chunk of C steps with
G = cumsum(g) (chunk-local), the output is

    o_i = scale [ exp(G_i) q_i S_0 + sum_{j <= i} exp(G_i - G_j) (q_i . k_j) v_j ]

and the state after the chunk is exp(G_C) S_0 + sum_j exp(G_C - G_j) k_j^T v_j. Every exponent is <= 0,
so strong decays underflow to 0 instead of overflowing. Only the state hand-over loops over chunks.
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


def chunk_simple_gla_torch(q: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float | None = None,
                           initial_state: Tensor | None = None, output_final_state: bool = False,
                           chunk_size: int = 64) -> tuple[Tensor, Tensor | None]:
    B, T, H, K = q.shape
    out_dtype, dtype = v.dtype, compute_dtype(v)
    scale = resolve_scale(scale, K)
    q, k, v = (to_chunks(x, chunk_size, dtype) for x in (q, k, v))  # [B, H, N, C, D]
    G = to_chunks(g.unsqueeze(-1), chunk_size, dtype).squeeze(-1).cumsum(-1)  # [B, H, N, C]

    attn = (q @ k.transpose(-1, -2)) * relative_decay(G, causal_mask(chunk_size, q.device))
    o = attn @ v
    decay_to_end = (G[..., -1:] - G).exp().unsqueeze(-1)  # [B, H, N, C, 1]
    chunk_updates = (k * decay_to_end).transpose(-1, -2) @ v  # [B, H, N, K, V]
    chunk_decays = G[..., -1].exp()[..., None, None]  # [B, H, N, 1, 1]

    state = initial_state_or_zeros(initial_state, B, H, K, v.shape[-1], q)
    starts = []
    # unbind, not indexing: the backward of one unbind is one stack, that of N selects N full-size zeros
    for decay, update in zip(chunk_decays.unbind(2), chunk_updates.unbind(2)):
        starts.append(state)
        state = decay * state + update
    o = o + (q * G.exp().unsqueeze(-1)) @ torch.stack(starts, dim=2)
    o = from_chunks(o * scale, T).to(out_dtype)
    return o, (state if output_final_state else None)
