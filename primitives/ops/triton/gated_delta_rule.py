"""Triton path of `chunk_gated_delta_rule` (and of `chunk_delta_rule`, with g = 0).

The WY representation (one batched triangular solve per chunk) stays in torch, where autograd
differentiates it; the sequential state pass and the per-chunk outputs and gradients are Triton kernels.
"""

from __future__ import annotations

import torch

from primitives.ops.chunked_delta_rule import wy_representation
from primitives.ops.chunking import resolve_scale, to_chunks
from primitives.ops.triton.chunk_recurrence import ChunkRecurrence
from primitives.ops.triton.simple_gla import check_chunk_size, dot_precision, from_heads_layout

Tensor = torch.Tensor


def chunk_gated_delta_rule_triton(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
                                  scale: float | None = None, initial_state: Tensor | None = None,
                                  output_final_state: bool = False,
                                  chunk_size: int = 64) -> tuple[Tensor, Tensor | None]:
    B, T, H, K = q.shape
    V = v.shape[-1]
    check_chunk_size(chunk_size)
    dtype = torch.float32
    precision = dot_precision(v.dtype)
    qc, kc, vc = (to_chunks(x, chunk_size, dtype) for x in (q, k, v))  # [B, H, N, C, D]
    betac = to_chunks(beta.unsqueeze(-1), chunk_size, dtype)
    G = to_chunks(g.unsqueeze(-1), chunk_size, dtype).squeeze(-1).cumsum(-1)  # [B, H, N, C]
    W, U0, _ = wy_representation(kc, vc, betac, G)
    N = qc.shape[2]

    def flat(x: Tensor) -> Tensor:
        return x.reshape(B * H, N * chunk_size, *x.shape[4:]).contiguous()

    s0 = initial_state.to(dtype).reshape(B * H, K, V).contiguous() if initial_state is not None else None
    o, final = ChunkRecurrence.apply(flat(qc), flat(kc), flat(U0), flat(G), flat(W), s0,
                                     resolve_scale(scale, K), chunk_size, precision)
    o = from_heads_layout(o, B, H, T, chunk_size).to(v.dtype)
    return o, (final.view(B, H, K, V) if output_final_state else None)


def chunk_delta_rule_triton(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, scale: float | None = None,
                            initial_state: Tensor | None = None, output_final_state: bool = False,
                            chunk_size: int = 64) -> tuple[Tensor, Tensor | None]:
    """The delta rule is the gated one with g = 0."""
    return chunk_gated_delta_rule_triton(q, k, v, torch.zeros_like(beta), beta, scale, initial_state,
                                         output_final_state, chunk_size)
