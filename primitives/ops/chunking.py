"""Shared helpers of the chunked forms: compute dtype, padding to whole chunks, the per-chunk views (head-major
and chunk-major), grouped q/k."""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def compute_dtype(x: Tensor) -> torch.dtype:
    """fp64 stays fp64; everything else (fp32, bf16, fp16) is computed in fp32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def to_chunks(x: Tensor, chunk_size: int, dtype: torch.dtype) -> Tensor:
    """`[B, T, H, *]` -> `[B, H, N, C, *]`, zero-padded at the end to N * C steps.

    Padding with zeros is neutral for every operator here: a padded step has k = 0 (no write) and a log
    gate of 0 (no decay), so the state after the padding equals the state after the last real step.
    """
    return padded_chunks(x, chunk_size, dtype).movedim(3, 1).contiguous()


def padded_chunks(x: Tensor, chunk_size: int, dtype: torch.dtype) -> Tensor:
    """`[B, T, H, *]` -> `[B, N, C, H, *]` in `dtype`, zero-padded at the end to N * C steps."""
    B, T, H = x.shape[:3]
    pad = (-T) % chunk_size
    x = x.to(dtype)
    if pad:
        x = F.pad(x, [0, 0] * (x.dim() - 2) + [0, pad])
    return x.reshape(B, x.shape[1] // chunk_size, chunk_size, H, *x.shape[3:])


def from_chunks(x: Tensor, length: int) -> Tensor:
    """`[B, H, N, C, *]` -> `[B, T, H, *]`, dropping the padding."""
    B, H, N, C = x.shape[:4]
    x = x.movedim(1, 3).reshape(B, N * C, H, *x.shape[4:])
    return x[:, :length]


def to_chunk_major(x: Tensor, chunk_size: int, dtype: torch.dtype) -> Tensor:
    """`[B, T, H, *]` -> `[N, B * H, C, *]`, zero-padded at the end to N * C steps (as `chunking.to_chunks`)."""
    x = padded_chunks(x, chunk_size, dtype)
    B, n, _, H = x.shape[:4]
    x = x.permute(1, 0, 3, 2, *range(4, x.dim()))
    return x.reshape(n, B * H, chunk_size, *x.shape[4:])


def from_chunk_major(x: Tensor, batch: int, length: int) -> Tensor:
    """`[N, B * H, C, *]` -> `[B, T, H, *]`, dropping the padding."""
    N, BH, C, *rest = x.shape
    x = x.reshape(N, batch, BH // batch, C, *rest).permute(1, 0, 3, 2, *range(4, x.dim() + 1))
    return x.reshape(batch, N * C, BH // batch, *rest)[:, :length]


def causal_mask(chunk_size: int, device: torch.device, strict: bool = False) -> Tensor:
    """Boolean `[C, C]` mask that is True where column j may feed row i (j <= i, or j < i if strict)."""
    return torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=device).tril(-1 if strict else 0)


def relative_decay(G: Tensor, mask: Tensor) -> Tensor:
    """exp(G_i - G_j) where `mask` allows (j <= i), 0 elsewhere; G `[..., C]` is a within-chunk cumsum.

    The mask is applied before the exponential, so exp only ever sees numbers <= 0 (for log gates <= 0).
    """
    diff = G.unsqueeze(-1) - G.unsqueeze(-2)
    return diff.masked_fill(~mask, float("-inf")).exp()


def resolve_scale(scale: float | None, head_dim: int) -> float:
    return head_dim**-0.5 if scale is None else scale


def initial_state_or_zeros(initial_state: Tensor | None, B: int, H: int, K: int, V: int,
                           like: Tensor) -> Tensor:
    if initial_state is None:
        return like.new_zeros(B, H, K, V)
    return initial_state.to(like.dtype)


def expand_groups(q: Tensor, k: Tensor, heads: int) -> tuple[Tensor, Tensor]:
    """q, k `[B, T, G, K]` shared by groups of heads -> `[B, T, heads, K]` (head h reads group h // (heads / G))."""
    if q.shape[2] == heads:
        return q, k
    repeats = heads // q.shape[2]
    return q.repeat_interleave(repeats, dim=2), k.repeat_interleave(repeats, dim=2)
