"""Causal softmax attention as functions: RoPE (whole or partial), the mask, attention sinks, a score bias.

Layout [B, H, T, d] (the layout of `scaled_dot_product_attention`); keys and values may have fewer heads (G) than
queries (H, grouped-query attention) and values their own width. Every key and query carries its absolute
position, so a cache that keeps only some positions (a sliding window, plus a kept prefix) masks correctly:

    query at position i sees key at position j   iff   j <= i  and  (no window, or j > i - window, or j < keep_prefix)

`keep_prefix` keeps the first positions of the sequence visible through a sliding window (Hymba's meta tokens,
StreamingLLM's sink tokens). Attention sinks (gpt-oss) are one learned logit per head that joins each query's
softmax denominator and attends to nothing: softmax over [scores, sink], then the sink's column is dropped. Here
that is one extra key column whose key and value are zero and whose score is set by the mask to the sink's logit,
which is the same softmax, so the fused kernel computes it.

RoPE (Su et al.) rotates pairs (x[k], x[k + r/2]) of the first r dims of a head by angle position * base^(-2k/r),
k < r/2 (the "rotate half" layout of GPT-NeoX and the Hugging Face models). Partial RoPE (Qwen3-Next's
partial_rotary_factor, GPT-NeoX's rotary_pct) rotates only the first r < d dims and passes the rest unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def rope_angles(positions: torch.Tensor, dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the RoPE angles, [T, dim // 2], for integer positions [T] and `dim` rotated dims."""
    half = dim // 2
    inv_freq = base ** (-torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of the first 2 * cos.shape[-1] dims of x [B, H, T, d] by the RoPE
    angles; the dims after them pass unchanged (partial RoPE)."""
    half = cos.shape[-1]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:2 * half]
    rotated = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    if 2 * half < x.shape[-1]:
        rotated = torch.cat([rotated, x[..., 2 * half:]], dim=-1)
    return rotated


def cached_positions(start: int, cached: int, keep_prefix: int = 0, device=None) -> torch.Tensor:
    """The absolute positions of the `cached` keys a cache holds after `start` tokens: all of them when nothing
    was dropped, else the kept prefix followed by the most recent ones (see `kept_indices`)."""
    if cached == start:
        return torch.arange(start, device=device)
    prefix = min(keep_prefix, cached)
    recent = torch.arange(start - (cached - prefix), start, device=device)
    return torch.cat([torch.arange(prefix, device=device), recent])


def kept_indices(positions: torch.Tensor, end: int, window: int | None, keep_prefix: int = 0) -> torch.Tensor | None:
    """Which keys a cache keeps after `end` tokens (None: all): those a later query can still see, the last
    `window` positions and those before `keep_prefix`."""
    if window is None:
        return None
    keep = (positions >= end - window) | (positions < keep_prefix)
    return keep.nonzero().squeeze(-1)


def mean_keys(seq_len: int, window: int | None, keep_prefix: int) -> float:
    """Keys one query attends to, averaged over a causal sequence of seq_len tokens: min(i + 1, window) plus the
    kept prefix positions that fell out of the window."""
    if window is None:
        return (seq_len + 1) / 2
    span = min(window, seq_len)
    total = span * (span + 1) / 2 + (seq_len - span) * span
    out_of_window = seq_len - span  # queries whose window has moved past position 0: m = 1 .. seq_len - span
    p = min(keep_prefix, out_of_window)
    total += p * (p + 1) / 2 + (out_of_window - p) * keep_prefix
    return total / seq_len


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor,
                      window: int | None = None, keep_prefix: int = 0, sinks: torch.Tensor | None = None,
                      bias: torch.Tensor | None = None) -> torch.Tensor:
    """Causal attention of q [B, H, T, dk] over k [B, G, S, dk], v [B, G, S, dv] (G divides H), scaled by
    dk^-1/2: [B, H, T, dv]. q_pos [T] and k_pos [S] are absolute positions (see the module docstring for the
    mask); `sinks` [H] are attention-sink logits; `bias` [B, H, T, S] is added to the allowed scores (the
    Forgetting Transformer's decay)."""
    T, S = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if S == T and window is None and sinks is None and bias is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    allowed = k_pos[None, :] <= q_pos[:, None]
    if window is not None:
        allowed = allowed & ((k_pos[None, :] > q_pos[:, None] - window) | (k_pos[None, :] < keep_prefix))
    mask = torch.zeros(T, S, device=q.device, dtype=q.dtype).masked_fill(~allowed, -math.inf)
    if bias is not None:
        mask = (mask + bias.masked_fill(~allowed, 0.0)).to(q.dtype)
    if sinks is not None:
        B, G, H = k.shape[0], k.shape[1], q.shape[1]
        k = torch.cat([k, k.new_zeros(B, G, 1, k.shape[-1])], dim=2)
        v = torch.cat([v, v.new_zeros(B, G, 1, v.shape[-1])], dim=2)
        mask = mask.expand(mask.shape[0] if mask.dim() == 4 else 1, H, T, S)
        sink = sinks.to(q.dtype).view(1, H, 1, 1).expand(mask.shape[0], H, T, 1)
        mask = torch.cat([mask, sink], dim=-1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
